"""Makes a slow subscriber visible: logs the bus counters whenever events were dropped."""

from __future__ import annotations

import anyio
import structlog

from gefyra_async.core.bus import EventBus

log = structlog.get_logger(__name__)


class BusMonitor:
    name = "bus-monitor"

    def __init__(self, period: float) -> None:
        self.period = period

    async def run(self, bus: EventBus) -> None:
        reported: dict[str, int] = {}
        while True:
            await anyio.sleep(self.period)
            for stats in bus.stats():
                if stats.dropped > reported.get(stats.name, 0):
                    log.warning(
                        "bus subscriber dropped events",
                        subscriber=stats.name,
                        dropped=stats.dropped,
                        delivered=stats.delivered,
                        queued=stats.queued,
                        buffer=stats.buffer_size,
                    )
                    reported[stats.name] = stats.dropped
