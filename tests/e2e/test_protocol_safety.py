"""Protocol safety of rule-based bridges: what is not HTTP/1 reaches the original app at once.

Header and path rules route HTTP/1 requests. Before, carrier held every connection of a
rule-based port until a request head arrived: a TLS ClientHello hung until the client gave
up, HTTP/2 with prior knowledge got an empty reply seconds later. Now such a connection is
handed to the original app as it is, within the sniff time, while HTTP/1 requests are
still routed by their rules — on the same port, at the same time.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import aiodocker
from kubernetes_asyncio import client

from gefyra_async.adapters.kube_objects import exec_in_pod
from gefyra_async.api.bridges import BridgeRequest, bridge, header_rule
from gefyra_async.api.connection import down, up
from gefyra_async.api.context import Context
from tests.e2e.platform import Platform, unique_name
from tests.e2e.test_bridge import local_app, ready_pods, served_by, workload
from tests.e2e.test_connect import leftovers

# Opens a connection, sends OPENING (hex), reads one line; prints the line and the time.
OPENING = """
import json, socket, sys, time
host, port, opening = sys.argv[1], int(sys.argv[2]), bytes.fromhex(sys.argv[3])
t0 = time.perf_counter()
s = socket.create_connection((host, port), timeout=10)
s.sendall(opening)
try:
    line = s.makefile("rb").readline().decode("latin-1").strip()
except OSError as exc:
    line = "error: " + repr(exc)
print("RESULT", json.dumps({"line": line, "seconds": time.perf_counter() - t0}))
"""

# A TLS 1.2 record header + ClientHello start, then a newline so that the demo's line
# echo (the original app) has a line to answer: only the first bytes matter to carrier.
TLS_HELLO = bytes.fromhex("16030100f8010000f40303") + b"\x11" * 32 + b"\n"
HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


async def opening(ctx: Context, namespace: str, port: int, data: bytes) -> dict[str, Any]:
    out = await exec_in_pod(
        ctx.api,
        namespace,
        "caller",
        "main",
        ["python3", "-c", OPENING, "web", str(port), data.hex()],
    )
    result: dict[str, Any] = json.loads(out.split("RESULT", 1)[1])
    return result


async def test_tls_http2_and_other_protocols_reach_the_original_app_at_once(
    ctx: Context,
    kube: client.ApiClient,
    core: client.CoreV1Api,
    namespace: str,
    platform: Platform,
    docker: aiodocker.Docker,
    report: Callable[[str], None],
) -> None:
    await workload(kube, namespace, platform)
    [pod] = await ready_pods(core, namespace, "web", 1) or []
    original = pod.metadata.name
    conn = await up(ctx, "e2e-protocols")
    local = unique_name("local")
    try:
        await local_app(ctx, conn, platform, local)
        # Both ports under header rules: HTTP (80 → 8080) and the line echo (9000).
        await bridge(
            ctx,
            BridgeRequest(
                "deploy/web", ["8080:8080", "9000:9000"], local, namespace,
                rules=[header_rule("X-Dev=me")], connection=conn.name,
            ),
        )  # fmt: skip
        assert await served_by(ctx, namespace, [{"headers": {"X-Dev": "me"}}], 3) == {local}

        # HTTP/2 with prior knowledge: the app reads the preface as a request line.
        h2 = await opening(ctx, namespace, 80, HTTP2_PREFACE)
        assert h2["line"] == "HTTP/1.1 200 OK", h2
        # The TLS ClientHello and a plain line protocol on the echo port: the app echoes.
        tls = await opening(ctx, namespace, 9000, TLS_HELLO)
        assert tls["line"].startswith(original), tls
        plain = await opening(ctx, namespace, 9000, b"hello over tcp\n")
        assert plain["line"] == f"{original}: hello over tcp", plain
        # Not held waiting for a request head (it used to be until the client gave up).
        for result in (h2, tls, plain):
            assert result["seconds"] < 5, result
        # Meanwhile HTTP/1 on the same port is still routed by the rules.
        specs: list[dict[str, Any]] = [{"headers": {"X-Dev": "me"}}, {}]
        assert await served_by(ctx, namespace, specs[:1], 3) == {local}
        assert await served_by(ctx, namespace, specs[1:], 3) == {original}
        report(
            "first answer through a header bridge: HTTP/2 preface "
            f"{h2['seconds'] * 1000:.0f} ms, TLS ClientHello {tls['seconds'] * 1000:.0f} ms, "
            f"plain line {plain['seconds'] * 1000:.0f} ms"
        )
    finally:
        await down(ctx, conn.name)
    assert await leftovers(ctx, docker) == []
