"""The cargo agent: ``python3 -m gefyra_async.cargo`` in a connection's cargo container.

Actors: the tunnel (WireGuard client end), the DNS forwarder (cargo's address → cluster
DNS, only), the Docker event source, the route manager and the container reporter
(local container addresses → stowaway, for bridges). ``route CONTAINER`` applies a
container's default route at once and exits 0 when it is in place (used by ``run``);
``stats`` prints the tunnel's counters; ``endpoint HOST:PORT|default`` moves the tunnel
to another endpoint (the API transport's relay, or back to UDP); ``probe HOST:PORT`` tells
whether stowaway's UDP probe port answers from here.
Configuration comes from the environment the CLI set when it created cargo.
"""

from __future__ import annotations

import json
import os
import sys

import anyio
import structlog

from gefyra_async.actors.bus_monitor import BusMonitor
from gefyra_async.actors.docker_events import DockerEventsActor
from gefyra_async.actors.process import until_terminated
from gefyra_async.adapters.containers import docker_client, inspect
from gefyra_async.adapters.dns import Endpoint
from gefyra_async.adapters.udp_probe import udp_answers
from gefyra_async.adapters.wireguard import Uapi
from gefyra_async.cargo.dns import DnsForwarderActor
from gefyra_async.cargo.reporter import ContainerReporter
from gefyra_async.cargo.routes import RouteManager
from gefyra_async.cargo.tunnel import (
    INTERFACE,
    CargoTunnel,
    TunnelConfig,
    write_endpoint_override,
)
from gefyra_async.core import names, transport
from gefyra_async.core.actor import Actor, Backoff, Supervisor
from gefyra_async.core.bus import EventBus
from gefyra_async.core.logging import configure_logging
from gefyra_async.core.settings import Settings

log = structlog.get_logger(__name__)


def env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise SystemExit(f"cargo: {name} is not set; cargo is started by `gefyra-async up`")
    return value


def tunnel_config(settings: Settings) -> TunnelConfig:
    return TunnelConfig(
        private_key=env("CARGO_PRIVATE_KEY"),
        address=env("CARGO_ADDRESS"),
        server_public_key=env("CARGO_SERVER_KEY"),
        endpoint=env("CARGO_ENDPOINT"),
        routes=tuple(env("CARGO_ROUTES").split(",")),
        mtu=settings.tunnel_mtu,
        keepalive=settings.keepalive,
    )


async def agent() -> None:
    settings = Settings.from_env()
    connection = env("GEFYRA_ASYNC_CONNECTION")
    cargo_ip = env("CARGO_IP")
    tunnel = tunnel_config(settings)
    bus = EventBus(settings.bus_buffer)
    actors: list[Actor] = [
        CargoTunnel(tunnel),
        DnsForwarderActor(Endpoint(cargo_ip, 53), Endpoint(env("CARGO_DNS"), 53)),
        DockerEventsActor(docker_client, settings.docker_reconnect_delay),
        RouteManager(docker_client, connection, cargo_ip, settings.resync_period),
        BusMonitor(settings.bus_report_period),
    ]
    control = os.environ.get("CARGO_CONTROL")
    if control:
        host, _, port = control.rpartition(":")
        actors.append(
            ContainerReporter(
                docker_client,
                connection,
                names.network_name(connection),
                (host, int(port)),
                source=tunnel.address,
            )
        )
    else:
        log.warning("CARGO_CONTROL not set: bridges cannot find local containers; run up again")
    log.info("cargo starting", connection=connection, address=tunnel.address)
    await Supervisor(
        bus,
        actors,
        Backoff(settings.backoff_initial, settings.backoff_max, 2.0, settings.backoff_reset_after),
    ).run()


async def route(container: str) -> int:
    connection = env("GEFYRA_ASYNC_CONNECTION")
    manager = RouteManager(docker_client, connection, env("CARGO_IP"))
    async with docker_client() as docker:
        info = await inspect(docker, container)
    if info is None or not info.running:
        print(f"cargo: container {container} is not running", file=sys.stderr)
        return 1
    await manager.apply(info)
    return 0


async def stats() -> int:
    """Print the tunnel's peer counters as JSON (for the supervisor's live view)."""
    state = await Uapi(INTERFACE).get()
    print(
        json.dumps(
            [
                {
                    "peer": key,
                    "endpoint": peer.endpoint,
                    "lastHandshake": peer.last_handshake,
                    "rxBytes": peer.rx_bytes,
                    "txBytes": peer.tx_bytes,
                }
                for key, peer in state.peers.items()
            ]
        )
    )
    return 0


async def endpoint(value: str) -> int:
    """Send the tunnel's datagrams to VALUE (host:port) from now on; ``default``: to the
    endpoint cargo was created with (the tunnel Service, over UDP)."""
    if value == "default":
        target, override = env("CARGO_ENDPOINT"), None
    else:
        try:
            target = transport.format_endpoint(*transport.parse_endpoint(value))
        except transport.EndpointError as exc:
            print(f"cargo: {exc}", file=sys.stderr)
            return 2
        override = target
    await anyio.to_thread.run_sync(write_endpoint_override, override)
    uapi = Uapi(INTERFACE)
    if not await anyio.to_thread.run_sync(uapi.exists):
        # The tunnel is still starting: it reads the endpoint from the file when it sets
        # its peer, so nothing more to do now.
        log.info("tunnel endpoint set for its start", endpoint=target)
        return 0
    # The peer anew: a fresh session, so the next handshake (at once, with the persistent
    # keepalive) goes the new way and stowaway's WireGuard roams to it.
    await CargoTunnel(tunnel_config(Settings.from_env())).set_peer(uapi)
    log.info("tunnel endpoint moved", endpoint=target)
    return 0


async def probe(value: str) -> int:
    """Exit 0 when stowaway answers a UDP probe at VALUE (host:port) from here — cargo's
    own network position, where the tunnel's datagrams leave — else 1."""
    try:
        host, port = transport.parse_endpoint(value)
    except transport.EndpointError as exc:
        print(f"cargo: {exc}", file=sys.stderr)
        return 2
    return 0 if await udp_answers(host, port) else 1


def main() -> None:
    configure_logging(debug=bool(os.environ.get("GEFYRA_ASYNC_DEBUG")))
    if len(sys.argv) == 3 and sys.argv[1] == "route":
        sys.exit(anyio.run(route, sys.argv[2]))
    if len(sys.argv) == 2 and sys.argv[1] == "stats":
        sys.exit(anyio.run(stats))
    if len(sys.argv) == 3 and sys.argv[1] == "endpoint":
        sys.exit(anyio.run(endpoint, sys.argv[2]))
    if len(sys.argv) == 3 and sys.argv[1] == "probe":
        sys.exit(anyio.run(probe, sys.argv[2]))
    anyio.run(until_terminated, agent)
