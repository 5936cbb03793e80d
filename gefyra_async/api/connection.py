"""Connections: a developer machine joined to the cluster through one WireGuard tunnel.

``up`` makes, in order: the cluster side (if missing), a Docker network for the
connection, the Client object (public key + the network's subnet), and cargo — the
WireGuard client end, which holds the private key. It returns once stowaway has seen a
handshake. Whatever ``up`` made before a failure it removes again. ``down`` removes a
connection's containers, network and Client, and the cluster side with the last one.

Local state lives only in Docker: cargo's labels and environment. A second ``up`` of a
connection whose cargo runs adopts it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import anyio
import structlog

from gefyra_async.adapters import containers as docker
from gefyra_async.adapters.kube_objects import (
    Bridges,
    Clients,
    NodesForbiddenError,
    load_balancer_address,
    namespace_exists,
    ready_node_address,
)
from gefyra_async.adapters.wgkeys import KeyPair
from gefyra_async.api import images, install
from gefyra_async.api import transport as transport_api
from gefyra_async.api.context import Context, UserError
from gefyra_async.core import manifests, names, transport
from gefyra_async.core.conditions import condition

log = structlog.get_logger(__name__)


network_name = names.network_name
cargo_name = names.cargo_name


def connection_label(connection: str) -> str:
    return f"{names.CONNECTION}={connection}"


@dataclass(frozen=True)
class Connection:
    name: str
    network: str
    subnet: str
    cargo: str
    cargo_ip: str
    tunnel_address: str
    endpoint: str
    cluster_dns: str
    namespace: str  # the kube context's namespace, default for `run`
    cargo_image: str  # also the image of the apps' network holders
    transport: str = ""  # "udp" or "api" as `up` chose it; empty when adopted


def validate_name(name: str) -> None:
    ok = name and len(name) <= 40 and all(c.isalnum() or c == "-" for c in name)
    if not ok or not name[0].isalnum() or name != name.lower():
        raise UserError(
            f"connection name {name!r} is not valid; use lower-case letters, digits and '-'"
        )


async def default_endpoint(ctx: Context) -> str:
    """NodePort: a Ready node's ExternalIP, else its InternalIP, with the node port (the
    API server's host when the kubeconfig may not list nodes). LoadBalancer: the load
    balancer's address, once it has one."""
    if ctx.settings.tunnel_service_type == "LoadBalancer":

        async def address() -> dict[str, Any] | None:
            found = await load_balancer_address(
                ctx.api, ctx.settings.namespace, names.STOWAWAY_TUNNEL_SERVICE
            )
            return {"address": found} if found else None

        found = await _poll(address, ctx.settings.connect_timeout)
        if found is None:
            raise UserError(
                "the tunnel's LoadBalancer Service got no address in time; "
                "pass --endpoint host:port or use --service-type NodePort"
            )
        return f"{found['address']}:{names.STOWAWAY_LISTEN_PORT}"
    try:
        host = await ready_node_address(ctx.api)
    except NodesForbiddenError:
        host = None
        log.info("may not list nodes; trying the API server's host as the tunnel endpoint")
    if host is None:
        host = urlparse(ctx.server).hostname or "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"{host}:{ctx.settings.tunnel_port}"


async def _poll(
    check: Callable[[], Awaitable[dict[str, Any] | None]], within: float
) -> dict[str, Any] | None:
    with anyio.move_on_after(within):
        while (result := await check()) is None:  # noqa: ASYNC110 - polls the API
            await anyio.sleep(0.5)
        return result
    return None


async def _adopt(ctx: Context, name: str) -> Connection | None:
    info = await docker.inspect(ctx.docker, cargo_name(name))
    if info is None or not info.running:
        return None
    labels = info.labels
    return Connection(
        name=name,
        network=network_name(name),
        subnet=labels.get("gefyra-async.dev/subnet", ""),
        cargo=info.name,
        cargo_ip=info.networks.get(network_name(name), ""),
        tunnel_address=labels.get("gefyra-async.dev/tunnel-address", ""),
        endpoint=labels.get("gefyra-async.dev/endpoint", ""),
        cluster_dns=labels.get("gefyra-async.dev/cluster-dns", ""),
        namespace=ctx.namespace,
        cargo_image=info.image,
    )


# Starts the API transport of connection NAME for tunnel ENDPOINT and returns the relay's
# address once cargo uses it (transport.carry in a task group, or a detached process).
ApiTransportStarter = Callable[[str, str], Awaitable[str]]


async def get_connection(ctx: Context, name: str) -> Connection | None:
    """Connection NAME as its running cargo describes it; None when it has none."""
    return await _adopt(ctx, name)


async def up(
    ctx: Context,
    name: str = "default",
    *,
    endpoint: str | None = None,
    handshake_within: float | None = None,
    upgrade: bool = False,
    progress: images.Progress | None = None,
    api_transport: ApiTransportStarter | None = None,
) -> Connection:
    """Connect this Docker host to the cluster as connection NAME (idempotent). UPGRADE:
    replace a cluster side of another version; PROGRESS: told of long steps (pulls).

    The tunnel goes over UDP when a handshake completes within ``udp_handshake_timeout``
    (settings.transport ``auto``), else — or with transport ``api`` — through the API
    server, started by API_TRANSPORT (see api/transport.py)."""
    validate_name(name)
    choice = ctx.settings.transport
    if choice not in ("auto", "udp", "api"):
        raise UserError(f"transport {choice!r} is not one of auto, udp, api")
    if endpoint is not None:
        try:
            transport.parse_endpoint(endpoint)
        except transport.EndpointError as exc:
            raise UserError(f"--endpoint: {exc}") from exc
    adopted = await _adopt(ctx, name)
    clients = Clients(ctx.api, ctx.settings)
    if adopted is not None and await clients.get(name) is not None:
        log.info("connection already up", connection=name)
        return adopted
    cargo_image = install.image(ctx.settings, "cargo")
    await images.ensure(ctx.docker, cargo_image, "missing", progress)
    async with AsyncExitStack() as undo:
        await install.ensure_installed(ctx, upgrade=upgrade)
        endpoint = endpoint or await default_endpoint(ctx)
        labels = names.labels("connection", **{names.CONNECTION: name})
        net = await docker.network(ctx.docker, network_name(name))
        if net is None:
            subnet = await docker.create_network(ctx.docker, network_name(name), labels)
            undo.push_async_callback(docker.remove_network, ctx.docker, network_name(name))
        else:
            subnet = docker.network_subnet(net) or ""
        await docker.remove_container(ctx.docker, cargo_name(name))  # a stopped leftover

        keys = KeyPair.generate()
        await clients.delete(name)
        await clients.create(manifests.client(ctx.settings, name, keys.public, subnet))
        undo.push_async_callback(clients.delete, name)

        async def ready() -> dict[str, Any] | None:
            obj = await clients.get(name)
            cond = condition(obj or {}, "Ready")
            if obj and cond and cond.get("status") == "True" and obj["status"].get("tunnelAddress"):
                return obj
            if obj and cond and cond.get("status") == "False":
                raise UserError(f"stowaway refused connection {name}: {cond.get('message')}")
            return None

        client = await _poll(ready, ctx.settings.connect_timeout)
        if client is None:
            raise UserError(
                f"stowaway did not accept connection {name} within "
                f"{ctx.settings.connect_timeout:.0f}s; "
                f"see `kubectl -n {ctx.settings.namespace} logs deploy/stowaway`"
            )
        status = client["status"]
        cargo_ip = str(list(ipaddress.ip_network(subnet).hosts())[-1])
        routes = [
            r
            for r in status["routes"]
            if not ipaddress.ip_network(r).overlaps(ipaddress.ip_network(subnet))
        ]
        cargo_labels = {
            **labels,
            names.ROLE: "cargo",
            "gefyra-async.dev/subnet": subnet,
            "gefyra-async.dev/tunnel-address": status["tunnelAddress"],
            "gefyra-async.dev/endpoint": endpoint,
            "gefyra-async.dev/cluster-dns": status.get("clusterDNS") or "",
        }
        config = {
            "Image": cargo_image,
            "Labels": cargo_labels,
            "Env": [
                f"GEFYRA_ASYNC_CONNECTION={name}",
                f"CARGO_IP={cargo_ip}",
                f"CARGO_PRIVATE_KEY={keys.private}",
                f"CARGO_ADDRESS={status['tunnelAddress']}",
                f"CARGO_SERVER_KEY={status['serverPublicKey']}",
                f"CARGO_ENDPOINT={endpoint}",
                f"CARGO_ROUTES={','.join(routes)}",
                f"CARGO_DNS={status.get('clusterDNS') or ''}",
                f"CARGO_CONTROL={status['serverAddress']}:{names.CONTROL_PORT}",
                f"GEFYRA_ASYNC_TUNNEL_MTU={status.get('mtu') or ctx.settings.tunnel_mtu}",
            ],
            "HostConfig": {
                # Not --privileged: it asks for every capability, and a Docker host whose
                # root lacks some (as in many CI sandboxes) cannot start such a container.
                # NET_ADMIN: WireGuard, routes, iptables; SYS_ADMIN + SYS_PTRACE: entering
                # the app holders' network namespaces through /proc/<pid>/ns/net.
                "CapAdd": ["NET_ADMIN", "SYS_ADMIN", "SYS_PTRACE"],
                "Devices": [
                    {
                        "PathOnHost": "/dev/net/tun",
                        "PathInContainer": "/dev/net/tun",
                        "CgroupPermissions": "rwm",
                    }
                ],
                "PidMode": "host",
                "NetworkMode": network_name(name),
                "Binds": ["/var/run/docker.sock:/var/run/docker.sock"],
                "Sysctls": {"net.ipv4.ip_forward": "1"},
                "RestartPolicy": {"Name": "unless-stopped"},
            },
            "NetworkingConfig": {
                "EndpointsConfig": {network_name(name): {"IPAMConfig": {"IPv4Address": cargo_ip}}}
            },
        }
        try:
            await docker.create_and_start(ctx.docker, cargo_name(name), config)
        except docker.ContainerError as exc:
            raise UserError(str(exc)) from None
        undo.push_async_callback(docker.remove_container, ctx.docker, cargo_name(name))

        carried = "udp"
        if choice == "api" and api_transport is None:
            raise UserError(
                "the API transport needs a process that keeps running: use `gefyra-async up`, "
                "or pass api_transport"
            )
        # Without a way to run the API transport, auto means UDP only (and its usual wait).
        if choice == "api" or (
            choice == "auto"
            and api_transport is not None
            and not await transport_api.wait_handshake(
                ctx, name, after=0, within=ctx.settings.udp_handshake_timeout
            )
        ):
            assert api_transport is not None
            if choice == "auto" and progress is not None:
                progress(
                    f"no WireGuard handshake over UDP with {endpoint} within "
                    f"{ctx.settings.udp_handshake_timeout:.0f}s: the tunnel goes through the "
                    "Kubernetes API server (UDP is tried again every "
                    f"{ctx.settings.udp_retry_period:.0f}s)"
                )
            await api_transport(name, endpoint)
            carried = "api"

        async def connected() -> dict[str, Any] | None:
            obj = await clients.get(name)
            cond = condition(obj or {}, "Connected")
            return obj if cond and cond.get("status") == "True" else None

        handshake_within = handshake_within or ctx.settings.connect_timeout
        if await _poll(connected, handshake_within) is None:
            hint = (
                "check that the API server lets you port-forward to stowaway's pod"
                if carried == "api"
                else f"check that UDP reaches {endpoint} (set it with --endpoint), or use "
                "--transport api"
            )
            raise UserError(
                f"the tunnel of connection {name} did not come up: stowaway saw no handshake "
                f"from cargo within {handshake_within:.0f}s; {hint}"
            )
        undo.pop_all()
    log.info(
        "connected",
        connection=name,
        address=status["tunnelAddress"],
        endpoint=endpoint,
        transport=carried,
    )
    return Connection(
        name=name,
        network=network_name(name),
        subnet=subnet,
        cargo=cargo_name(name),
        cargo_ip=cargo_ip,
        tunnel_address=status["tunnelAddress"],
        endpoint=endpoint,
        cluster_dns=status.get("clusterDNS") or "",
        namespace=ctx.namespace,
        cargo_image=cargo_image,
        transport=carried,
    )


async def list_connections(ctx: Context) -> list[dict[str, Any]]:
    """Every connection this Docker host has, with its tunnel state from the cluster."""
    found = []
    cargos = await docker.with_label(ctx.docker, f"{names.ROLE}=cargo", running_only=False)
    clients: dict[str, dict[str, Any]] = {}
    if await namespace_exists(ctx.api, ctx.settings.namespace):
        clients = {c["metadata"]["name"]: c for c in await Clients(ctx.api, ctx.settings).list()}
    for cargo in cargos:
        name = cargo.labels.get(names.CONNECTION, "")
        status = (clients.get(name) or {}).get("status") or {}
        connected = condition(clients.get(name) or {}, "Connected")
        peer = await transport_api.cargo_peer(ctx, name) if cargo.running else None
        configured = cargo.labels.get("gefyra-async.dev/endpoint")
        carried = None
        if peer is not None:
            carried = "udp" if peer.get("endpoint") in (None, configured) else "api"
        found.append(
            {
                "name": name,
                "cargo": cargo.name,
                "cargoRunning": cargo.running,
                "network": network_name(name),
                "tunnelAddress": status.get("tunnelAddress"),
                "endpoint": cargo.labels.get("gefyra-async.dev/endpoint"),
                "connected": (connected or {}).get("status") == "True",
                "lastHandshake": status.get("lastHandshake"),
                "transport": carried,
                "transportProcess": transport_api.detached_pid(name),
            }
        )
    return found


async def down(ctx: Context, name: str = "default", *, everything: bool = False) -> list[str]:
    """Remove connection NAME (or, with EVERYTHING, every connection and the cluster side).

    Returns what was removed. The cluster side goes with the last connection.
    """
    removed: list[str] = []
    targets = [name]
    if everything:
        cargos = await docker.with_label(ctx.docker, f"{names.ROLE}=cargo", running_only=False)
        targets = sorted({c.labels.get(names.CONNECTION, "") for c in cargos} | {name})
    for target in targets:
        if transport_api.stop_detached(target):
            removed.append(f"transport-process/{target}")
        if await namespace_exists(ctx.api, ctx.settings.namespace):
            # Bridges first: the pods' original apps serve again before anything goes.
            mine = [
                b["metadata"]["name"]
                for b in await Bridges(ctx.api, ctx.settings).list()
                if (b.get("spec") or {}).get("client") == target
            ]
            if mine:
                removed += [f"bridge/{b}" for b in await install.remove_bridges(ctx, mine)]
        for info in await docker.with_label(
            ctx.docker, connection_label(target), running_only=False
        ):
            # Apps first (they live in their holders' namespaces), then holders and cargo.
            if info.labels.get(names.ROLE) not in (names.ROLE_HOLDER, "cargo"):
                await docker.remove_container(ctx.docker, info.id)
                removed.append(f"container/{info.name}")
        for info in await docker.with_label(
            ctx.docker, connection_label(target), running_only=False
        ):
            await docker.remove_container(ctx.docker, info.id)
            removed.append(f"container/{info.name}")
        if await docker.remove_network(ctx.docker, network_name(target)):
            removed.append(f"network/{network_name(target)}")
        if await namespace_exists(ctx.api, ctx.settings.namespace) and await Clients(
            ctx.api, ctx.settings
        ).delete(target):
            removed.append(f"client/{target}")
    installed = await namespace_exists(ctx.api, ctx.settings.namespace)
    remaining = await Clients(ctx.api, ctx.settings).list() if installed else []
    if (everything or not remaining) and await install.uninstall(ctx):
        removed.append(f"cluster-side/{ctx.settings.namespace}")
    return removed


@asynccontextmanager
async def connected(
    ctx: Context, name: str = "default", *, endpoint: str | None = None, keep: bool = False
) -> AsyncIterator[Connection]:
    """``up`` on entry, ``down`` on exit (unless KEEP)."""
    conn = await up(ctx, name, endpoint=endpoint)
    try:
        yield conn
    finally:
        if not keep:
            with anyio.CancelScope(shield=True):
                await down(ctx, name)


async def traffic(ctx: Context, name: str) -> dict[str, int] | None:
    """Bytes through connection NAME's tunnel so far (cargo's WireGuard counters)."""
    peer = await transport_api.cargo_peer(ctx, name)
    if peer is None:
        return None
    return {"rxBytes": int(peer["rxBytes"]), "txBytes": int(peer["txBytes"])}


async def apps(ctx: Context, name: str) -> list[str]:
    """Names of the app containers of connection NAME."""
    found = await docker.with_label(ctx.docker, connection_label(name), running_only=False)
    return sorted(c.name for c in found if c.labels.get(names.ROLE) == "app")
