"""The list-then-watch loop over a store: re-watch from the newest version, re-list on
410 Gone (finding what vanished meanwhile), keep the store across failures, give up on a
silent connection — and hint every change on the bus."""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import partial
from typing import Any

import anyio
import pytest

from gefyra_async.adapters.kube_watch import Gone, WatchSilent, watch_loop
from gefyra_async.core.bus import EventBus
from gefyra_async.core.events import Event, ObjectChanged, StoreSynced
from gefyra_async.core.store import Key, Store

pytestmark = pytest.mark.anyio


def obj(name: str, version: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "ns", "resourceVersion": version}}


class FakeServer:
    """Scripted list answers and watch streams; records the versions watched from."""

    def __init__(self, watches: list[list[tuple[str, dict[str, Any]] | str]]) -> None:
        self.lists = [([obj("a", "1"), obj("b", "2")], "2"), ([obj("a", "7")], "7")]
        self.watches = watches
        self.watched_from: list[str] = []
        self.done = anyio.Event()

    async def list_fn(self) -> tuple[list[dict[str, Any]], str]:
        return self.lists.pop(0)

    async def watch_fn(self, version: str) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        self.watched_from.append(version)
        if not self.watches:
            self.done.set()
            await anyio.sleep_forever()
        for item in self.watches.pop(0):
            if item == "gone":
                raise Gone
            if item == "broken":
                raise ConnectionResetError("cut")
            if item == "silent":
                await anyio.sleep_forever()
            assert not isinstance(item, str)
            yield item


def drained(events: Any) -> list[Event]:
    seen = []
    while True:
        try:
            seen.append(events.receive_nowait())
        except anyio.WouldBlock:
            return seen


def hints(seen: list[Event]) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    for e in seen:
        if isinstance(e, ObjectChanged):
            out.append(("deleted" if e.deleted else "changed", e.name))
        elif isinstance(e, StoreSynced):
            out.append(("synced", str(e.changed)))
    return out


async def test_watch_resumes_relists_on_gone_and_finds_what_vanished() -> None:
    bus, store = EventBus(), Store("x")
    server = FakeServer(
        [
            [("MODIFIED", obj("a", "3")), ("BOOKMARK", obj("", "4"))],  # then the call ends
            [("ADDED", obj("c", "5")), "gone"],  # then the version expires
            [],  # after the re-list
        ]
    )
    async with bus.subscribe() as events, anyio.create_task_group() as tg:
        watching = partial(watch_loop, server.list_fn, server.watch_fn, store=store, bus=bus)
        tg.start_soon(partial(watching, inactivity=5, relist_delay=0))
        with anyio.fail_after(5):
            await server.done.wait()
        tg.cancel_scope.cancel()
        seen = drained(events)

    assert hints(seen) == [
        ("synced", "2"),
        ("changed", "a"),
        ("changed", "c"),
        # the re-list after 410: a changed, b and c vanished while nobody watched
        ("synced", "3"),
    ]
    assert store.keys() == [Key("ns", "a")]
    assert store.get(Key("ns", "a")) == obj("a", "7")
    # Watched from the list's version, then from the bookmark's, then from the re-list's.
    assert server.watched_from == ["2", "4", "7", "7"]


async def test_a_failed_watch_is_resumed_from_the_kept_store_without_a_relist() -> None:
    bus, store = EventBus(), Store("x")
    server = FakeServer([[("DELETED", obj("b", "3")), "broken"], [("ADDED", obj("d", "4"))]])

    async def run() -> None:
        await watch_loop(server.list_fn, server.watch_fn, store=store, bus=bus, inactivity=5)

    with anyio.fail_after(5):
        with pytest.raises(ConnectionResetError):
            await run()
        # The supervisor starts the actor again, with the same store.
        async with anyio.create_task_group() as tg:
            tg.start_soon(run)
            await server.done.wait()
            tg.cancel_scope.cancel()
    assert store.lists == 1  # no second list: the deletion seen before the cut is kept
    assert store.keys() == [Key("ns", "a"), Key("ns", "d")]
    assert server.watched_from == ["2", "3", "4"]


async def test_a_silent_watch_gives_up_after_the_inactivity_limit() -> None:
    bus, store = EventBus(), Store("x")
    server = FakeServer([["silent"]])
    with anyio.fail_after(5), pytest.raises(WatchSilent):
        await watch_loop(server.list_fn, server.watch_fn, store=store, bus=bus, inactivity=0.05)
    assert store.version == "2"  # kept: the next run resumes from it
