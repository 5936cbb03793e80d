"""Access to the local platform (tests/platform/platform.sh) for the e2e tests.

Everything here talks to the real Docker engine and the real cluster; nothing is faked.
Waiting is done by polling the API with a deadline, and every timeout says what it saw.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import anyio
from kubernetes_asyncio import client

REPO = Path(__file__).resolve().parents[2]
PLATFORM_SH = REPO / "tests" / "platform" / "platform.sh"
START_HINT = "start it (as root) with: bash tests/platform/platform.sh up"


T = TypeVar("T")


class PlatformError(RuntimeError):
    """The local platform is missing or misbehaves; the message says what to do."""


@dataclass(frozen=True)
class Platform:
    """What `platform.sh env` reports: paths, addresses and image names."""

    kubeconfig: Path
    kubectl: Path
    k8s_version: str
    node_name: str
    node_ip: str
    cluster_dns: str
    service_cidr: str
    base_image: str
    demo_image: str
    image_prefix: str
    guard_comment: str
    registry: str  # where the product images are: what GEFYRA_ASYNC_REGISTRY names
    wireguard_go: str  # the platform's static wireguard-go build

    @classmethod
    def discover(cls) -> Platform:
        try:
            out = subprocess.run(
                ["bash", str(PLATFORM_SH), "env"],
                check=True,
                capture_output=True,
                text=True,
                timeout=30,
            ).stdout
        except (OSError, subprocess.SubprocessError) as exc:
            raise PlatformError(f"cannot read the platform settings ({exc}); {START_HINT}") from exc
        env = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
        platform = cls(
            kubeconfig=Path(env["KUBECONFIG"]),
            kubectl=Path(env["KUBECTL"]),
            k8s_version=env["K8S_VERSION"],
            node_name=env["NODE_NAME"],
            node_ip=env["NODE_IP"],
            cluster_dns=env["CLUSTER_DNS"],
            service_cidr=env["SERVICE_CIDR"],
            base_image=env["BASE_IMAGE"],
            demo_image=env["DEMO_IMAGE"],
            image_prefix=env["IMAGE_PREFIX"],
            guard_comment=env["GUARD_COMMENT"],
            registry=env["PRODUCT_REGISTRY"],
            wireguard_go=env["WIREGUARD_GO"],
        )
        platform.check_running()
        return platform

    def check_running(self) -> None:
        if not self.kubeconfig.is_file() or not self.kubectl.is_file():
            raise PlatformError(f"the local platform has not been set up; {START_HINT}")
        probe = subprocess.run(
            [str(self.kubectl), f"--kubeconfig={self.kubeconfig}", "get", "--raw", "/readyz"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if probe.returncode != 0:
            raise PlatformError(
                f"the platform's API server does not answer ({probe.stderr.strip()}); {START_HINT}"
            )

    async def kubectl_run(
        self, *args: str, check: bool = True, within: float = 60
    ) -> subprocess.CompletedProcess[bytes]:
        """Run kubectl with the admin kubeconfig; raise with its stderr when it fails."""
        cmd = [str(self.kubectl), f"--kubeconfig={self.kubeconfig}", *args]
        with anyio.fail_after(within):
            result = await anyio.run_process(cmd, check=False)
        if check and result.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} exited {result.returncode}: "
                f"{result.stderr.decode(errors='replace').strip()}"
            )
        return result


class ImageLoader:
    """Builds project images with Docker and loads them into the cluster's containerd."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform

    def name(self, repo: str, tag: str | None = None) -> str:
        """A fully qualified, never-:latest name under the project's prefix."""
        return f"{self.platform.image_prefix}/{repo}:{tag or secrets.token_hex(4)}"

    async def build(self, context: Path, name: str) -> str:
        """docker build CONTEXT (ARG BASE = the base image) and load NAME into the cluster."""
        with anyio.fail_after(600):
            result = await anyio.run_process(
                ["bash", str(PLATFORM_SH), "build-image", str(context), name], check=False
            )
        if result.returncode != 0:
            raise PlatformError(
                f"building image {name} from {context} failed: "
                f"{result.stderr.decode(errors='replace').strip()[-2000:]}"
            )
        return name

    async def remove(self, name: str) -> None:
        """Remove a project image from the cluster's containerd and from Docker."""
        result = await anyio.run_process(
            ["bash", str(PLATFORM_SH), "remove-image", name], check=False
        )
        if result.returncode != 0:
            raise PlatformError(
                f"removing image {name} failed: {result.stderr.decode(errors='replace').strip()}"
            )


def unique_name(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


def is_root() -> bool:
    return os.geteuid() == 0


async def poll(
    check: Callable[[], Awaitable[T | None]],
    *,
    within: float,
    what: str,
    interval: float = 0.5,
) -> T:
    """Call CHECK until it returns something other than None; fail after WITHIN seconds.

    Polling is deliberate: the state lives in another system (the API server, Docker).
    """
    with anyio.move_on_after(within):
        while (result := await check()) is None:  # noqa: ASYNC110
            await anyio.sleep(interval)
        return result
    raise AssertionError(f"{what}: not so after {within}s")


# ---- Kubernetes helpers -------------------------------------------------------------


async def pod_summary(core: client.CoreV1Api, namespace: str, name: str) -> str:
    """Phase, container states and recent events of a pod: the text of a timeout."""
    try:
        pod = await core.read_namespaced_pod(name, namespace)
    except client.ApiException as exc:
        return f"pod {namespace}/{name}: {exc.reason}"
    states = [
        f"{s.name}: ready={s.ready} restarts={s.restart_count} state={s.state.to_dict()}"
        for s in [
            *(pod.status.container_statuses or []),
            *(pod.status.ephemeral_container_statuses or []),
        ]
    ]
    events = await core.list_namespaced_event(
        namespace, field_selector=f"involvedObject.name={name}"
    )
    lines = [f"{e.reason}: {e.message}" for e in events.items[-8:]]
    return f"pod {namespace}/{name} phase={pod.status.phase}; " + "; ".join(states + lines)


async def wait_pod(
    core: client.CoreV1Api, namespace: str, name: str, *, ready: bool = True, within: float = 120
) -> Any:
    """Wait until the pod is Ready (ready=True) or has finished (ready=False)."""

    async def check() -> Any:
        pod = await core.read_namespaced_pod(name, namespace)
        if ready:
            conditions = {c.type: c.status for c in pod.status.conditions or []}
            return pod if conditions.get("Ready") == "True" else None
        return pod if pod.status.phase in ("Succeeded", "Failed") else None

    try:
        return await poll(check, within=within, what=f"pod {namespace}/{name}")
    except AssertionError:
        state = "Ready" if ready else "finished"
        summary = await pod_summary(core, namespace, name)
        raise AssertionError(f"pod not {state} after {within}s: {summary}") from None


async def run_pod(
    core: client.CoreV1Api,
    namespace: str,
    image: str,
    command: Sequence[str],
    *,
    name: str | None = None,
    within: float = 120,
) -> tuple[str, str]:
    """Run a one-shot pod to completion; return its phase and its log."""
    name = name or unique_name("run")
    body: Any = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {
                    "name": "main",
                    "image": image,
                    "imagePullPolicy": "Never",
                    "command": list(command),
                }
            ],
        },
    }
    await core.create_namespaced_pod(namespace, body)
    pod = await wait_pod(core, namespace, name, ready=False, within=within)
    log = await core.read_namespaced_pod_log(name, namespace)
    return pod.status.phase, log


def demo_pod(name: str, image: str, labels: dict[str, str] | None = None) -> Any:
    """A bare pod running the demo echo server (HTTP 8080, TCP 9000, UDP 9001)."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels or {"app": name}},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {
                    "name": "echo",
                    "image": image,
                    "imagePullPolicy": "Never",
                    "ports": [
                        {"name": "http", "containerPort": 8080},
                        {"name": "tcp-echo", "containerPort": 9000},
                        {"name": "udp-echo", "containerPort": 9001, "protocol": "UDP"},
                    ],
                    "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1},
                }
            ],
        },
    }


def fetch_script(*urls: str) -> list[str]:
    """A python3 command that GETs each URL and prints one JSON line per answer."""
    code = (
        "import json, sys, urllib.request as u\n"
        "for url in sys.argv[1:]:\n"
        "    body = u.urlopen(url, timeout=10).read().decode()\n"
        "    print(json.dumps({'url': url, 'answer': json.loads(body)}), flush=True)\n"
    )
    return ["python3", "-c", code, *urls]


def parse_json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]
