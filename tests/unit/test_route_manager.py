"""Cargo's route manager: which netns holders have lost their app."""

from __future__ import annotations

from gefyra_async.adapters.containers import ContainerInfo, _epoch
from gefyra_async.cargo.routes import orphaned_holders
from gefyra_async.core import names


def container(
    name: str, role: str, created: float, connection: str = "c1", app: str = ""
) -> ContainerInfo:
    labels = {names.CONNECTION: connection, names.ROLE: role}
    if app:
        labels[names.APP] = app
    return ContainerInfo(
        id=name, name=name, running=True, pid=1, labels=labels, networks={}, created=created
    )


def test_a_holder_without_its_app_is_an_orphan_once_older_than_the_grace() -> None:
    containers = [
        container("web", names.ROLE_APP, 0),
        container("web-netns", names.ROLE_HOLDER, 0, app="web"),
        container("gone-netns", names.ROLE_HOLDER, 0, app="gone"),
        # `run` is between creating the holder and its app: not an orphan yet.
        container("young-netns", names.ROLE_HOLDER, 990, app="young"),
        # Another connection's holder is none of this cargo's business.
        container("other-netns", names.ROLE_HOLDER, 0, connection="c2", app="x"),
        container("gefyra-async-cargo-c1", "cargo", 0),
    ]
    orphans = orphaned_holders(containers, "c1", now=1000, grace=60)
    assert [c.name for c in orphans] == ["gone-netns"]


def test_an_app_of_the_same_name_in_another_connection_does_not_keep_a_holder() -> None:
    containers = [
        container("web", names.ROLE_APP, 0, connection="c2"),
        container("web-netns", names.ROLE_HOLDER, 0, app="web"),
    ]
    assert [c.name for c in orphaned_holders(containers, "c1", 1000, 60)] == ["web-netns"]


def test_docker_creation_times_in_both_of_dockers_formats() -> None:
    assert _epoch(1_700_000_000) == 1_700_000_000.0
    assert _epoch("2023-11-14T22:13:20.123456789Z") == 1_700_000_000.123456
    assert _epoch("") == 0.0
    assert _epoch(None) == 0.0
