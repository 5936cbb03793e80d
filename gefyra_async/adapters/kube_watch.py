"""Kubernetes watches done right: list, then watch from the list's resourceVersion,
re-watch from the newest version seen, and re-list when the server says 410 Gone.

Objects that vanished while nobody watched are reported as DELETED after a re-list, so
a consumer's view converges whatever was missed. Every object goes onto the bus as a
``KubeObjectEvent`` (plain dicts, never client models).
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
from gefyra_async.core.events import KubeObjectEvent

log = structlog.get_logger(__name__)


class Gone(Exception):  # noqa: N818 - named after the HTTP status it stands for
    """The resourceVersion is too old (HTTP 410): list again."""


ListFn = Callable[[], Awaitable[tuple[list[dict[str, Any]], str]]]
WatchFn = Callable[[str], AsyncIterator[tuple[str, dict[str, Any]]]]


def _key(obj: dict[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return meta.get("namespace") or "", meta.get("name") or ""


async def watch_loop(
    list_fn: ListFn, watch_fn: WatchFn, *, resource: str, bus: EventBus, relist_delay: float = 1.0
) -> None:
    """Run until cancelled, publishing every change of RESOURCE."""
    known: dict[tuple[str, str], dict[str, Any]] = {}

    def publish(type_: str, obj: dict[str, Any], relisted: bool = False) -> None:
        ns, name = _key(obj)
        bus.publish(
            KubeObjectEvent(
                resource=resource,
                namespace=ns,
                name=name,
                type=type_,
                resource_version=str((obj.get("metadata") or {}).get("resourceVersion", "")),
                obj=obj,
                relisted=relisted,
            )
        )

    version: str | None = None
    while True:
        if version is None:
            items, version = await list_fn()
            listed = {_key(o): o for o in items}
            for obj in listed.values():
                publish("ADDED", obj, relisted=True)
            for key in sorted(set(known) - set(listed)):
                publish("DELETED", known[key], relisted=True)
            known = listed
        try:
            async for type_, obj in watch_fn(version):
                version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
                if type_ == "BOOKMARK":
                    continue
                if type_ == "DELETED":
                    known.pop(_key(obj), None)
                else:
                    known[_key(obj)] = obj
                publish(type_, obj)
        except Gone:
            log.info("watch expired, listing again", resource=resource)
            version = None
            await anyio.sleep(relist_delay)


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
