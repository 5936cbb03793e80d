"""Cargo's tunnel: the WireGuard client end of one connection.

Cargo holds the connection's private key (it never leaves the developer machine), peers
with stowaway through the tunnel Service, routes the cluster's ranges into the tunnel and
masquerades the app containers' traffic behind its tunnel address. With a persistent
keepalive the peer re-handshakes by itself after stowaway or the node comes back, so a
dropped tunnel heals without anyone acting; if the device itself dies, the supervisor
restarts this actor, which rebuilds it from the same configuration.

WireGuard's own timers notice a restarted stowaway only after some 15 s of unanswered
packets. When an attempt to reach stowaway's control port goes unanswered
(``ControlLost``), the tunnel sets its peer anew, dropping the session, so the next
packet starts a handshake at once.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import anyio
import structlog

from gefyra_async.adapters.iptables import ensure_rule
from gefyra_async.adapters.netlink import configure_link, replace_routes
from gefyra_async.adapters.wireguard import PeerConfig, Uapi, run_wireguard_go
from gefyra_async.core.bus import EventBus
from gefyra_async.core.events import ControlLost, TunnelStats

log = structlog.get_logger(__name__)

INTERFACE = "wg0"
# The endpoint in use when it is not the configured one (the API transport's relay): kept
# in cargo's own filesystem, so a restarted tunnel actor or container keeps using it.
ENDPOINT_OVERRIDE = Path("/var/lib/gefyra-async/endpoint")
INBOUND_MARK = "0x6761"  # packets that came in through the tunnel (bridged connections)
REHANDSHAKE_EVERY = 2.0  # seconds: at most one forced handshake per this period


@dataclass(frozen=True)
class TunnelConfig:
    private_key: str
    address: str  # this end's tunnel address
    server_public_key: str
    endpoint: str  # host:port of stowaway's tunnel Service
    routes: tuple[str, ...]
    mtu: int = 1380
    keepalive: int = 15
    stats_period: float = 5.0


class CargoTunnel:
    name = "cargo-tunnel"

    def __init__(self, config: TunnelConfig) -> None:
        self.config = config

    def endpoint(self) -> str:
        """The endpoint to use: the override (API transport), else the configured one."""
        try:
            override = ENDPOINT_OVERRIDE.read_text().strip()
        except OSError:
            override = ""
        return override or self.config.endpoint

    async def set_peer(self, uapi: Uapi) -> None:
        c = self.config
        await uapi.set(
            private_key=c.private_key,
            replace_peers=True,
            peers=[
                PeerConfig(
                    c.server_public_key,
                    list(c.routes),
                    endpoint=self.endpoint(),
                    persistent_keepalive=c.keepalive,
                )
            ],
        )

    async def _rehandshake(self, bus: EventBus, uapi: Uapi) -> None:
        async with bus.subscribe(ControlLost, name=f"{self.name}.control") as lost:
            while True:
                event = await lost.receive()
                reason = event.reason if isinstance(event, ControlLost) else ""
                log.info("stowaway unreachable; handshaking anew", reason=reason)
                await self.set_peer(uapi)
                await anyio.sleep(REHANDSHAKE_EVERY)  # not more often than that
                with contextlib.suppress(anyio.WouldBlock):
                    while True:  # what came meanwhile is answered by this handshake
                        lost.receive_nowait()

    async def run(self, bus: EventBus) -> None:
        c = self.config
        async with anyio.create_task_group() as tg:
            uapi: Uapi = await tg.start(run_wireguard_go, INTERFACE)
            await self.set_peer(uapi)
            await configure_link(INTERFACE, f"{c.address}/32", mtu=c.mtu)
            await replace_routes(INTERFACE, c.routes)
            # Apps' packets leave with cargo's tunnel address: stowaway knows how to answer it.
            await ensure_rule("nat", "POSTROUTING", ["-o", INTERFACE, "-j", "MASQUERADE"])
            # Bridged connections arrive from the tunnel with a cluster source address. Cargo
            # takes them over with its own address, so the app answers cargo directly —
            # whatever the Docker host would do with cluster addresses (route them
            # elsewhere, masquerade them: both seen). Only a connection's first packet
            # meets the nat table, so replies to the apps' own connections are untouched.
            await ensure_rule(
                "mangle", "PREROUTING", ["-i", INTERFACE, "-j", "MARK", "--set-mark", INBOUND_MARK]
            )
            await ensure_rule(
                "nat",
                "POSTROUTING",
                ["!", "-o", INTERFACE, "-m", "mark", "--mark", INBOUND_MARK, "-j", "MASQUERADE"],
            )
            # TCP through the tunnel must fit its MTU, whatever the apps' interfaces say.
            await ensure_rule(
                "mangle",
                "FORWARD",
                [
                    "-o",
                    INTERFACE,
                    "-p",
                    "tcp",
                    "--tcp-flags",
                    "SYN,RST",
                    "SYN",
                    "-j",
                    "TCPMSS",
                    "--clamp-mss-to-pmtu",
                ],
            )
            log.info(
                "tunnel configured", address=c.address, endpoint=self.endpoint(), routes=c.routes
            )
            tg.start_soon(self._rehandshake, bus, uapi)
            while True:
                state = await uapi.get()
                for key, peer in state.peers.items():
                    bus.publish(
                        TunnelStats(
                            interface=INTERFACE,
                            peer=key,
                            endpoint=peer.endpoint,
                            last_handshake=peer.last_handshake,
                            rx_bytes=peer.rx_bytes,
                            tx_bytes=peer.tx_bytes,
                        )
                    )
                await anyio.sleep(c.stats_period)


def write_endpoint_override(endpoint: str | None) -> None:
    """Use ENDPOINT from now on (None: the configured one again), across restarts."""
    if endpoint is None:
        ENDPOINT_OVERRIDE.unlink(missing_ok=True)
    else:
        ENDPOINT_OVERRIDE.parent.mkdir(parents=True, exist_ok=True)
        ENDPOINT_OVERRIDE.write_text(endpoint + "\n")
