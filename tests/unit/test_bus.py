"""The event bus: fan-out, filtering, bounded buffers with visible drops."""

from __future__ import annotations

import anyio
import pytest

from gefyra_async.core.bus import EventBus
from gefyra_async.core.events import ContainerEvent, Event, Resync, TunnelHealth

pytestmark = pytest.mark.anyio


def container(name: str, action: str = "start") -> ContainerEvent:
    return ContainerEvent(container_id=name * 4, name=name, action=action)


async def test_every_subscriber_gets_every_event_in_order() -> None:
    bus = EventBus()
    async with bus.subscribe(name="a") as a, bus.subscribe(name="b") as b:
        sent = [container("one"), Resync(), container("two")]
        for event in sent:
            bus.publish(event)
        assert [await a.receive() for _ in sent] == sent
        assert [await b.receive() for _ in sent] == sent


async def test_subscription_filters_by_event_type() -> None:
    bus = EventBus()
    async with bus.subscribe(ContainerEvent, TunnelHealth, name="picky") as picky:
        bus.publish(Resync())
        bus.publish(container("x"))
        bus.publish(TunnelHealth(interface="wg0", healthy=False, reason="no handshake"))
        first, second = await picky.receive(), await picky.receive()
        assert (first.kind, second.kind) == ("ContainerEvent", "TunnelHealth")
        with pytest.raises(anyio.WouldBlock):
            picky.receive_nowait()
    # The subscription ended with its context.
    assert [s.name for s in bus.stats()] == []


async def test_full_buffer_drops_for_that_subscriber_only_and_counts() -> None:
    bus = EventBus()
    async with bus.subscribe(name="slow", buffer=2) as slow, bus.subscribe(name="fast") as fast:
        for i in range(5):
            bus.publish(container(f"c{i}"))
        stats = {s.name: s for s in bus.stats()}
        assert (stats["slow"].delivered, stats["slow"].dropped, stats["slow"].queued) == (2, 3, 2)
        assert (stats["fast"].delivered, stats["fast"].dropped) == (5, 0)
        # The slow one keeps the oldest events; the newer ones were dropped.
        received = [await slow.receive(), await slow.receive()]
        assert [e.name for e in received if isinstance(e, ContainerEvent)] == ["c0", "c1"]
        assert len([await fast.receive() for _ in range(5)]) == 5
    assert bus.published == 5


async def test_events_published_before_subscribing_are_not_seen() -> None:
    bus = EventBus()
    bus.publish(Resync(reason="early"))
    async with bus.subscribe() as late:
        bus.publish(Resync(reason="late"))
        event = await late.receive()
        assert isinstance(event, Resync)
        assert event.reason == "late"


async def test_consumer_task_receives_while_producer_publishes() -> None:
    bus = EventBus()
    got: list[Event] = []
    async with anyio.create_task_group() as tg, bus.subscribe(buffer=1) as stream:

        async def consume() -> None:
            async for event in stream:
                got.append(event)
                if len(got) == 3:
                    return

        tg.start_soon(consume)
        for i in range(3):
            bus.publish(container(f"c{i}"))
            await anyio.wait_all_tasks_blocked()
    assert [e.name for e in got if isinstance(e, ContainerEvent)] == ["c0", "c1", "c2"]


def test_unbounded_or_empty_buffers_are_refused() -> None:
    with pytest.raises(ValueError, match="at least one"):
        EventBus(default_buffer=0)


async def test_subscribe_refuses_unbounded_buffer() -> None:
    bus = EventBus()
    with pytest.raises(ValueError, match="bounded"):
        async with bus.subscribe(buffer=0):
            pass


async def test_bus_monitor_reports_drops_once_per_increase() -> None:
    from structlog.testing import capture_logs

    from gefyra_async.actors.bus_monitor import BusMonitor

    bus = EventBus()
    async with bus.subscribe(name="slow", buffer=1), anyio.create_task_group() as tg:
        with capture_logs() as logs:
            tg.start_soon(BusMonitor(period=0.01).run, bus)
            for i in range(3):
                bus.publish(container(f"c{i}"))
            await anyio.sleep(0.05)
            tg.cancel_scope.cancel()
    reports = [entry for entry in logs if entry["event"] == "bus subscriber dropped events"]
    assert [(r["subscriber"], r["dropped"], r["queued"]) for r in reports] == [("slow", 2, 1)]
