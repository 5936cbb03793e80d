"""The cluster side cannot lose state: many pods, a fresh stowaway, a bridge still right.

The reproduction of a lost-state bug: stowaway used to build its view of the pods from bus
events only, and its first pod list published every pod of the cluster at once — past a
subscriber's buffer (256) the rest were dropped. With 600 Pending pods in a namespace that
sorts before the workload's, `bridge` reported "0/0 pods bridged [NoPods]" while the pod
ran, and nothing ever repaired it. Now the watches keep stores that the reconcilers read;
the bus carries hints only.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiodocker
import anyio
import pytest
from kubernetes_asyncio import client

from gefyra_async.adapters.kube_objects import Bridges
from gefyra_async.api.bridges import BridgeRequest, bridge
from gefyra_async.api.connection import down, up
from gefyra_async.api.context import Context
from gefyra_async.core import names
from tests.e2e.conftest import create_namespace
from tests.e2e.platform import Platform, poll, unique_name
from tests.e2e.test_bridge import http_from_caller, local_app, served_by, workload
from tests.e2e.test_connect import leftovers

CROWD = 600  # more than a bus subscriber's buffer (256) by far


@pytest.fixture
async def crowd(core: client.CoreV1Api, platform: Platform) -> AsyncIterator[str]:
    """CROWD pods that stay Pending (no node matches them), in a namespace whose name sorts
    before every test namespace (``t-...``): a pod list returns them first."""
    name = unique_name("a-crowd")
    await create_namespace(core, name)
    try:
        limit = anyio.Semaphore(16)

        async def one(i: int) -> None:
            pod: Any = {
                "metadata": {"name": f"idle-{i:04d}", "labels": {"app": "idle"}},
                "spec": {
                    "nodeSelector": {"gefyra-async.dev/no-such-node": "true"},
                    "containers": [
                        {"name": "main", "image": platform.base_image, "command": ["true"]}
                    ],
                },
            }
            async with limit:
                await core.create_namespaced_pod(name, pod)

        async with anyio.create_task_group() as tg:
            for i in range(CROWD):
                tg.start_soon(one, i)
        yield name
    finally:
        # Not waited for: Pending pods go fast, and no later test depends on it.
        await core.delete_namespace(name, grace_period_seconds=0)


async def stowaway_pod(core: client.CoreV1Api, ctx: Context) -> Any:
    selector = f"{names.COMPONENT}={names.STOWAWAY}"
    pods = await core.list_namespaced_pod(ctx.settings.namespace, label_selector=selector)
    live = [p for p in pods.items if not p.metadata.deletion_timestamp]
    return live[0] if len(live) == 1 else None


async def test_a_fresh_stowaway_among_many_pods_bridges_the_workload_and_keeps_it(
    ctx: Context,
    kube: client.ApiClient,
    core: client.CoreV1Api,
    namespace: str,
    crowd: str,
    platform: Platform,
    docker: aiodocker.Docker,
    report: Callable[[str], None],
) -> None:
    assert namespace > crowd  # the workload's pods come after the crowd in a pod list
    await workload(kube, namespace, platform)
    conn = await up(ctx, "e2e-crowd")
    local = unique_name("local")
    bridges = Bridges(ctx.api, ctx.settings)
    try:
        # The stowaway that `up` found or installed may have listed the pods before the
        # crowd existed: start a fresh one, whose first list holds every pod.
        old = await stowaway_pod(core, ctx)
        await core.delete_namespaced_pod(old.metadata.name, ctx.settings.namespace)

        async def fresh_stowaway_ready() -> Any:
            pod = await stowaway_pod(core, ctx)
            if pod is None or pod.metadata.name == old.metadata.name:
                return None
            ready = any(
                c.type == "Ready" and c.status == "True" for c in pod.status.conditions or []
            )
            return pod if ready else None

        await poll(fresh_stowaway_ready, within=120, what="a fresh stowaway pod Ready")
        await local_app(ctx, conn, platform, local)
        started = time.monotonic()
        made = await bridge(
            ctx, BridgeRequest("deploy/web", ["8080:8080"], local, namespace, connection=conn.name)
        )
        took = time.monotonic() - started
        assert made["status"]["bridgedText"] == "1/1", made["status"]
        assert await served_by(ctx, namespace, [{}], 5) == {local}

        # And again after another restart: the replacement's view is right from its first
        # pass, so the bridge never turns NoPods and the pod keeps being served locally.
        current = await stowaway_pod(core, ctx)
        await core.delete_namespaced_pod(current.metadata.name, ctx.settings.namespace)

        async def answered_locally_by_a_new_stowaway() -> bool | None:
            pod = await stowaway_pod(core, ctx)
            if pod is None or pod.metadata.name == current.metadata.name:
                return None
            answers = await http_from_caller(ctx, namespace, "web", [{}], 1, request_timeout=0.5)
            return True if all(a.get("served_by") == local for a in answers) else None

        await poll(
            answered_locally_by_a_new_stowaway, within=180, what="bridged again", interval=0.2
        )
        status = (await bridges.get(made["metadata"]["name"]) or {}).get("status") or {}
        ready = {c["type"]: c for c in status.get("conditions") or []}.get("Ready", {})
        assert (ready.get("status"), ready.get("reason")) == ("True", "Bridged"), status
        assert status.get("bridgedText") == "1/1"
        report(f"{CROWD} other pods: bridge() returned 1/1 bridged in {took:.2f}s")
    finally:
        await down(ctx, conn.name)
    assert await leftovers(ctx, docker) == []
