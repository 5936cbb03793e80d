"""The event bus: fan-out of events to subscribers over bounded anyio memory streams.

Publishing never blocks. Each subscriber has its own bounded buffer; when it is full
the new event is dropped *for that subscriber only* and counted. Because events are
hints (actors also resync periodically), a drop delays a reaction but never leaves
state wrong; the counters make a slow subscriber visible instead of letting memory grow.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from gefyra_async.core.events import Event


@dataclass
class SubscriberStats:
    """Counters of one subscription, for status views and tests."""

    name: str
    delivered: int = 0
    dropped: int = 0
    buffer_size: int = 0
    queued: int = 0


class _Subscription:
    def __init__(
        self,
        name: str,
        kinds: tuple[type[Event], ...],
        send: MemoryObjectSendStream[Event],
        buffer_size: int,
        where: Callable[[Event], bool] | None,
    ) -> None:
        self.kinds = kinds
        self.where = where
        self.send = send
        self.stats = SubscriberStats(name=name, buffer_size=buffer_size)

    def wants(self, event: Event) -> bool:
        if self.kinds and not isinstance(event, self.kinds):
            return False
        return self.where is None or self.where(event)


class EventBus:
    """Fan-out of events to any number of subscribers, each with a bounded buffer."""

    def __init__(self, default_buffer: int = 256) -> None:
        if default_buffer < 1:
            raise ValueError("a subscriber buffer holds at least one event")
        self._default_buffer = default_buffer
        self._subscriptions: list[_Subscription] = []
        self.published = 0

    def publish(self, event: Event) -> None:
        """Hand EVENT to every interested subscriber without waiting."""
        self.published += 1
        for sub in list(self._subscriptions):
            if not sub.wants(event):
                continue
            try:
                sub.send.send_nowait(event)
            except anyio.WouldBlock:
                sub.stats.dropped += 1
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                # The subscriber went away between its last receive and now.
                self._remove(sub)
            else:
                sub.stats.delivered += 1

    @asynccontextmanager
    async def subscribe(
        self,
        *kinds: type[Event],
        name: str = "subscriber",
        buffer: int | None = None,
        where: Callable[[Event], bool] | None = None,
    ) -> AsyncIterator[MemoryObjectReceiveStream[Event]]:
        """Receive the events of the given types (all events when none are given) for
        which WHERE holds (e.g. hints of one resource only), so a subscriber's buffer
        holds only what it acts on.

        The subscription exists while the context is open; events published before it
        opened are not seen.
        """
        size = self._default_buffer if buffer is None else buffer
        if size < 1 or size == math.inf:
            raise ValueError("a subscriber buffer must be bounded and hold at least one event")
        send, receive = anyio.create_memory_object_stream[Event](size)
        sub = _Subscription(name, kinds, send, size, where)
        self._subscriptions.append(sub)
        try:
            async with receive:
                yield receive
        finally:
            self._remove(sub)
            send.close()

    def stats(self) -> list[SubscriberStats]:
        """A snapshot of every subscription's counters, queue depth included."""
        snapshot = []
        for sub in self._subscriptions:
            sub.stats.queued = sub.send.statistics().current_buffer_used
            snapshot.append(SubscriberStats(**vars(sub.stats)))
        return snapshot

    def _remove(self, sub: _Subscription) -> None:
        if sub in self._subscriptions:
            self._subscriptions.remove(sub)


async def next_burst(
    events: MemoryObjectReceiveStream[Event], *, wait: float, settle: float
) -> list[Event]:
    """The events of the next burst: wait up to WAIT seconds for one, then take every
    event that follows within SETTLE of it, so a burst makes one pass, not one each.
    Empty when WAIT passed quietly (a periodic pass is due)."""
    taken: list[Event] = []
    with anyio.move_on_after(wait):
        taken.append(await events.receive())
    if not taken:
        return taken
    await anyio.sleep(settle)
    while True:
        try:
            taken.append(events.receive_nowait())
        except anyio.WouldBlock:
            return taken
