"""The API transport on the Docker host: a tunnel that needs no UDP.

When UDP from this machine does not reach the tunnel Service (private nodes, a firewall),
cargo sends its WireGuard datagrams to a relay of this process, bound to the connection
network's gateway (the Docker host's own address on it). The relay frames them into one
port-forward to stowaway's relay port through the Kubernetes API server — with the
user's own kubeconfig, exactly the access kubectl has — and reconnects when the
port-forward breaks. Every ``udp_retry_period`` it probes the tunnel Service's UDP probe
port; when that answers, cargo goes back to UDP, and the relay ends once a handshake over
UDP is seen.

``carry`` runs in any task group: the attached ``up`` runs it in its own; ``up --detach``
leaves it to a detached ``gefyra-async transport`` process (``spawn_detached``).
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import structlog

from gefyra_async.adapters import containers as docker
from gefyra_async.adapters.datagram_relay import udp_to_stream
from gefyra_async.adapters.image_context import cache_dir
from gefyra_async.adapters.kube_apply import KubeRequestError
from gefyra_async.adapters.kube_objects import (
    load_balancer_address,
    ready_pod_with_labels,
    service_node_port,
)
from gefyra_async.adapters.portforward import PortForwardError, open_port_forward
from gefyra_async.api.context import Context, UserError
from gefyra_async.core import framing, names, transport

log = structlog.get_logger(__name__)

RECONNECT_MAX = 10.0  # seconds: the longest wait between two port-forward attempts


async def cargo_peer(ctx: Context, name: str) -> dict[str, Any] | None:
    """Cargo's WireGuard peer (stowaway) as cargo reports it; None without a cargo."""
    try:
        code, output = await docker.exec_in(
            ctx.docker, names.cargo_name(name), ["python3", "-m", "gefyra_async.cargo", "stats"]
        )
    except docker.ContainerError:
        return None
    if code != 0 or not output.strip():
        return None
    peers: list[dict[str, Any]] = json.loads(output.strip().splitlines()[-1])
    return peers[0] if peers else None


async def use_endpoint(ctx: Context, name: str, endpoint: str) -> None:
    """Point cargo's tunnel at ENDPOINT (host:port, or ``default``: the tunnel Service)."""
    try:
        code, output = await docker.exec_in(
            ctx.docker,
            names.cargo_name(name),
            ["python3", "-m", "gefyra_async.cargo", "endpoint", endpoint],
        )
    except docker.ContainerError as exc:
        raise UserError(f"cargo of connection {name} is not running: {exc}") from exc
    if code != 0:
        raise UserError(f"cargo of connection {name} refused endpoint {endpoint}: {output.strip()}")


async def wait_handshake(ctx: Context, name: str, *, after: float, within: float) -> bool:
    """Whether cargo completes a WireGuard handshake later than AFTER (unix time) within
    WITHIN seconds of its WireGuard device answering (a cargo just started gets up to
    ``connect_timeout`` to bring the device up first)."""
    with anyio.move_on_after(ctx.settings.connect_timeout):
        while await cargo_peer(ctx, name) is None:  # noqa: ASYNC110 - polls Docker
            await anyio.sleep(0.2)
    with anyio.move_on_after(within):
        while True:
            peer = await cargo_peer(ctx, name)
            if peer and (peer.get("lastHandshake") or 0) > after:
                return True
            await anyio.sleep(0.3)
    return False


async def udp_answers_at_cargo(ctx: Context, name: str, target: tuple[str, int]) -> bool:
    """Whether stowaway's probe port answers UDP from cargo — where the tunnel's datagrams
    leave, which may be another path than this process's own."""
    try:
        code, _ = await docker.exec_in(
            ctx.docker,
            names.cargo_name(name),
            [
                "python3",
                "-m",
                "gefyra_async.cargo",
                "probe",
                transport.format_endpoint(*target),
            ],
        )
    except docker.ContainerError:
        return False
    return code == 0


async def relay_address(ctx: Context, network: str) -> str:
    """The Docker host's address on the connection's network: where cargo reaches us."""
    data = await docker.network(ctx.docker, network)
    if data is None:
        raise UserError(f"the connection's Docker network {network} is gone; run `up` again")
    gateway = docker.network_gateway(data)
    if gateway is None:
        subnet = docker.network_subnet(data)
        if subnet is None:
            raise UserError(f"the Docker network {network} has no IPv4 subnet")
        gateway = str(next(ipaddress.ip_network(subnet).hosts()))
    return gateway


async def probe_target(ctx: Context, endpoint: str) -> tuple[str, int] | None:
    """Where stowaway answers UDP probes, seen from here: the tunnel endpoint's host with
    the probe port's node port (NodePort), or the load balancer's probe port."""
    s = ctx.settings
    host, _ = transport.parse_endpoint(endpoint)
    try:
        if s.tunnel_service_type == "LoadBalancer":
            address = await load_balancer_address(
                ctx.api, s.namespace, names.STOWAWAY_TUNNEL_SERVICE
            )
            return (address, names.PROBE_PORT) if address else None
        port = await service_node_port(ctx.api, s.namespace, names.STOWAWAY_TUNNEL_SERVICE, "probe")
    except KubeRequestError as exc:
        log.info("cannot read the tunnel Service; UDP is not probed", error=str(exc))
        return None
    return (host, port) if port else None


async def _relay_forever(
    ctx: Context,
    listen: tuple[str, int],
    *,
    task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Relay LISTEN ↔ a port-forward to stowaway's relay port; reconnect when it breaks.
    Reports the bound UDP port once the first port-forward carries."""
    s = ctx.settings
    status: anyio.abc.TaskStatus[int] | None = task_status
    host, port = listen
    delay = s.backoff_initial
    while True:
        started = time.monotonic()
        try:
            pod = await ready_pod_with_labels(ctx.api, s.namespace, names.labels(names.STOWAWAY))
            if pod is None:
                raise PortForwardError(f"no Ready stowaway pod in namespace {s.namespace}")
            async with open_port_forward(
                ctx.api.configuration, namespace=s.namespace, pod=pod, port=names.RELAY_PORT
            ) as stream:
                log.info("api transport: port-forward open", pod=pod, listen=f"{host}:{port}")
                if status is not None:
                    async with anyio.create_task_group() as tg:
                        port = await tg.start(
                            partial(udp_to_stream, stream=stream, listen=(host, port))
                        )
                        status.started(port)
                        status = None
                else:
                    await udp_to_stream(stream=stream, listen=(host, port))
            log.info("api transport: port-forward ended; reconnecting")
        except (PortForwardError, framing.FramingError, KubeRequestError, OSError) as exc:
            log.warning("api transport: port-forward failed; retrying", error=str(exc))
        if time.monotonic() - started > s.backoff_reset_after:
            delay = s.backoff_initial
        await anyio.sleep(delay)
        delay = min(delay * 2, RECONNECT_MAX)


async def carry(
    ctx: Context,
    name: str,
    endpoint: str,
    *,
    task_status: anyio.abc.TaskStatus[str] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Carry connection NAME's tunnel through the API server. Reports the relay's address
    once cargo uses it; returns when UDP to ENDPOINT works again (transport ``auto``) or
    when the connection is gone; with transport ``api`` it never goes back to UDP."""
    s = ctx.settings
    network = names.network_name(name)
    host = await relay_address(ctx, network)
    async with anyio.create_task_group() as tg:
        port = await tg.start(partial(_relay_forever, ctx, (host, 0)))
        relay = transport.format_endpoint(host, port)
        await use_endpoint(ctx, name, relay)
        log.info("api transport carries the tunnel", connection=name, relay=relay)
        task_status.started(relay)
        while True:
            await anyio.sleep(s.udp_retry_period)
            if await docker.inspect(ctx.docker, names.cargo_name(name)) is None:
                log.info("cargo is gone; the api transport ends", connection=name)
                break
            if s.transport == "api":
                continue
            target = await probe_target(ctx, endpoint)
            if target is None or not await udp_answers_at_cargo(ctx, name, target):
                continue
            log.info("udp answers again; trying it", connection=name, endpoint=endpoint)
            since = time.time()
            await use_endpoint(ctx, name, "default")
            if await wait_handshake(ctx, name, after=since, within=s.udp_handshake_timeout):
                log.info("back on udp", connection=name)
                break
            await use_endpoint(ctx, name, relay)
        tg.cancel_scope.cancel()


# ---- the detached transport process of `up --detach` ----------------------------------


def state_dir() -> Path:
    return cache_dir() / "run"


def _pid_file(name: str) -> Path:
    return state_dir() / f"transport-{name}.pid"


def _our_process(pid: int, name: str) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"gefyra_async.cli" in cmdline and b"transport" in cmdline and name.encode() in cmdline


def detached_pid(name: str) -> int | None:
    """The pid of connection NAME's detached transport process, if one runs."""
    try:
        pid = int(_pid_file(name).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if _our_process(pid, name) else None


def stop_detached(name: str) -> bool:
    """End NAME's detached transport process (by its pid file, checked); True if it ran."""
    pid = detached_pid(name)
    _pid_file(name).unlink(missing_ok=True)
    if pid is None:
        return False
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    return True


def write_pid(name: str) -> None:
    state_dir().mkdir(parents=True, exist_ok=True)
    _pid_file(name).write_text(f"{os.getpid()}\n")


def spawn_detached(name: str, global_args: Sequence[str], choice: str) -> int:
    """Start ``gefyra-async transport --name NAME`` in its own session; its pid. CHOICE is
    the transport setting it keeps (``api``: never back to UDP). Output goes to
    ``<cache>/run/transport-NAME.log``."""
    stop_detached(name)
    state_dir().mkdir(parents=True, exist_ok=True)
    log_path = state_dir() / f"transport-{name}.log"
    with log_path.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "gefyra_async.cli", *global_args, "transport", "--name", name],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,
            env={**os.environ, "GEFYRA_ASYNC_TRANSPORT": choice},
        )
    return process.pid
