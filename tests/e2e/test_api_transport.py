"""A tunnel that needs no UDP: with the tunnel's UDP dropped on the way to the node, `up`
carries it through the Kubernetes API server (a port-forward to stowaway), local
containers reach Services by DNS name and a header bridge works; once UDP passes again
the tunnel goes back to it, and the bridge keeps answering throughout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import aiodocker
import anyio
import pytest
from kubernetes_asyncio import client

from gefyra_async.api import transport as transport_api
from gefyra_async.api.bridges import BridgeRequest, bridge, header_rule
from gefyra_async.api.connection import get_connection
from gefyra_async.api.context import Context
from gefyra_async.api.runner import RunSpec, run
from tests.e2e.platform import Platform, poll, unique_name
from tests.e2e.test_bridge import http_from_caller, local_app, workload
from tests.e2e.test_connect import leftovers, post_through_tunnel

BLOCK_COMMENT = "gefyra-async-e2e-udp-blocked"


@contextmanager
def udp_blocked(platform: Platform) -> Iterator[Callable[[], None]]:
    """Drop every UDP datagram from connection networks to the node (the tunnel's NodePort
    and the probe port), as a firewall in front of private nodes would; yields unblock()."""
    rule = ["PREROUTING", "-s", "172.30.0.0/16", "-d", platform.node_ip, "-p", "udp",
            "-m", "comment", "--comment", BLOCK_COMMENT, "-j", "DROP"]  # fmt: skip
    subprocess.run(["iptables", "-t", "mangle", "-I", *rule], check=True)
    blocked = [True]

    def unblock() -> None:
        if blocked[0]:
            subprocess.run(["iptables", "-t", "mangle", "-D", *rule], check=True)
            blocked[0] = False

    try:
        yield unblock
    finally:
        unblock()


def dropped(platform: Platform) -> int:
    out = subprocess.run(
        ["iptables", "-t", "mangle", "-L", "PREROUTING", "-v", "-n", "-x"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return sum(int(line.split()[0]) for line in out.splitlines() if BLOCK_COMMENT in line)


async def cli(platform: Platform, *args: str) -> tuple[int, str, str]:
    env = {**os.environ, "GEFYRA_ASYNC_UDP_RETRY_PERIOD": "5"}
    command = [sys.executable, "-m", "gefyra_async.cli", "--kubeconfig", str(platform.kubeconfig)]
    with anyio.fail_after(180):
        done = await anyio.run_process([*command, *args], check=False, env=env)
    return done.returncode, done.stdout.decode(), done.stderr.decode()


async def status_of(platform: Platform, name: str) -> dict[str, Any]:
    code, out, err = await cli(platform, "status", "-o", "json")
    assert code == 0, err
    rows = {r["name"]: r for r in json.loads(out)}
    return rows.get(name) or {}


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping the tunnel's UDP needs root")
async def test_udp_blocked_tunnel_goes_through_the_api_server_and_back(
    ctx: Context,
    kube: client.ApiClient,
    namespace: str,
    platform: Platform,
    docker: aiodocker.Docker,
    report: Callable[[str], None],
) -> None:
    await workload(kube, namespace, platform)
    name = "e2e-api"
    with udp_blocked(platform) as unblock:
        started = time.monotonic()
        code, out, err = await cli(platform, "up", "--detach", "--name", name)
        took = time.monotonic() - started
        try:
            assert code == 0, err
            assert "through the Kubernetes API server" in out, out
            assert "no WireGuard handshake over UDP" in err, err
            row = await status_of(platform, name)
            assert (row["transport"], row["connected"]) == ("api", True), row
            assert row["transportProcess"], row
            assert dropped(platform) > 0  # UDP really was tried, and dropped
            report(f"up with UDP blocked (6 s UDP wait, then the API transport): {took:.1f}s")

            conn = await get_connection(ctx, name)
            assert conn is not None
            # A local container reaches a Service by its DNS name; 10 MB of it crossed the
            # tunnel, which now rides the port-forward.
            app = unique_name("api-app")
            await run(ctx, conn, RunSpec(image=platform.base_image, name=app, namespace=namespace,
                                         command=["sleep", "infinity"]))  # fmt: skip
            await post_through_tunnel(docker, app, conn.cargo, "http://web/", 10_000_000)

            # A header bridge through the same tunnel.
            local = await local_app(ctx, conn, platform, unique_name("api-local"))
            await bridge(
                ctx,
                BridgeRequest(
                    "deploy/web",
                    ["8080:8080"],
                    local,
                    namespace,
                    rules=[header_rule("X-Dev=api")],
                    connection=name,
                ),
            )
            specs = [{"headers": {"X-Dev": "api"}}, {}]
            answers = await http_from_caller(ctx, namespace, "web", specs, 10)
            assert {a.get("served_by") for a in answers[0::2]} == {local}, answers
            assert local not in {a.get("served_by") for a in answers[1::2]}, answers

            # UDP passes again: the tunnel goes back to it by itself, and the bridge keeps
            # answering while it does (requests every moment, none may fail).
            unblock()
            switched_at: list[float] = []

            async def back_on_udp() -> bool | None:
                row = await status_of(platform, name)
                if row.get("transport") == "udp":
                    switched_at.append(time.monotonic())
                    return True
                return None

            unblocked = time.monotonic()
            async with anyio.create_task_group() as tg:
                results: list[dict[str, Any]] = []

                async def requests() -> None:
                    while not switched_at or time.monotonic() - switched_at[0] < 3:
                        results.extend(await http_from_caller(ctx, namespace, "web", specs, 10))

                tg.start_soon(requests)
                await poll(back_on_udp, within=60, what="the tunnel back on UDP")
            errors = [r for r in results if "error" in r]
            assert not errors, errors
            assert {a.get("served_by") for a in results[0::2]} == {local}
            report(
                f"UDP unblocked → back on UDP after {switched_at[0] - unblocked:.1f}s "
                f"(probe period 5 s); {len(results)} bridged/original requests meanwhile, 0 failed"
            )

            # The transport process ended once UDP carried the tunnel.
            async def process_gone() -> bool | None:
                return (
                    True if not (await status_of(platform, name)).get("transportProcess") else None
                )

            await poll(process_gone, within=30, what="the API transport process ended")
        finally:
            await cli(platform, "down", "--name", name)
    assert await leftovers(ctx, docker) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="reading iptables counters needs root")
async def test_transport_api_is_chosen_at_once_and_stays(
    ctx: Context, platform: Platform, docker: aiodocker.Docker, report: Callable[[str], None]
) -> None:
    name = "e2e-api-only"
    started = time.monotonic()
    code, out, err = await cli(platform, "up", "--detach", "--name", name, "--transport", "api")
    took = time.monotonic() - started
    try:
        assert code == 0, err
        assert "through the Kubernetes API server" in out, out
        report(f"up --transport api: {took:.1f}s")
        row = await status_of(platform, name)
        assert row["transport"] == "api", row
        assert row["transportProcess"], row
        # UDP works here, yet --transport api keeps the tunnel on the API server: watched
        # over more than one UDP probe period (5 s), it never moves.
        seen = set()
        with anyio.move_on_after(8):
            while True:
                seen.add((await status_of(platform, name)).get("transport"))
        assert seen == {"api"}, seen
    finally:
        code, out, err = await cli(platform, "down", "--name", name)
    assert code == 0, err
    assert f"transport-process/{name}" in out, out
    assert transport_api.detached_pid(name) is None
    assert await leftovers(ctx, docker) == []
