"""Loading a kubeconfig into a checked Kubernetes API client, with clear errors."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client import ApiClient
from kubernetes_asyncio.config.config_exception import ConfigException


class KubeConfigError(RuntimeError):
    """The kubeconfig is missing, malformed or lacks the asked context."""


class ClusterUnavailableError(RuntimeError):
    """The API server named by the kubeconfig does not answer."""


@dataclass
class KubeContext:
    api: ApiClient
    namespace: str
    server: str


def kubeconfig_path(explicit: str | None) -> Path:
    if explicit:
        return Path(explicit).expanduser()
    env = os.environ.get("KUBECONFIG")
    if env:
        candidates = [Path(p).expanduser() for p in env.split(os.pathsep) if p]
        return next((p for p in candidates if p.exists()), candidates[0])
    return Path("~/.kube/config").expanduser()


def _read(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise KubeConfigError(
            f"the kubeconfig {path} does not exist; pass --kubeconfig or set KUBECONFIG"
        )
    try:
        data = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, OSError, UnicodeDecodeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise KubeConfigError(
            f"the kubeconfig {path} is not valid YAML ({first}); fix or replace it"
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("contexts"), list):
        raise KubeConfigError(f"the kubeconfig {path} has no contexts; it is not a kubeconfig file")
    return data


async def load_api_client(
    kubeconfig: str | None, context: str | None, *, check_timeout: float = 5.0
) -> KubeContext:
    path = kubeconfig_path(kubeconfig)
    data = _read(path)
    contexts = {
        c.get("name"): c.get("context") or {} for c in data["contexts"] if isinstance(c, dict)
    }
    name = context or data.get("current-context")
    if name not in contexts:
        known = ", ".join(sorted(str(n) for n in contexts)) or "none"
        raise KubeConfigError(
            f"the context {name!r} is not in {path} (it has: {known}); pass --context"
        )
    configuration = client.Configuration()
    try:
        await config.load_kube_config(
            config_file=str(path), context=name, client_configuration=configuration
        )
    except (ConfigException, ValueError, KeyError, TypeError) as exc:
        raise KubeConfigError(f"the kubeconfig {path} cannot be used ({exc}); fix it") from None
    api = ApiClient(configuration)
    server = str(configuration.host)
    try:
        await client.VersionApi(api).get_code(_request_timeout=check_timeout)
    except (aiohttp.ClientError, OSError, TimeoutError, client.ApiException) as exc:
        await api.close()
        reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or str(exc)
        raise ClusterUnavailableError(
            f"the Kubernetes API server at {server} is not reachable "
            f"({reason or type(exc).__name__}); check that the cluster runs and that "
            "--kubeconfig/--context point to it"
        ) from None
    return KubeContext(
        api=api, namespace=contexts[name].get("namespace") or "default", server=server
    )
