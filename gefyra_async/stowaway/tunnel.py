"""Stowaway's tunnel: the WireGuard server end and the reconciler of its clients.

Desired state is the set of Client objects; observed state is the WireGuard device.
Each pass adds missing peers and removes stale ones through the UAPI — live, without
restarting the device, so other clients never notice — and writes each client's
status (tunnel address, server key, routes, cluster DNS, conditions, last handshake).
A pass reads the Clients from the watch's store; it runs on every hint about a Client (a
burst makes one pass) and at least every ``status_period`` seconds.
"""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path
from typing import Any

import anyio
import structlog

from gefyra_async.adapters.iptables import ensure_rule
from gefyra_async.adapters.kube_objects import Clients, cluster_ranges, ensure_secret_value
from gefyra_async.adapters.netlink import configure_link, replace_routes
from gefyra_async.adapters.wgkeys import KeyPair
from gefyra_async.adapters.wireguard import PeerConfig, Uapi, run_wireguard_go
from gefyra_async.core import names
from gefyra_async.core.bus import EventBus, next_burst
from gefyra_async.core.clients import Plan, plan_clients
from gefyra_async.core.conditions import set_condition
from gefyra_async.core.events import ObjectChanged, StoreSynced, about
from gefyra_async.core.settings import Settings
from gefyra_async.core.store import StoreView

log = structlog.get_logger(__name__)

INTERFACE = "wg0"
READY_FILE = Path("/run/stowaway/ready")


def cluster_dns_from_resolv_conf(path: Path = Path("/etc/resolv.conf")) -> str | None:
    """The pod's own resolver: with dnsPolicy ClusterFirst, the cluster DNS."""
    try:
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0] == "nameserver":
                return parts[1]
    except OSError:
        return None
    return None


def mark_ready(ready: bool) -> None:
    """The readiness probe's file: present while the tunnel is up."""
    if ready:
        READY_FILE.parent.mkdir(parents=True, exist_ok=True)
        READY_FILE.touch()
    else:
        READY_FILE.unlink(missing_ok=True)


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class StowawayTunnel:
    name = "stowaway-tunnel"

    def __init__(
        self, settings: Settings, api: Any, pod_ip: str | None, *, clients: StoreView
    ) -> None:
        self.settings = settings
        self.api = api
        self.store = clients
        self.pod_ip = pod_ip
        self.clients = Clients(api, settings)
        network = ipaddress.ip_network(settings.tunnel_cidr)
        self.server_address = str(next(network.hosts()))
        self.prefixlen = network.prefixlen
        self.status_period = settings.status_period
        self.routed: list[str] = []

    async def run(self, bus: EventBus) -> None:
        keys = KeyPair.from_private(
            await ensure_secret_value(
                self.api,
                self.settings.namespace,
                names.STOWAWAY_KEY_SECRET,
                "privateKey",
                lambda: KeyPair.generate().private,
            )
        )
        ranges = await cluster_ranges(self.api, self.pod_ip)
        dns = cluster_dns_from_resolv_conf()
        async with (
            bus.subscribe(
                ObjectChanged, StoreSynced, name=self.name, where=about(self.store.resource)
            ) as events,
            anyio.create_task_group() as tg,
        ):
            uapi: Uapi = await tg.start(run_wireguard_go, INTERFACE)
            await uapi.set(
                private_key=keys.private,
                listen_port=names.STOWAWAY_LISTEN_PORT,
                replace_peers=True,
            )
            await configure_link(
                INTERFACE,
                f"{self.server_address}/{self.prefixlen}",
                mtu=self.settings.tunnel_mtu,
            )
            # Clients' traffic enters the cluster with stowaway's pod address. Only forwarded
            # traffic: stowaway's own (the API transport's relay to WireGuard on loopback)
            # keeps its address, or WireGuard would answer an address the relay never had.
            await ensure_rule(
                "nat",
                "POSTROUTING",
                ["!", "-o", INTERFACE, "-m", "addrtype", "!", "--src-type", "LOCAL",
                 "-j", "MASQUERADE"],
            )  # fmt: skip
            # Clients are isolated from each other: nothing is forwarded from one peer to
            # another, whatever a client routes into its tunnel. Bridged traffic enters from
            # the pod network (eth0), so it is not affected.
            await ensure_rule(
                "filter", "FORWARD", ["-i", INTERFACE, "-o", INTERFACE, "-j", "DROP"], first=True
            )
            mark_ready(True)
            log.info(
                "tunnel up",
                public_key=keys.public,
                address=self.server_address,
                routes=ranges,
                cluster_dns=dns,
            )
            try:
                while True:
                    if self.store.synced:  # before the first list, no client is known
                        await self.reconcile(uapi, keys, ranges, dns)
                    await next_burst(events, wait=self.status_period, settle=0.05)
            finally:
                mark_ready(False)

    async def reconcile(
        self, uapi: Uapi, keys: KeyPair, ranges: list[str], dns: str | None
    ) -> Plan:
        objects = self.store.objects(self.settings.namespace)
        plan = plan_clients(objects, self.settings.tunnel_cidr, self.server_address)
        desired = plan.peers()
        state = await uapi.get()
        remove = [key for key in state.peers if key not in desired]
        changes = [
            PeerConfig(key, list(ips))
            for key, ips in desired.items()
            if key not in state.peers or sorted(state.peers[key].allowed_ips) != sorted(ips)
        ]
        if remove or changes:
            await uapi.set(peers=changes, remove_peers=remove)
            log.info("peers changed", added_or_updated=len(changes), removed=len(remove))
            state = await uapi.get()
        # Clients' local subnets (where bridged traffic goes) through the tunnel; the
        # device's own prefix covers their tunnel addresses. WireGuard picks the peer.
        subnets = sorted(
            {ip for c in plan.clients.values() for ip in c.allowed_ips if not ip.endswith("/32")}
        )
        if subnets != self.routed:
            await replace_routes(INTERFACE, subnets)
            self.routed = subnets

        for obj in objects:
            name = obj["metadata"]["name"]
            planned = plan.clients.get(name)
            if planned is None:
                continue  # being deleted
            old: dict[str, Any] = obj.get("status") or {}
            peer = state.peers.get(planned.public_key) if planned.address else None
            handshake = peer.last_handshake if peer else None
            age = peer.handshake_age() if peer else None
            connected = age is not None and age < self.settings.handshake_stale_after
            generation = obj["metadata"].get("generation")
            conditions = set_condition(
                old.get("conditions"),
                "Ready",
                planned.address is not None,
                "PeerConfigured" if planned.address else "Refused",
                planned.problem or "peer configured on stowaway",
                generation,
            )
            conditions = set_condition(
                conditions,
                "Connected",
                connected,
                "HandshakeRecent" if connected else "NoRecentHandshake",
                f"last handshake {age:.0f}s ago" if age is not None else "no handshake yet",
                generation,
            )
            status: dict[str, Any] = {
                "tunnelAddress": planned.address,
                "serverPublicKey": keys.public,
                "serverAddress": self.server_address,
                "routes": [*ranges, f"{self.server_address}/32"],
                "clusterDNS": dns,
                "mtu": self.settings.tunnel_mtu,
                "lastHandshake": _iso(handshake),
                "problem": planned.problem or None,
                "observedGeneration": generation,
            }

            # Messages that only restate the handshake age would churn the API; compare
            # without them.
            def stable(conds: list[dict[str, Any]] | None) -> list[tuple[Any, ...]]:
                return sorted(
                    (c.get("type"), c.get("status"), c.get("reason")) for c in conds or []
                )

            same = all(old.get(k) == v for k, v in status.items()) and stable(
                old.get("conditions")
            ) == stable(conditions)
            if not same:
                status["conditions"] = conditions
                await self.clients.patch_status(name, status)
                log.info(
                    "client status",
                    client=name,
                    address=planned.address,
                    connected=connected,
                    problem=planned.problem,
                )
        return plan
