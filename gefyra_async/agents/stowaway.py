"""The stowaway agent: ``python3 -m gefyra_async.agents.stowaway`` in the stowaway pod.

Actors: the tunnel (WireGuard server end + client reconciler). Client objects are
re-read on every pass; a watch makes changes visible within a second.
"""

from __future__ import annotations

import os

import anyio
import structlog

from gefyra_async.actors.bus_monitor import BusMonitor
from gefyra_async.actors.kube_watch import KubeWatchActor
from gefyra_async.actors.stowaway_tunnel import StowawayTunnel
from gefyra_async.adapters.kube_objects import incluster_api
from gefyra_async.adapters.kube_watch import custom_objects_list, list_and_watch
from gefyra_async.core import names
from gefyra_async.core.actor import Actor, Backoff, Supervisor
from gefyra_async.core.bus import EventBus
from gefyra_async.core.logging import configure_logging
from gefyra_async.core.settings import Settings

log = structlog.get_logger(__name__)


async def main() -> None:
    settings = Settings.from_env()
    configure_logging(debug=bool(os.environ.get("GEFYRA_ASYNC_DEBUG")))
    bus = EventBus(settings.bus_buffer)
    async with await incluster_api() as api:
        clients = custom_objects_list(
            api, settings.api_group, names.CLIENT_VERSION, settings.namespace, names.CLIENT_PLURAL
        )
        actors: list[Actor] = [
            StowawayTunnel(settings, api, os.environ.get("POD_IP")),
            # Client changes reach the tunnel's reconciler within a moment, not a period.
            KubeWatchActor(
                names.CLIENT_PLURAL,
                list_and_watch(api, clients, timeout_seconds=settings.kube_watch_timeout),
            ),
            BusMonitor(settings.bus_report_period),
        ]
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
