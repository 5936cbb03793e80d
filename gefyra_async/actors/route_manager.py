"""Cargo's route manager: every app of the connection sends its traffic to cargo.

An app runs in the network namespace of a small *netns holder* container (the pod's
"pause" container, in Kubernetes terms) on the connection's Docker network. The route
manager replaces the holder's default route with cargo's address — at cargo's start for
every holder that runs, on every Docker ``start`` event of a holder, and on request
(``apply``) so ``run`` can start the app only once its route is in place. The app itself
can be restarted at will: its namespace, and so its route, belong to the holder.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import structlog

from gefyra_async.adapters.containers import ContainerInfo, inspect, with_label
from gefyra_async.adapters.netlink import RouteError, set_default_route
from gefyra_async.core import names
from gefyra_async.core.bus import EventBus
from gefyra_async.core.events import ContainerEvent, DockerStreamState, Resync

log = structlog.get_logger(__name__)

HOLDER_ROLE = "netns"


def holder_label(connection: str) -> str:
    return f"{names.CONNECTION}={connection}"


class RouteManager:
    name = "route-manager"

    def __init__(
        self,
        docker_factory: Callable[[], Any],
        connection: str,
        cargo_ip: str,
        resync_period: float = 30.0,
    ) -> None:
        self.docker_factory = docker_factory
        self.connection = connection
        self.cargo_ip = cargo_ip
        self.resync_period = resync_period
        self.applied = 0

    def _is_holder(self, labels: dict[str, str]) -> bool:
        return (
            labels.get(names.CONNECTION) == self.connection
            and labels.get(names.ROLE) == HOLDER_ROLE
        )

    async def apply(self, info: ContainerInfo) -> bool:
        """Point INFO's default route at cargo; True when it changed."""
        if not info.running or info.pid <= 0:
            return False
        changed = await set_default_route(self.cargo_ip, netns=f"/proc/{info.pid}/ns/net")
        if changed:
            self.applied += 1
            log.info("default route set", container=info.name, gateway=self.cargo_ip)
        return changed

    async def resync(self, docker: Any) -> None:
        for info in await with_label(docker, holder_label(self.connection)):
            if self._is_holder(info.labels):
                try:
                    await self.apply(info)
                except RouteError as exc:
                    log.warning("route not set", container=info.name, error=str(exc))

    async def run(self, bus: EventBus) -> None:
        async with (
            self.docker_factory() as docker,
            bus.subscribe(ContainerEvent, DockerStreamState, Resync, name=self.name) as events,
        ):
            await self.resync(docker)
            while True:
                with anyio.move_on_after(self.resync_period) as timer:
                    event = await events.receive()
                if timer.cancelled_caught or not isinstance(event, ContainerEvent):
                    # Periodic, reconnected stream, or asked to: look at everything.
                    await self.resync(docker)
                    continue
                if event.action != "start" or not self._is_holder(event.labels):
                    continue
                info = await inspect(docker, event.container_id)
                if info is not None:
                    try:
                        await self.apply(info)
                    except RouteError as exc:
                        log.warning("route not set", container=event.name, error=str(exc))
