"""stowaway's watchdog: connections whose laptop never came back are removed from the cluster.

A laptop that goes away without `gefyra-async down` first has its bridges suspended by the
pod-rewriter (after ``client_silence_limit``). If its cargo stays silent for
``client_reap_after`` (a day by default), the watchdog deletes its Client object: the
Bridges it owns are garbage-collected, their finalizers make the carriers remove their
redirects (they idle, for the pods' next bridges), and stowaway drops the WireGuard
peer — nothing of that laptop is left in the cluster. When it does come back,
`gefyra-async up` connects it anew.

Silence is measured from the last message of the client's cargo on the control connection,
or — for a client not heard since stowaway started — from when the watchdog first saw it.
"""

from __future__ import annotations

import time
from typing import Any

import anyio
import structlog

from gefyra_async.adapters.kube_objects import Clients, record_event
from gefyra_async.core import names
from gefyra_async.core.bus import EventBus
from gefyra_async.core.control_plane import ControlPlane, silence
from gefyra_async.core.settings import Settings
from gefyra_async.core.store import StoreView

log = structlog.get_logger(__name__)


class Watchdog:
    name = "watchdog"

    def __init__(
        self,
        settings: Settings,
        api: Any,
        control: ControlPlane,
        *,
        clients: StoreView,
        period: float = 5.0,
    ) -> None:
        self.settings = settings
        self.api = api
        self.control = control
        self.period = period
        self.clients = clients
        self.first_seen: dict[str, float] = {}  # client uid → monotonic

    def silent_for(self, obj: dict[str, Any], now: float) -> float:
        """Seconds since anything was heard of client OBJ (or since it was first seen)."""
        seen = self.first_seen.setdefault(str(obj["metadata"].get("uid")), now)
        address = (obj.get("status") or {}).get("tunnelAddress")
        return silence(self.control.cargo_heard.get(address) if address else None, seen, now)

    async def check(self) -> list[str]:
        """Delete every client silent for longer than the limit; returns their names."""
        now, reaped = time.monotonic(), []
        limit = self.settings.client_reap_after
        objects = self.clients.objects(self.settings.namespace)
        present = {str(obj["metadata"].get("uid")) for obj in objects}
        for uid in set(self.first_seen) - present:
            del self.first_seen[uid]
        for obj in objects:
            name = str(obj["metadata"]["name"])
            if obj["metadata"].get("deletionTimestamp") or self.silent_for(obj, now) <= limit:
                continue
            message = (
                f"connection {name} has not been heard from for over {limit:.0f}s: removed "
                "with its bridges (`gefyra-async up` on that machine connects it again)"
            )
            log.warning("client reaped", client=name, silent_limit=limit)
            await record_event(
                self.api,
                {
                    "apiVersion": f"{self.settings.api_group}/{names.CLIENT_VERSION}",
                    "kind": "Client",
                    "namespace": self.settings.namespace,
                    "name": name,
                    "uid": str(obj["metadata"].get("uid")),
                },
                "ClientReaped",
                message,
                warning=True,
            )
            await Clients(self.api, self.settings).delete(name)
            reaped.append(name)
        return reaped

    async def run(self, bus: EventBus) -> None:
        # Silence is a matter of time, not of events: a periodic look at the store.
        while True:
            await anyio.sleep(self.period)
            if self.clients.synced:
                await self.check()
