"""The pod-rewriter's view of one bridge while cargo has or has not reported (no cluster)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import SimpleNamespace
from typing import Any

import pytest
from kubernetes_asyncio.client import ApiClient

from gefyra_async.core import manifests
from gefyra_async.core.settings import Settings
from gefyra_async.core.store import Store
from gefyra_async.stowaway.pod_rewriter import PodRewriter

ADDRESS = "10.250.0.2"


@asynccontextmanager
async def rewriter(reported: dict[str, str] | None) -> AsyncIterator[PodRewriter]:
    """A pod-rewriter that never calls the API (Pod targets; the client is never used)."""
    async with ApiClient() as api:
        yield _rewriter(api, reported)


def _rewriter(api: ApiClient, reported: dict[str, str] | None) -> PodRewriter:
    control: Any = SimpleNamespace(
        cargo_heard={}, containers_of=lambda address: reported if address == ADDRESS else None
    )
    settings = Settings()
    clients, pods = Store("clients"), Store("pods")
    clients.replace(
        [
            {
                "metadata": {"name": "default", "namespace": settings.namespace, "uid": "uid-1"},
                "status": {"tunnelAddress": ADDRESS},
            }
        ],
        "1",
    )
    pod = {
        "metadata": {"name": "web-1", "namespace": "demo"},
        "spec": {
            "nodeName": "n",
            "containers": [{"name": "app", "ports": [{"containerPort": 8080}]}],
        },
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]},
    }
    pods.replace([pod], "1")
    return PodRewriter(
        settings, api, control, pod_ip="10.244.0.9", control_address="x", carrier_image="i",
        secret="s", pods=pods, bridges=Store("bridges"), clients=clients,
    )  # fmt: skip


def bridge(last_address: str | None) -> dict[str, Any]:
    obj = manifests.bridge(
        Settings(),
        "b1",
        client="default",
        client_uid="uid-1",
        target={"namespace": "demo", "kind": "Pod", "name": "web-1", "container": "app"},
        ports=[{"remote": 8080, "local": 8000}],
        local_container="local-b1",
        rules=[],
    )
    obj["metadata"].update(creationTimestamp="2026-01-01T00:00:00Z", uid="uid-b1")
    if last_address:
        obj["status"] = {"destination": {"container": "local-b1", "address": last_address}}
    return obj


@pytest.mark.anyio
async def test_a_stowaway_not_yet_reported_to_keeps_the_bridge_on_its_last_address() -> None:
    async with rewriter(None) as r:
        plan = await r._plan(bridge("172.30.0.7"))
    assert plan is not None
    assert (plan.destination, plan.problem) == ("172.30.0.7", "")
    assert plan.pods == ["demo/web-1"]


@pytest.mark.anyio
async def test_without_a_last_address_it_waits_for_cargo() -> None:
    async with rewriter(None) as r:
        plan = await r._plan(bridge(None))
    assert plan is not None
    assert (plan.destination, plan.reason) == (None, "WaitingForCargo")


@pytest.mark.anyio
async def test_cargos_report_wins_over_the_last_address() -> None:
    async with rewriter({"local-b1": "172.30.0.9"}) as r:
        plan = await r._plan(bridge("172.30.0.7"))
    assert plan is not None
    assert plan.destination == "172.30.0.9"


@pytest.mark.anyio
async def test_a_client_never_heard_since_stowaway_started_is_gone_after_the_limit() -> None:
    async with rewriter(None) as r:
        r.client_seen["uid-1"] = time.monotonic() - Settings().client_silence_limit - 1
        plan = await r._plan(bridge("172.30.0.7"))
    assert plan is not None
    assert plan.reason == "ClientGone"
