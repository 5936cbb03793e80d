"""Watch stores: what the API server said last about every object of one resource.

An informer keeps one store per watched resource (controller-runtime's cache, kopf's
per-resource state): the list fills it, the watch's changes update it, a re-list after a
gap replaces it and so detects what was deleted meanwhile. Reconcilers read the store;
the bus only carries keyed hints ("pods ns/name changed"), which a busy subscriber may
drop without ever making its view wrong — it reads the store on its next pass.

The watch writes through ``Store``; actors get it as a ``StoreView``, which cannot
write. Pure logic, no I/O.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple, Protocol


class Key(NamedTuple):
    """An object's identity within its resource; ``namespace`` is "" when cluster-scoped."""

    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}" if self.namespace else self.name

    @classmethod
    def parse(cls, text: str) -> Key:
        namespace, _, name = text.rpartition("/")
        return cls(namespace, name)

    @classmethod
    def of(cls, obj: dict[str, Any]) -> Key:
        meta = obj.get("metadata") or {}
        return cls(str(meta.get("namespace") or ""), str(meta.get("name") or ""))


def _version(obj: dict[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")


class StoreView(Protocol):
    """A store as its readers see it."""

    resource: str

    @property
    def synced(self) -> bool:
        """Whether a full list has been taken at least once (before that it is empty)."""

    def get(self, key: Key) -> dict[str, Any] | None:
        """The object as last seen, or None; never modify what it returns."""

    def objects(self, namespace: str | None = None) -> list[dict[str, Any]]:
        """Every object (of NAMESPACE only, when given), in key order."""

    def keys(self) -> list[Key]: ...

    def updated_at(self, key: Key) -> float | None:
        """When (monotonic) the object's current version arrived."""

    def __len__(self) -> int: ...


class Store:
    """The objects of one resource by key, with the resourceVersion to watch from."""

    def __init__(self, resource: str, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.resource = resource
        self.version: str | None = None  # of the last list or change; where a watch resumes
        self._objects: dict[Key, dict[str, Any]] = {}
        self._by_namespace: dict[str, set[Key]] = {}
        self._updated: dict[Key, float] = {}
        self._synced = False
        self._clock = clock
        self.lists = 0  # full lists taken, for tests and status views

    # ---- reading (StoreView) ----

    @property
    def synced(self) -> bool:
        return self._synced

    def get(self, key: Key) -> dict[str, Any] | None:
        return self._objects.get(key)

    def objects(self, namespace: str | None = None) -> list[dict[str, Any]]:
        keys: Iterable[Key] = (
            self._objects if namespace is None else self._by_namespace.get(namespace, ())
        )
        return [self._objects[k] for k in sorted(keys)]

    def keys(self) -> list[Key]:
        return sorted(self._objects)

    def updated_at(self, key: Key) -> float | None:
        return self._updated.get(key)

    def __len__(self) -> int:
        return len(self._objects)

    # ---- writing (the watch) ----

    def replace(self, items: Iterable[dict[str, Any]], version: str) -> set[Key]:
        """Take a full list; the keys that were added, changed or deleted since the last
        view (deleted: in the store, not in the list — gone while nobody watched)."""
        listed = {Key.of(obj): obj for obj in items}
        changed = set(self._objects) - set(listed)
        for key in changed:
            self._forget(key)
        for key, obj in listed.items():
            old = self._objects.get(key)
            if old is None or _version(old) != _version(obj) or not _version(obj):
                self._put(key, obj)
                changed.add(key)
        self.version = version
        self._synced = True
        self.lists += 1
        return changed

    def apply(self, type_: str, obj: dict[str, Any]) -> Key | None:
        """Take one watch event (ADDED, MODIFIED, DELETED; BOOKMARK only moves the
        version); the key it changed, or None."""
        self.version = _version(obj) or self.version
        if type_ == "BOOKMARK":
            return None
        key = Key.of(obj)
        if type_ == "DELETED":
            if key not in self._objects:
                return None
            self._forget(key)
            return key
        self._put(key, obj)
        return key

    def _put(self, key: Key, obj: dict[str, Any]) -> None:
        self._objects[key] = obj
        self._by_namespace.setdefault(key.namespace, set()).add(key)
        self._updated[key] = self._clock()

    def _forget(self, key: Key) -> None:
        self._objects.pop(key, None)
        self._updated.pop(key, None)
        keys = self._by_namespace.get(key.namespace)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._by_namespace[key.namespace]
