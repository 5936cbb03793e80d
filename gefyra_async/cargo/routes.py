"""Cargo's route manager: every app of the connection sends its traffic to cargo.

An app runs in the network namespace of a small *netns holder* container (the pod's
"pause" container, in Kubernetes terms) on the connection's Docker network. The route
manager replaces the holder's default route with cargo's address — at cargo's start for
every holder that runs, on every Docker ``start`` event of a holder, and on request
(``apply``) so ``run`` can start the app only once its route is in place. The app itself
can be restarted at will: its namespace, and so its route, belong to the holder.

A holder lives exactly as long as its app: when the app container is removed (``docker
rm``, or Docker's auto-remove after a detached ``run --rm`` exits), its holder is removed
too — at once on the app's ``destroy`` event, and at every resync for a holder whose app
is gone (one older than ``holder_grace``: ``run`` creates the holder before the app).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

import anyio
import structlog

from gefyra_async.adapters.containers import (
    ContainerError,
    ContainerInfo,
    inspect,
    remove_container,
    with_label,
)
from gefyra_async.adapters.netlink import RouteError, set_default_route
from gefyra_async.core import names
from gefyra_async.core.bus import EventBus
from gefyra_async.core.events import ContainerEvent, DockerStreamState, Resync

log = structlog.get_logger(__name__)


def holder_label(connection: str) -> str:
    return f"{names.CONNECTION}={connection}"


def orphaned_holders(
    containers: Iterable[ContainerInfo], connection: str, now: float, grace: float
) -> list[ContainerInfo]:
    """The holders of CONNECTION among CONTAINERS whose app container is gone.

    A holder younger than GRACE is never an orphan: ``run`` creates it first and its
    app only after cargo has set the route.
    """
    mine = [c for c in containers if c.labels.get(names.CONNECTION) == connection]
    apps = {c.name for c in mine if c.labels.get(names.ROLE) == names.ROLE_APP}
    return [
        c
        for c in mine
        if c.labels.get(names.ROLE) == names.ROLE_HOLDER
        and c.labels.get(names.APP) not in apps
        and now - c.created > grace
    ]


class RouteManager:
    name = "route-manager"

    def __init__(
        self,
        docker_factory: Callable[[], Any],
        connection: str,
        cargo_ip: str,
        resync_period: float = 30.0,
        holder_grace: float = 60.0,
    ) -> None:
        self.docker_factory = docker_factory
        self.connection = connection
        self.cargo_ip = cargo_ip
        self.resync_period = resync_period
        self.holder_grace = holder_grace
        self.applied = 0
        self.removed = 0

    def _is_holder(self, labels: dict[str, str]) -> bool:
        return (
            labels.get(names.CONNECTION) == self.connection
            and labels.get(names.ROLE) == names.ROLE_HOLDER
        )

    def _is_app(self, labels: dict[str, str]) -> bool:
        return (
            labels.get(names.CONNECTION) == self.connection
            and labels.get(names.ROLE) == names.ROLE_APP
        )

    async def _remove_holder(self, docker: Any, holder: ContainerInfo, why: str) -> None:
        try:
            if await remove_container(docker, holder.id):
                self.removed += 1
                log.info("holder removed", container=holder.name, reason=why)
        except ContainerError as exc:
            log.warning("holder not removed", container=holder.name, error=str(exc))

    async def app_removed(self, docker: Any, app: str) -> None:
        """APP's container is gone: remove its holder."""
        for info in await with_label(docker, f"{names.APP}={app}", running_only=False):
            if self._is_holder(info.labels):
                await self._remove_holder(docker, info, f"its app {app} was removed")

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
        everything = await with_label(docker, holder_label(self.connection), running_only=False)
        for orphan in orphaned_holders(everything, self.connection, time.time(), self.holder_grace):
            await self._remove_holder(docker, orphan, "its app container is gone")
        for info in everything:
            if self._is_holder(info.labels) and info.running:
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
                if event.action == "destroy" and self._is_app(event.labels):
                    await self.app_removed(docker, event.name)
                    continue
                if event.action != "start" or not self._is_holder(event.labels):
                    continue
                info = await inspect(docker, event.container_id)
                if info is not None:
                    try:
                        await self.apply(info)
                    except RouteError as exc:
                        log.warning("route not set", container=event.name, error=str(exc))
