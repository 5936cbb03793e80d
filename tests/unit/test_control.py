"""stowaway's control server on loopback: carriers come and go, the server stays."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from typing import Any

import anyio
import pytest

from gefyra_async.core.bus import EventBus
from gefyra_async.core.control_plane import carrier_token, silence
from gefyra_async.stowaway.control import ControlServer

pytestmark = pytest.mark.anyio
SECRET = "s3cret"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def carrier(port: int, pod: str, token: str | None = None) -> tuple[Any, Any]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    hello = {
        "type": "hello",
        "role": "carrier",
        "namespace": "ns",
        "pod": pod,
        "carrier": "gefyra-carrier-1",
        "token": token or carrier_token(SECRET, "ns", pod, "gefyra-carrier-1"),
    }
    writer.write(json.dumps(hello).encode() + b"\n")
    await writer.drain()
    return reader, writer


async def until(condition: Any, what: str) -> None:
    with anyio.fail_after(5):
        while True:
            if condition():
                return
            await anyio.sleep(0.01)


async def test_a_carrier_vanishing_mid_line_leaves_the_others_connected() -> None:
    port = free_port()
    server = ControlServer(port, SECRET, "10.250.0.0/16", host="127.0.0.1")
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.run, EventBus())
        with anyio.fail_after(5):
            while True:
                try:
                    _, w_a = await carrier(port, "a")
                    break
                except OSError:
                    await anyio.sleep(0.02)
        r_b, w_b = await carrier(port, "b")
        await until(lambda: {"ns/a", "ns/b"} <= set(server.carriers), "both connected")

        # a's pod is deleted while it writes: half a line, then the connection is gone.
        w_a.write(b'{"type": "appl')
        await w_a.drain()
        w_a.transport.abort()
        await until(lambda: "ns/a" not in server.carriers, "a gone")

        # b is still connected to a running server: a config reaches it, its answer counts.
        routes = [{"port": 8080, "bridges": [{"name": "x", "rules": [], "upstream": "u:1"}]}]
        assert await server.push("ns/b", routes)
        with anyio.fail_after(5):
            while True:
                msg = json.loads(await r_b.readline())
                if msg["type"] == "config":
                    break
        assert msg["routes"] == routes
        w_b.write(json.dumps({"type": "applied", "version": msg["version"], "ports": {}}).encode())
        w_b.write(b"\n")
        await w_b.drain()
        await until(lambda: server.carriers["ns/b"].applied_version == msg["version"], "applied")

        # A bad token is refused with an error, a malformed one with the reason; the
        # server keeps serving.
        r_c, w_c = await carrier(port, "c", token="f" * 64)
        refusal = json.loads(await r_c.readline())
        assert refusal == {"type": "error", "message": "bad token"}
        r_e, w_e = await carrier(port, "e", token="forged\n-j ACCEPT")
        refusal = json.loads(await r_e.readline())
        assert refusal == {"type": "error", "message": "a carrier's token is 64 hex digits"}
        assert not {"ns/c", "ns/e"} & set(server.carriers)
        _, w_d = await carrier(port, "d")
        await until(lambda: "ns/d" in server.carriers, "d connected")
        assert "ns/b" in server.carriers
        for w in (w_b, w_c, w_d, w_e):
            w.close()
        tg.cancel_scope.cancel()


async def test_a_silent_cargo_is_dropped_and_its_silence_measured() -> None:
    port = free_port()
    server = ControlServer(port, SECRET, "127.0.0.0/8", host="127.0.0.1", cargo_silence_limit=0.5)

    async def cargo() -> tuple[Any, Any]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b'{"type": "hello", "role": "cargo", "connection": "c"}\n')
        writer.write(b'{"type": "containers", "containers": {"app": "172.30.0.2"}}\n')
        await writer.drain()
        return reader, writer

    async with anyio.create_task_group() as tg:
        tg.start_soon(server.run, EventBus())
        with anyio.fail_after(5):
            while True:
                try:
                    reader, writer = await cargo()
                    break
                except OSError:
                    await anyio.sleep(0.02)
        await until(lambda: server.containers_of("127.0.0.1") == {"app": "172.30.0.2"}, "map")
        started = time.monotonic()
        assert silence(server.cargo_heard.get("127.0.0.1"), 0.0, time.monotonic()) < 0.5
        # Never heard: silent since it was first seen, not since the epoch of the clock.
        assert "127.0.0.2" not in server.cargo_heard
        assert silence(None, started, started + 3) == 3

        # It answers the first ping with pong and then falls silent: the server hangs up
        # after the silence limit, and the silence keeps growing; the map is kept.
        assert json.loads(await reader.readline())["type"] == "ping"
        writer.write(b'{"type": "pong"}\n')
        await writer.drain()
        with anyio.fail_after(5):
            rest = await reader.read()  # until the server closes
        assert b"pong" not in rest
        await anyio.sleep(0.1)
        assert silence(server.cargo_heard.get("127.0.0.1"), 0.0, time.monotonic()) > 0.5
        assert server.containers_of("127.0.0.1") == {"app": "172.30.0.2"}
        writer.close()
        tg.cancel_scope.cancel()
