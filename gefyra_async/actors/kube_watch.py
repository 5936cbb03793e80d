"""A Kubernetes watch as an actor: changes of one resource onto the bus."""

from __future__ import annotations

from typing import Any

from gefyra_async.adapters.kube_watch import ListFn, WatchFn, watch_loop
from gefyra_async.core.bus import EventBus


class KubeWatchActor:
    def __init__(self, resource: str, fns: tuple[ListFn, WatchFn], **options: Any) -> None:
        self.name = f"watch:{resource}"
        self.resource = resource
        self.list_fn, self.watch_fn = fns
        self.options = options

    async def run(self, bus: EventBus) -> None:
        await watch_loop(
            self.list_fn, self.watch_fn, resource=self.resource, bus=bus, **self.options
        )
