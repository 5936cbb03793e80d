"""Every timeout and limit of gefyra-async, named and documented in one place.

Values can be overridden with environment variables ``GEFYRA_ASYNC_<NAME>`` (upper case),
e.g. ``GEFYRA_ASYNC_TUNNEL_PORT=31821``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields

ENV_PREFIX = "GEFYRA_ASYNC_"


def _doc(text: str) -> dict[str, str]:
    return {"doc": text}


@dataclass(frozen=True)
class Settings:
    # ---- names ----
    api_group: str = field(
        default="gefyra-async.dev",
        metadata=_doc("API group of the project's custom resources (not gefyra.dev)"),
    )
    namespace: str = field(
        default="gefyra-async", metadata=_doc("cluster namespace of stowaway and its objects")
    )
    registry: str = field(
        default="ghcr.io/gefyra-async",
        metadata=_doc(
            "registry and repository prefix of the cargo, stowaway and carrier images "
            "(<registry>/<component>:<package version>); build and publish your own with "
            "`gefyra-async images build --push --registry R`"
        ),
    )
    # ---- bus and supervision ----
    bus_buffer: int = field(
        default=256, metadata=_doc("events a subscriber may have queued before new ones drop")
    )
    backoff_initial: float = field(
        default=0.2, metadata=_doc("seconds before the first restart of a failed actor")
    )
    backoff_max: float = field(default=10.0, metadata=_doc("longest restart delay, seconds"))
    backoff_reset_after: float = field(
        default=30.0, metadata=_doc("a run this long (seconds) resets the restart backoff")
    )
    resync_period: float = field(
        default=30.0, metadata=_doc("seconds between reconciliations no event asked for")
    )
    shutdown_timeout: float = field(
        default=10.0, metadata=_doc("seconds cleanup may take on shutdown before it is cut off")
    )
    status_period: float = field(
        default=5.0,
        metadata=_doc("seconds between stowaway's passes over its clients (handshake status)"),
    )
    connect_timeout: float = field(
        default=60.0,
        metadata=_doc(
            "seconds `up` waits for stowaway to accept the client, then again for "
            "the first handshake, and for a LoadBalancer address"
        ),
    )
    install_timeout: float = field(
        default=120.0,
        metadata=_doc(
            "seconds `up` waits for stowaway to become available, `down` for the "
            "namespace to be gone"
        ),
    )
    bus_report_period: float = field(
        default=30.0, metadata=_doc("seconds between reports of dropped bus events, if any")
    )
    # ---- bridges ----
    bridge_timeout: float = field(
        default=60.0,
        metadata=_doc(
            "seconds `bridge` waits until every ready pod of the target is bridged, and "
            "`unbridge` until every carrier dropped the bridge"
        ),
    )
    carrier_start_timeout: float = field(
        default=30.0,
        metadata=_doc(
            "seconds stowaway waits for an added carrier to connect before adding it again"
        ),
    )
    client_silence_limit: float = field(
        default=20.0,
        metadata=_doc(
            "seconds stowaway waits without a word from a connection's cargo (it answers a "
            "ping every 5 s) before that connection's bridges are suspended — the original "
            "app serves — until it is heard again: a vanished laptop strands no traffic"
        ),
    )
    client_reap_after: float = field(
        default=86400.0,
        metadata=_doc(
            "seconds of the same silence after which stowaway's watchdog deletes the "
            "connection's Client — its bridges and carriers go with it; `gefyra-async up` on "
            "that machine connects it again"
        ),
    )
    carrier_max_per_pod: int = field(
        default=3,
        metadata=_doc(
            "carriers stowaway adds to one pod at most (each that ended stays in the pod's "
            "spec for the pod's life); past it the bridge says so instead of adding more"
        ),
    )
    carrier_orphan_timeout: float = field(
        default=60.0,
        metadata=_doc(
            "seconds a carrier keeps its redirects while stowaway is unreachable; then it "
            "removes them and exits, so a vanished cluster side leaves no interception behind "
            "(while stowaway runs, a carrier whose pod has no bridge left idles, without "
            "redirects, and serves the pod's next bridge)"
        ),
    )
    bridge_port_range: str = field(
        default="20000-29999",
        metadata=_doc("stowaway ports handed out to bridges (one per bridged port)"),
    )
    # ---- Kubernetes ----
    kube_request_timeout: float = field(
        default=30.0, metadata=_doc("seconds one Kubernetes API request may take")
    )
    kube_watch_timeout: int = field(
        default=300, metadata=_doc("server-side timeout of one watch call, seconds")
    )
    # ---- Docker ----
    docker_reconnect_delay: float = field(
        default=1.0, metadata=_doc("seconds before reconnecting a lost Docker event stream")
    )
    # ---- tunnel ----
    tunnel_port: int = field(
        default=31820, metadata=_doc("UDP port of the tunnel (NodePort of stowaway's Service)")
    )
    tunnel_service_type: str = field(
        default="NodePort",
        metadata=_doc(
            "type of the tunnel Service: NodePort (tunnel_port on every node) or "
            "LoadBalancer (the load balancer's address, port 51820)"
        ),
    )
    tunnel_cidr: str = field(
        default="10.250.0.0/16", metadata=_doc("addresses handed to clients' tunnel ends")
    )
    tunnel_mtu: int = field(default=1380, metadata=_doc("MTU of the WireGuard interfaces"))
    keepalive: int = field(
        default=15, metadata=_doc("WireGuard persistent keepalive of clients, seconds")
    )
    transport: str = field(
        default="auto",
        metadata=_doc(
            "how the tunnel's datagrams travel: auto (UDP, else through the API server), "
            "udp, or api (a port-forward to stowaway through the Kubernetes API server)"
        ),
    )
    udp_handshake_timeout: float = field(
        default=6.0,
        metadata=_doc(
            "seconds `up` waits for a WireGuard handshake over UDP, once cargo's device is up, "
            "before it takes the API transport (with --transport auto); WireGuard sends a "
            "lost first handshake again after 5 s"
        ),
    )
    udp_retry_period: float = field(
        default=20.0,
        metadata=_doc("seconds between UDP probes while the API transport carries the tunnel"),
    )
    api_transport_max_streams: int = field(
        default=512,
        metadata=_doc("API-transport streams stowaway relays at once (one per client)"),
    )
    handshake_stale_after: float = field(
        default=180.0,
        metadata=_doc("a tunnel whose last handshake is older (seconds) counts as down"),
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Defaults, overridden by ``GEFYRA_ASYNC_*`` variables; bad values raise ValueError."""
        env = os.environ if environ is None else environ
        changes: dict[str, object] = {}
        for f in fields(cls):
            raw = env.get(ENV_PREFIX + f.name.upper())
            if raw is None:
                continue
            kind: type[int] | type[float] | type[str] = (
                int
                if isinstance(f.default, int)
                else float
                if isinstance(f.default, float)
                else str
            )
            try:
                changes[f.name] = kind(raw)
            except ValueError:
                raise ValueError(
                    f"{ENV_PREFIX}{f.name.upper()}={raw!r} is not a valid {kind.__name__} "
                    f"({f.metadata['doc']})"
                ) from None
        return dataclasses.replace(cls(), **changes)  # type: ignore[arg-type]

    @classmethod
    def describe(cls) -> list[tuple[str, object, str]]:
        """(name, default, documentation) of every setting."""
        return [(f.name, f.default, f.metadata["doc"]) for f in fields(cls)]
