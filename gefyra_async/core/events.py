"""Typed events: small frozen dataclasses that actors publish on the bus.

An event is a hint that something changed ("look again now"), never the only carrier of
state: an actor that misses one still converges through its periodic resync.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True, kw_only=True)
class Event:
    """Base of every event. ``at`` is a monotonic timestamp taken when it was made."""

    at: float = field(default_factory=time.monotonic, compare=False)

    @property
    def kind(self) -> str:
        return type(self).__name__


# ---- Docker -------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ContainerEvent(Event):
    """A Docker container changed: ``action`` is Docker's (start, die, destroy, ...)."""

    container_id: str
    name: str
    action: str
    labels: dict[str, str] = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True, kw_only=True)
class DockerStreamState(Event):
    """The Docker event stream connected (``connected=True``) or was lost."""

    connected: bool
    reason: str = ""


# ---- Kubernetes ---------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ObjectChanged(Event):
    """A hint: the watched object RESOURCE NAMESPACE/NAME changed or (``deleted``) went.

    It carries no object: the watch's store has it (``core/store``), and a dropped hint
    only delays a reconciler's next look.
    """

    resource: str
    namespace: str
    name: str
    deleted: bool = False


@dataclass(frozen=True, kw_only=True)
class StoreSynced(Event):
    """A hint: RESOURCE's store took a full list (start, or after a gap); ``changed``
    objects differ from before. Look at every object again."""

    resource: str
    changed: int


def about(*resources: str) -> Callable[[Event], bool]:
    """A subscription filter (``bus.subscribe(where=...)``): watch hints about RESOURCES
    only; every other event passes."""

    def wanted(event: Event) -> bool:
        if isinstance(event, ObjectChanged | StoreSynced):
            return event.resource in resources
        return True

    return wanted


# ---- Bridges ------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ControlLost(Event):
    """Cargo cannot reach stowaway's control port through the tunnel (a connection attempt
    went unanswered): stowaway may have restarted and the tunnel session be stale. The
    tunnel answers with a fresh handshake at once, instead of waiting for WireGuard's own
    timers."""

    reason: str


@dataclass(frozen=True, kw_only=True)
class PeerChanged(Event):
    """A carrier or cargo on stowaway's control server connected, reported or left.

    ``role`` is carrier or cargo; ``key`` is ``namespace/pod`` for a carrier and the
    client's tunnel address for a cargo; ``what`` is connected, applied, containers,
    stats or closed.
    """

    role: str
    key: str
    what: str


# ---- Tunnel -------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class TunnelStats(Event):
    """One WireGuard peer's state as read from the device."""

    interface: str
    peer: str
    endpoint: str | None
    last_handshake: float | None
    rx_bytes: int
    tx_bytes: int


@dataclass(frozen=True, kw_only=True)
class TunnelHealth(Event):
    """The watchdog's verdict on a tunnel: healthy or not, and why."""

    interface: str
    healthy: bool
    reason: str


# ---- Supervision --------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ActorFailed(Event):
    """An actor raised; the supervisor restarts it after ``retry_in`` seconds."""

    actor: str
    error: str
    restarts: int
    retry_in: float


@dataclass(frozen=True, kw_only=True)
class Resync(Event):
    """Periodic nudge: reconcile now even if no event said so."""

    reason: str = "periodic"
