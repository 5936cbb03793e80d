"""A Kubernetes watch as an actor: one resource kept in its store, changes hinted on the bus."""

from __future__ import annotations

from gefyra_async.adapters.kube_watch import ListFn, WatchFn, watch_loop
from gefyra_async.core.bus import EventBus
from gefyra_async.core.store import Store


class KubeWatchActor:
    """Fills STORE (which outlives this actor's restarts) from the list and watch FNS."""

    def __init__(self, store: Store, fns: tuple[ListFn, WatchFn], *, inactivity: float) -> None:
        self.name = f"watch:{store.resource}"
        self.store = store
        self.list_fn, self.watch_fn = fns
        self.inactivity = inactivity

    async def run(self, bus: EventBus) -> None:
        await watch_loop(
            self.list_fn, self.watch_fn, store=self.store, bus=bus, inactivity=self.inactivity
        )
