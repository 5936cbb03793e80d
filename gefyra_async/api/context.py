"""What every API call needs: a Kubernetes client, a Docker client and the settings."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from gefyra_async.adapters.docker_engine import DockerUnavailableError, open_docker
from gefyra_async.adapters.kube_config import (
    ClusterUnavailableError,
    KubeConfigError,
    load_api_client,
)
from gefyra_async.core.settings import Settings


class UserError(RuntimeError):
    """Something the user can fix; the message is one sentence saying what and how."""


@dataclass
class Context:
    api: Any  # kubernetes_asyncio ApiClient, only handed to adapters
    namespace: str  # the kube context's namespace (kubectl convention)
    server: str  # the API server URL
    docker: Any  # aiodocker client, only handed to adapters
    settings: Settings


@asynccontextmanager
async def open_context(
    kubeconfig: str | None = None,
    context: str | None = None,
    settings: Settings | None = None,
) -> AsyncIterator[Context]:
    """Connect to the cluster and to Docker; every failure is a UserError."""
    try:
        kube = await load_api_client(kubeconfig, context)
    except (KubeConfigError, ClusterUnavailableError) as exc:
        raise UserError(str(exc)) from None
    try:
        try:
            docker = await open_docker()
        except DockerUnavailableError as exc:
            raise UserError(str(exc)) from None
        try:
            yield Context(
                api=kube.api,
                namespace=kube.namespace,
                server=kube.server,
                docker=docker,
                settings=settings or Settings.from_env(),
            )
        finally:
            await docker.close()
    finally:
        await kube.api.close()
