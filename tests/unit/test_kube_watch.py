"""The list-then-watch loop: re-watch from the newest version, re-list on 410 Gone,
synthesize DELETED for objects that vanished while nobody watched."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

from gefyra_async.adapters.kube_watch import Gone, watch_loop
from gefyra_async.core.bus import EventBus
from gefyra_async.core.events import KubeObjectEvent

pytestmark = pytest.mark.anyio


def obj(name: str, version: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "ns", "resourceVersion": version}}


class FakeServer:
    """Scripted list answers and watch streams; records the versions watched from."""

    def __init__(self) -> None:
        self.lists = [([obj("a", "1"), obj("b", "2")], "2"), ([obj("a", "7")], "7")]
        self.watches: list[list[tuple[str, dict[str, Any]] | str]] = [
            [("MODIFIED", obj("a", "3")), ("BOOKMARK", obj("", "4"))],  # then the call ends
            [("ADDED", obj("c", "5")), "gone"],  # then the version expires
            [],  # after the re-list
        ]
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
            assert not isinstance(item, str)
            yield item


async def test_watch_resumes_relists_on_gone_and_reports_vanished_objects() -> None:
    bus, server = EventBus(), FakeServer()
    async with bus.subscribe(KubeObjectEvent) as events, anyio.create_task_group() as tg:
        tg.start_soon(
            lambda: watch_loop(
                server.list_fn, server.watch_fn, resource="x", bus=bus, relist_delay=0
            )
        )
        with anyio.fail_after(5):
            await server.done.wait()
        tg.cancel_scope.cancel()
        seen = []
        while True:
            try:
                e = events.receive_nowait()
            except anyio.WouldBlock:
                break
            assert isinstance(e, KubeObjectEvent)
            seen.append((e.type, e.name, e.resource_version, e.relisted))

    assert seen == [
        ("ADDED", "a", "1", True),
        ("ADDED", "b", "2", True),
        ("MODIFIED", "a", "3", False),
        ("ADDED", "c", "5", False),
        # the re-list after 410: a changed, b and c vanished meanwhile
        ("ADDED", "a", "7", True),
        ("DELETED", "b", "2", True),
        ("DELETED", "c", "5", True),
    ]
    # Watched from the list's version, then from the bookmark's, then from the re-list's.
    assert server.watched_from == ["2", "4", "7", "7"]
