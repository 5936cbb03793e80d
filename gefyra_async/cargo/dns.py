"""The DNS forwarder as an actor: cargo's address answers the apps' queries by asking the
cluster DNS through the tunnel, and nothing else."""

from __future__ import annotations

from gefyra_async.adapters.dns import DnsForwarder, Endpoint
from gefyra_async.core.bus import EventBus


class DnsForwarderActor:
    name = "dns-forwarder"

    def __init__(self, listen: Endpoint, upstream: Endpoint) -> None:
        self.listen = listen
        self.upstream = upstream
        self.forwarder: DnsForwarder | None = None

    async def run(self, bus: EventBus) -> None:
        self.forwarder = DnsForwarder(self.upstream, self.listen)
        await self.forwarder.serve()
