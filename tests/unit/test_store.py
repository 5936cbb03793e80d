"""The watch store: keys, namespaces, versions, and what a re-list finds changed."""

from __future__ import annotations

from typing import Any

from gefyra_async.core.store import Key, Store


def obj(ns: str, name: str, version: str, **extra: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": ns, "resourceVersion": version}, **extra}


def test_replace_reports_added_changed_and_vanished_keys_only() -> None:
    ticks = iter(range(100))
    store = Store("pods", clock=lambda: float(next(ticks)))
    assert not store.synced
    assert store.replace([obj("a", "p1", "1"), obj("b", "p2", "1")], "5") == {
        Key("a", "p1"),
        Key("b", "p2"),
    }
    assert store.synced
    assert store.version == "5"
    # p1 unchanged, p2 gone while nobody watched, p3 new.
    changed = store.replace([obj("a", "p1", "1"), obj("a", "p3", "2")], "9")
    assert changed == {Key("b", "p2"), Key("a", "p3")}
    assert store.keys() == [Key("a", "p1"), Key("a", "p3")]
    assert store.objects("b") == []
    assert [o["metadata"]["name"] for o in store.objects("a")] == ["p1", "p3"]
    assert store.updated_at(Key("a", "p1")) == 0.0  # not touched by the unchanged re-list


def test_apply_moves_the_version_and_ignores_unknown_deletions() -> None:
    store = Store("pods")
    store.replace([], "1")
    assert store.apply("ADDED", obj("a", "p", "2")) == Key("a", "p")
    assert store.apply("MODIFIED", obj("a", "p", "3", spec={"x": 1})) == Key("a", "p")
    assert store.get(Key("a", "p"))["spec"] == {"x": 1}  # type: ignore[index]
    assert store.apply("BOOKMARK", {"metadata": {"resourceVersion": "4"}}) is None
    assert store.version == "4"
    assert store.apply("DELETED", obj("a", "other", "5")) is None
    assert store.apply("DELETED", obj("a", "p", "6")) == Key("a", "p")
    assert len(store) == 0
    assert store.version == "6"
    assert store.objects("a") == []


def test_keys_print_and_parse_as_namespace_slash_name() -> None:
    assert str(Key("ns", "p")) == "ns/p"
    assert Key.parse("ns/p") == Key("ns", "p")
    assert str(Key("", "cluster-wide")) == "cluster-wide"
    assert Key.parse("cluster-wide") == Key("", "cluster-wide")
