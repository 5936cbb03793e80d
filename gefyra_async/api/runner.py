"""``run``: a local container that behaves like a pod of a chosen namespace.

The app runs in the network namespace of a small holder container on the connection's
Docker network (the holder plays the pod's "pause" container). Cargo points the
holder's default route at itself *before* the app starts, so the app's very first
packet already goes through the tunnel, and a ``docker restart`` of the app keeps its
network. The holder's resolver is cargo's DNS forwarder, with the search list
``<ns>.svc.cluster.local svc.cluster.local cluster.local``; published ports are the
holder's too.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import anyio
import structlog

from gefyra_async.adapters import containers as docker
from gefyra_async.adapters.kube_objects import WorkloadError, exec_in_pod, ready_pod_of
from gefyra_async.api import images
from gefyra_async.api.connection import Connection, connection_label
from gefyra_async.api.context import Context, UserError
from gefyra_async.core import names

log = structlog.get_logger(__name__)

# Set by the pod's image or by Kubernetes for that pod; wrong for a local container.
ENV_NOT_COPIED = frozenset({"HOSTNAME", "HOME", "PATH", "TERM", "PWD", "SHLVL", "_"})


@dataclass
class RunSpec:
    image: str
    name: str
    namespace: str | None = None
    command: list[str] | None = None
    env: dict[str, str] = field(default_factory=dict)
    env_from: str | None = None  # kind/name[/container]
    volumes: list[str] = field(default_factory=list)  # src:dst[:ro]
    ports: list[str] = field(default_factory=list)  # [ip:]host:container
    auto_remove: bool = False
    pull: images.PullPolicy = "missing"


@dataclass(frozen=True)
class RunningContainer:
    id: str
    name: str
    holder: str
    namespace: str


def parse_ports(specs: list[str]) -> tuple[dict[str, object], dict[str, list[dict[str, str]]]]:
    exposed: dict[str, object] = {}
    bindings: dict[str, list[dict[str, str]]] = {}
    for spec in specs:
        parts = spec.split(":")
        if len(parts) == 2:
            host_ip, host_port, port = "", parts[0], parts[1]
        elif len(parts) == 3:
            host_ip, host_port, port = parts
        else:
            raise UserError(f"port {spec!r} is not [ip:]host:container")
        proto = "tcp"
        if "/" in port:
            port, proto = port.split("/", 1)
        if not (host_port.isdigit() and port.isdigit()):
            raise UserError(f"port {spec!r} is not [ip:]host:container with numeric ports")
        key = f"{port}/{proto}"
        exposed[key] = {}
        bindings.setdefault(key, []).append({"HostIp": host_ip, "HostPort": host_port})
    return exposed, bindings


async def env_from_workload(ctx: Context, namespace: str, ref: str) -> dict[str, str]:
    """The environment a ready pod of the workload KIND/NAME[/CONTAINER] runs with."""
    parts = ref.split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise UserError(f"--env-from {ref!r} is not kind/name[/container]")
    try:
        pod = await ready_pod_of(ctx.api, namespace, parts[0], parts[1])
    except WorkloadError as exc:
        raise UserError(f"--env-from {ref}: {exc}") from None
    containers = [c.name for c in pod.spec.containers]
    container = parts[2] if len(parts) == 3 else containers[0]
    if container not in containers:
        raise UserError(
            f"--env-from {ref}: pod {pod.metadata.name} has no container {container!r} "
            f"(it has {', '.join(containers)})"
        )
    output = await exec_in_pod(ctx.api, namespace, pod.metadata.name, container, ["env"])
    copied = {}
    for line in output.splitlines():
        key, sep, value = line.partition("=")
        if sep and key and key not in ENV_NOT_COPIED:
            copied[key] = value
    return copied


async def run(
    ctx: Context, conn: Connection, spec: RunSpec, progress: images.Progress | None = None
) -> RunningContainer:
    """Start SPEC's container in the cluster network of CONN; nothing is left on failure.
    SPEC's image is pulled as SPEC.pull says; PROGRESS is told how the pull goes."""
    namespace = spec.namespace or conn.namespace
    if await docker.inspect(ctx.docker, spec.name) is not None:
        raise UserError(
            f"a container named {spec.name!r} already exists; choose another --name or remove it"
        )
    await images.ensure(ctx.docker, spec.image, spec.pull, progress)
    env = dict(await env_from_workload(ctx, namespace, spec.env_from)) if spec.env_from else {}
    env.update(spec.env)
    exposed, bindings = parse_ports(spec.ports)
    labels = names.labels("app", **{names.CONNECTION: conn.name})
    holder_name = f"{spec.name}-netns"
    holder_config = {
        "Image": conn.cargo_image,
        "Cmd": ["sleep", "infinity"],
        "Labels": {**labels, names.ROLE: names.ROLE_HOLDER, names.APP: spec.name},
        "ExposedPorts": exposed,
        "HostConfig": {
            "NetworkMode": conn.network,
            "Dns": [conn.cargo_ip],
            "DnsSearch": [f"{namespace}.svc.cluster.local", "svc.cluster.local", "cluster.local"],
            "DnsOptions": ["ndots:5"],
            "PortBindings": bindings,
            "RestartPolicy": {"Name": "unless-stopped"},
        },
    }
    try:
        holder_id = await docker.create_and_start(ctx.docker, holder_name, holder_config)
    except docker.ContainerError as exc:
        raise UserError(str(exc)) from None
    try:
        code, output = await docker.exec_in(
            ctx.docker,
            conn.cargo,
            ["python3", "-m", "gefyra_async.cargo", "route", holder_id],
        )
        if code != 0:
            raise UserError(
                f"cargo could not route container {spec.name}: {output.strip()[-300:]}; "
                f"see `docker logs {conn.cargo}`"
            )
        app_config: dict[str, object] = {
            "Image": spec.image,
            "Env": [f"{k}={v}" for k, v in env.items()],
            "Labels": {
                **labels,
                names.ROLE: names.ROLE_APP,
                "gefyra-async.dev/namespace": namespace,
            },
            "HostConfig": {
                "NetworkMode": f"container:{holder_id}",
                "Binds": spec.volumes,
                "AutoRemove": spec.auto_remove,
            },
        }
        if spec.command:
            app_config["Cmd"] = spec.command
        try:
            app_id = await docker.create_and_start(ctx.docker, spec.name, app_config)
        except docker.ContainerError as exc:
            raise UserError(str(exc)) from None
    except BaseException:
        await docker.remove_container(ctx.docker, holder_id)
        raise
    log.info("running", container=spec.name, namespace=namespace, connection=conn.name)
    return RunningContainer(id=app_id, name=spec.name, holder=holder_name, namespace=namespace)


async def remove(ctx: Context, name: str) -> None:
    """Remove an app container and its holder."""
    await docker.remove_container(ctx.docker, name)
    await docker.remove_container(ctx.docker, f"{name}-netns")


@asynccontextmanager
async def running(ctx: Context, conn: Connection, spec: RunSpec) -> AsyncIterator[RunningContainer]:
    """``run`` on entry; the container and its holder are removed on exit."""
    container = await run(ctx, conn, spec)
    try:
        yield container
    finally:
        with anyio.CancelScope(shield=True):
            await remove(ctx, container.name)


__all__ = ["RunSpec", "RunningContainer", "connection_label", "remove", "run", "running"]
