"""What stowaway's reconcilers may see and do of the control server: an interface.

The pod-rewriter and the watchdog read the carriers' and cargos' sessions and push configs;
they depend on these Protocols, not on the server (``stowaway/control.py``), so a unit
test hands them a fake and the server's internals stay its own. Also the two rules both
sides share: how long a cargo has been silent, and a carrier's token. Pure logic, no I/O.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Any, Protocol


def silence(heard: float | None, first_seen: float, now: float) -> float:
    """Seconds a cargo has been silent: since its last message (HEARD), or since FIRST_SEEN —
    when this stowaway first saw its client — if it has not spoken since then. A stowaway
    that just started has heard nobody; its clients get the full limit from its start."""
    return now - max(first_seen, heard if heard is not None else first_seen)


def carrier_token(secret: str, namespace: str, pod: str, carrier: str) -> str:
    """What a carrier must present: HMAC-SHA256(secret, "ns/pod/carrier"), hex."""
    message = f"{namespace}/{pod}/{carrier}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


class CarrierView(Protocol):
    """One connected carrier, as the control server knows it."""

    @property
    def key(self) -> str:
        """``namespace/pod`` of the carrier's pod."""

    stats: dict[str, Any]  # counters per bridge, as the carrier last reported them
    dropping: set[str]  # bridges the last config removed, until the carrier confirms

    def settled(self) -> bool:
        """The carrier confirmed the last config it was sent."""

    def applied_bridges(self) -> set[str]:
        """Bridges the carrier confirmed."""

    def sent_bridges(self) -> set[str]:
        """Bridges of the last config sent."""


class ControlPlane(Protocol):
    """The registry of connected carriers and cargos, and the way to reach carriers."""

    @property
    def carriers(self) -> Mapping[str, CarrierView]:
        """Connected carriers by ``namespace/pod``."""

    @property
    def cargo_heard(self) -> Mapping[str, float]:
        """Client tunnel address → when (monotonic) its cargo was last heard."""

    def containers_of(self, address: str) -> dict[str, str] | None:
        """The local containers the cargo at ADDRESS last reported; None: not yet."""

    async def push(self, key: str, routes: list[dict[str, Any]]) -> bool:
        """Send ROUTES to the carrier of pod KEY unless it has them; False: no carrier."""
