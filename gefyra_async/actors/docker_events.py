"""The Docker event stream as an actor: container events onto the bus, reconnecting."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gefyra_async.adapters.docker_engine import docker_events
from gefyra_async.core.bus import EventBus


class DockerEventsActor:
    name = "docker-events"

    def __init__(
        self,
        docker_factory: Callable[[], Any],
        reconnect_delay: float = 1.0,
        filters: dict[str, list[str]] | None = None,
    ) -> None:
        self.docker_factory = docker_factory
        self.reconnect_delay = reconnect_delay
        self.filters = filters

    async def run(self, bus: EventBus) -> None:
        async with self.docker_factory() as docker:
            await docker_events(
                docker, bus, filters=self.filters, reconnect_delay=self.reconnect_delay
            )
