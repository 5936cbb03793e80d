"""The stowaway agent: ``python3 -m gefyra_async.agents.stowaway`` in the stowaway pod.

Actors: the tunnel (WireGuard server end + client reconciler). Client objects are
re-read on every pass; a watch makes changes visible within a second.
"""

from __future__ import annotations

import os

import anyio
import structlog

from gefyra_async.actors.stowaway_tunnel import StowawayTunnel
from gefyra_async.adapters.kube_objects import incluster_api
from gefyra_async.core.actor import Backoff, Supervisor
from gefyra_async.core.bus import EventBus
from gefyra_async.core.logging import configure_logging
from gefyra_async.core.settings import Settings

log = structlog.get_logger(__name__)


async def main() -> None:
    settings = Settings.from_env()
    configure_logging(debug=bool(os.environ.get("GEFYRA_ASYNC_DEBUG")))
    bus = EventBus(settings.bus_buffer)
    async with await incluster_api() as api:
        actors = [StowawayTunnel(settings, api, os.environ.get("POD_IP"))]
        log.info("stowaway starting", namespace=settings.namespace)
        await Supervisor(
            bus,
            actors,
            Backoff(
                settings.backoff_initial, settings.backoff_max, 2.0, settings.backoff_reset_after
            ),
        ).run()


if __name__ == "__main__":
    anyio.run(main)
