"""Kubernetes watches done right (kopf's ``_cogs/clients/watching.py``, client-go's
reflector): list into a store, watch from the list's resourceVersion, resume from the
newest version seen, re-list when the server says 410 Gone, and give up on a connection
that went silent.

The store (``core/store``) is the truth the reconcilers read; it outlives a failed watch
(the actor is restarted with the same store, and resumes from its version), and a re-list
after a gap detects what was deleted meanwhile. The bus gets keyed hints only:
``ObjectChanged`` per change, one ``StoreSynced`` per full list.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from typing import Any

import anyio
import structlog
from kubernetes_asyncio import watch
from kubernetes_asyncio.client import ApiClient, ApiException

from gefyra_async.core.bus import EventBus
from gefyra_async.core.events import ObjectChanged, StoreSynced
from gefyra_async.core.store import Key, Store

log = structlog.get_logger(__name__)


class Gone(Exception):  # noqa: N818 - named after the HTTP status it stands for
    """The resourceVersion is too old (HTTP 410): list again."""


class WatchSilent(Exception):  # noqa: N818 - a condition, like Gone
    """No event (not even a bookmark or the server's end of the call) within the
    inactivity limit: the connection is presumed dead."""


ListFn = Callable[[], Awaitable[tuple[list[dict[str, Any]], str]]]
WatchFn = Callable[[str], AsyncIterator[tuple[str, dict[str, Any]]]]


async def watch_loop(
    list_fn: ListFn,
    watch_fn: WatchFn,
    *,
    store: Store,
    bus: EventBus,
    inactivity: float,
    relist_delay: float = 1.0,
) -> None:
    """Keep STORE equal to the server's view of its resource until cancelled, and hint
    every change on BUS. A failure other than 410 Gone is raised (the supervisor restarts
    the actor with the same store, which resumes from its version)."""
    resource = store.resource

    def hint(key: Key, deleted: bool) -> None:
        bus.publish(
            ObjectChanged(
                resource=resource, namespace=key.namespace, name=key.name, deleted=deleted
            )
        )

    while True:
        if store.version is None:
            items, version = await list_fn()
            changed = store.replace(items, version)
            log.debug("store listed", resource=resource, objects=len(store), changed=len(changed))
            bus.publish(StoreSynced(resource=resource, changed=len(changed)))
        try:
            async for type_, obj in _each_within(watch_fn(store.version or ""), inactivity):
                key = store.apply(type_, obj)
                if key is not None:
                    hint(key, type_ == "DELETED")
        except Gone:
            log.info("watch expired, listing again", resource=resource)
            store.version = None
            await anyio.sleep(relist_delay)


async def _each_within(
    events: AsyncIterator[tuple[str, dict[str, Any]]], limit: float
) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """EVENTS, failing with WatchSilent when the next one takes longer than LIMIT."""
    try:
        while True:
            with anyio.move_on_after(limit) as scope:
                try:
                    event = await anext(events)
                except StopAsyncIteration:
                    return
            if scope.cancelled_caught:
                raise WatchSilent(f"no watch event for {limit:g} s")
            yield event
    finally:
        closing = getattr(events, "aclose", None)
        if closing is not None:
            with anyio.move_on_after(5, shield=True):
                await closing()


def list_and_watch(
    api: ApiClient, list_call: Callable[..., Any], *, timeout_seconds: int = 300
) -> tuple[ListFn, WatchFn]:
    """The list and watch functions of a kubernetes_asyncio list method (a partial with
    its namespace, or group/version/namespace/plural for custom objects)."""

    def plain(obj: Any) -> dict[str, Any]:
        data: dict[str, Any] = obj if isinstance(obj, dict) else api.sanitize_for_serialization(obj)
        return data

    async def list_fn() -> tuple[list[dict[str, Any]], str]:
        result = await list_call()
        if isinstance(result, dict):
            return [plain(o) for o in result.get("items", [])], str(
                result["metadata"]["resourceVersion"]
            )
        return [plain(o) for o in result.items], str(result.metadata.resource_version)

    async def watch_fn(version: str) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        stream = watch.Watch()
        try:
            async for event in stream.stream(
                list_call,
                resource_version=version,
                timeout_seconds=timeout_seconds,
                allow_watch_bookmarks=True,
            ):
                raw = event.get("raw_object") or plain(event.get("object"))
                if event["type"] == "ERROR":
                    if raw.get("code") == 410:
                        raise Gone
                    raise RuntimeError(f"watch error: {raw.get('message')}")
                yield event["type"], raw
        except ApiException as exc:
            if exc.status == 410:
                raise Gone from None
            raise
        finally:
            await stream.close()

    return list_fn, watch_fn


def custom_objects_list(
    api: ApiClient, group: str, version: str, namespace: str, plural: str
) -> Any:
    from kubernetes_asyncio.client import CustomObjectsApi

    return partial(
        CustomObjectsApi(api).list_namespaced_custom_object, group, version, namespace, plural
    )
