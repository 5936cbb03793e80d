"""Carrier on loopback: rules, per-request HTTP routing, raw TCP, and the control loop.

Real sockets on 127.0.0.1 only; the upstream servers are small asyncio servers that say
who answered. Only the iptables redirector is replaced (by a recorder).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from gefyra_async.carrier.agent import Carrier
from gefyra_async.carrier.proxy import BridgeRoute, CarrierProxy, PortRoute
from gefyra_async.core.control_protocol import CarrierHello
from gefyra_async.core.httprules import Rule, parse_head, rules_match

pytestmark = pytest.mark.anyio
HELLO = CarrierHello(namespace="ns", pod="p", carrier="gefyra-carrier-1", token="0" * 64)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def test_rules_match_headers_and_paths() -> None:
    head = parse_head(b"GET /api/v1/x?q=1 HTTP/1.1\r\nX-Dev: alice\r\nX-Dev: bob\r\n\r\n")
    rule = Rule.from_dict
    cases = [
        ([rule({"kind": "header", "name": "x-dev", "match": "exact", "value": "bob"})], True),
        ([rule({"kind": "header", "name": "X-DEV", "match": "prefix", "value": "al"})], True),
        ([rule({"kind": "header", "name": "X-Dev", "match": "exact", "value": "Alice"})], False),
        ([rule({"kind": "path", "match": "exact", "value": "/api/v1/x"})], True),  # no query
        ([rule({"kind": "path", "match": "regex", "value": r"^/api/v\d+/"})], True),
        (
            [
                rule({"kind": "path", "match": "prefix", "value": "/api"}),
                rule({"kind": "header", "name": "X-Other", "match": "prefix", "value": ""}),
            ],
            False,  # AND: the header is missing
        ),
    ]
    for rules, expected in cases:
        assert rules_match(rules, head.first[1], head.headers) is expected, rules
    for bad in (
        {"kind": "cookie", "match": "exact", "value": "x"},
        {"kind": "path", "match": "glob", "value": "x"},
        {"kind": "header", "match": "exact", "value": "x"},
        {"kind": "path", "match": "regex", "value": "("},
    ):
        with pytest.raises(ValueError, match=r"rule|regex|header"):
            Rule.from_dict(bad)


async def start_http(name: str, *, chunked: bool = False) -> tuple[asyncio.Server, int]:
    """An HTTP/1.1 keep-alive server answering '<name> <method> <path> <body bytes>'."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = parse_head(await reader.readuntil(b"\r\n\r\n"))
                body = b""
                if b"chunked" in head.tokens(b"transfer-encoding"):
                    while True:
                        size = int((await reader.readuntil(b"\r\n")).strip(), 16)
                        chunk = await reader.readexactly(size + 2)
                        if size == 0:
                            break
                        body += chunk[:-2]
                elif (length := head.get(b"content-length")) is not None:
                    body = await reader.readexactly(int(length))
                text = f"{name} {head.first[0]} {head.first[1]} {len(body)}".encode()
                if (forwarded := head.get(b"x-forwarded-for")) is not None:
                    text += b" for " + forwarded
                if head.first[1] == "/nocontent":
                    writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
                elif chunked:
                    half = len(text) // 2
                    writer.write(
                        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                        + b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n"
                        % (half, text[:half], len(text) - half, text[half:])
                    )
                elif head.first[0] == "HEAD":
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(text))
                else:
                    writer.write(
                        b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(text), text)
                    )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def read_response(reader: asyncio.StreamReader, method: str = "GET") -> tuple[int, bytes]:
    head = parse_head(await reader.readuntil(b"\r\n\r\n"))
    status = int(head.first[1])
    if method == "HEAD" or status == 204:
        return status, b""
    if b"chunked" in head.tokens(b"transfer-encoding"):
        body = b""
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                return status, body
            body += chunk[:-2]
    length = head.get(b"content-length")
    if length is None:
        return status, await reader.read()
    return status, await reader.readexactly(int(length))


@pytest.fixture
async def servers() -> AsyncIterator[dict[str, int]]:
    started = {n: await start_http(n, chunked=(n == "bob")) for n in ("app", "alice", "bob")}
    yield {n: port for n, (_, port) in started.items()}
    for server, _ in started.values():
        server.close()


def header(value: str) -> tuple[Rule, ...]:
    return (Rule.from_dict({"kind": "header", "name": "X-Dev", "match": "exact", "value": value}),)


async def test_each_request_of_a_keepalive_connection_goes_where_its_rules_say(
    servers: dict[str, int],
) -> None:
    proxy = CarrierProxy(app_host="127.0.0.1")
    route = PortRoute(
        servers["app"],
        (
            BridgeRoute("alice", header("alice"), ("127.0.0.1", servers["alice"])),
            BridgeRoute("bob", header("bob"), ("127.0.0.1", servers["bob"])),
        ),
    )
    port = await proxy.listen(route)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    plan = [
        (b"GET /a HTTP/1.1\r\nX-Dev: alice\r\n\r\n", b"alice GET /a 0 for 127.0.0.1"),
        (b"GET /b HTTP/1.1\r\nX-Dev: bob\r\n\r\n", b"bob GET /b 0 for 127.0.0.1"),  # chunked
        (b"GET /c HTTP/1.1\r\n\r\n", b"app GET /c 0"),
        (
            b"POST /d HTTP/1.1\r\nX-Dev: alice\r\nX-Forwarded-For: 10.0.0.9\r\n"
            b"Content-Length: 5\r\n\r\nhello",
            b"alice POST /d 5 for 10.0.0.9, 127.0.0.1",  # appended to a proxy's header
        ),
        (
            b"POST /e HTTP/1.1\r\nX-Dev: bob\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n",
            b"bob POST /e 7 for 127.0.0.1",
        ),
        (
            b"GET /f HTTP/1.1\r\nX-Dev: alice\r\nUser-Agent: kube-probe/1.35\r\n\r\n",
            b"app GET /f 0",
        ),
        (b"HEAD /g HTTP/1.1\r\nX-Dev: alice\r\n\r\n", b""),
        (b"GET /nocontent HTTP/1.1\r\nX-Dev: bob\r\n\r\n", b""),
        (b"GET /h HTTP/1.1\r\nX-Dev: carol\r\n\r\n", b"app GET /h 0"),
    ]
    for request, expected in plan:
        writer.write(request)
        method = request.split(b" ", 1)[0].decode()
        status, body = await asyncio.wait_for(read_response(reader, method), 5)
        assert status in (200, 204)
        assert body == expected, request
    # Switching rules applies to the next request on the same connection.
    proxy.update(
        PortRoute(
            servers["app"], (BridgeRoute("bob", header("alice"), ("127.0.0.1", servers["bob"])),)
        )
    )
    writer.write(b"GET /i HTTP/1.1\r\nX-Dev: alice\r\nConnection: close\r\n\r\n")
    assert (await read_response(reader))[1] == b"bob GET /i 0 for 127.0.0.1"
    assert await reader.read() == b""  # Connection: close honoured
    writer.close()
    assert proxy.stats()["alice"]["requests"] == 3  # /a, /d, HEAD /g; the probe went to the app
    await proxy.close()


async def test_unreachable_local_side_is_a_502_naming_the_bridge(servers: dict[str, int]) -> None:
    closed = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    dead = closed.sockets[0].getsockname()[1]
    closed.close()
    await closed.wait_closed()
    proxy = CarrierProxy()
    port = await proxy.listen(
        PortRoute(servers["app"], (BridgeRoute("alice", header("alice"), ("127.0.0.1", dead)),))
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET / HTTP/1.1\r\nX-Dev: alice\r\n\r\n")
    status, body = await asyncio.wait_for(read_response(reader), 5)
    assert status == 502
    assert b"bridge alice" in body
    writer.close()
    await proxy.close()


async def test_raw_mode_splices_any_protocol_but_sends_kubelet_probes_to_the_app(
    servers: dict[str, int],
) -> None:
    async def greeter(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 local speaks first\r\n")  # server-first protocol (SMTP-like)
        line = await reader.readline()
        writer.write(b"echo " + line)
        await writer.drain()
        writer.close()

    local = await asyncio.start_server(greeter, "127.0.0.1", 0)
    proxy = CarrierProxy(sniff_timeout=0.05)
    port = await proxy.listen(
        PortRoute(
            servers["app"],
            (BridgeRoute("all", (), ("127.0.0.1", local.sockets[0].getsockname()[1])),),
        )
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    assert await asyncio.wait_for(reader.readline(), 5) == b"220 local speaks first\r\n"
    writer.write(b"hi\n")
    assert await asyncio.wait_for(reader.readline(), 5) == b"echo hi\n"
    writer.close()

    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /healthz HTTP/1.1\r\nUser-Agent: kube-probe/1.35\r\n\r\n")
    assert (await asyncio.wait_for(read_response(reader), 5))[1] == b"app GET /healthz 0"
    writer.close()
    assert proxy.stats()["all"]["connections"] == 1
    await proxy.close()
    local.close()


class Recorder:
    def __init__(self) -> None:
        self.installed: dict[int, int] = {}
        self.calls: list[str] = []

    async def install(self, port: int, to_port: int) -> None:
        self.installed[port] = to_port
        self.calls.append(f"install {port}")

    async def remove(self, port: int) -> None:
        self.installed.pop(port, None)
        self.calls.append(f"remove {port}")

    async def remove_all(self) -> None:
        self.installed.clear()
        self.calls.append("remove_all")


async def test_carrier_applies_configs_reports_them_and_exits_when_told(
    servers: dict[str, int],
) -> None:
    received: list[dict[str, Any]] = []
    done = asyncio.Event()

    async def control(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async def send(msg: dict[str, Any]) -> dict[str, Any]:
            writer.write((json.dumps(msg) + "\n").encode())
            await writer.drain()
            reply: dict[str, Any] = json.loads(await reader.readline())
            received.append(reply)
            return reply

        received.append(json.loads(await reader.readline()))  # hello
        route = {"name": "b", "rules": [], "upstream": f"127.0.0.1:{servers['alice']}"}
        await send({"type": "config", "version": 1, "routes": [
            {"port": servers["app"], "bridges": [route]}, {"port": 9, "bridges": [route]},
        ]})  # fmt: skip
        await send({"type": "config", "version": 2, "routes": [{"port": 9, "bridges": [route]}]})
        await send({"type": "exit", "reason": "test"})
        writer.close()
        done.set()

    server = await asyncio.start_server(control, "127.0.0.1", 0)
    recorder = Recorder()
    carrier = Carrier(
        ("127.0.0.1", server.sockets[0].getsockname()[1]),
        HELLO,
        recorder,
    )
    assert await asyncio.wait_for(carrier.run(), 10) == 0
    await done.wait()
    hello, first, second, bye = received
    assert hello["pod"] == "p"
    assert first["version"] == 1
    assert set(first["ports"]) == {str(servers["app"]), "9"}
    assert second["ports"] == {"9": first["ports"]["9"]}
    assert bye == {"type": "bye"}
    assert recorder.calls[:4] == [
        "remove_all",
        f"install {servers['app']}",
        "install 9",
        f"remove {servers['app']}",
    ]
    assert recorder.installed == {}
    server.close()


async def test_carrier_gives_up_and_removes_redirects_when_stowaway_is_gone() -> None:
    gone = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = gone.sockets[0].getsockname()[1]
    gone.close()
    await gone.wait_closed()
    recorder = Recorder()
    carrier = Carrier(("127.0.0.1", port), HELLO, recorder, orphan_timeout=0.3)
    assert await asyncio.wait_for(carrier.run(), 10) == 0
    assert recorder.calls[-1] == "remove_all"


async def test_a_rule_based_port_hands_what_is_not_http1_to_the_app_as_it_is() -> None:
    """TLS, the HTTP/2 preface, another client-first protocol and a server-first one all
    reach the original app untouched; none waits for a request head that never comes;
    a request line split across packets is still routed by its rules."""
    seen: list[bytes] = []

    async def app(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"app greets\n")  # a server that speaks first (SMTP, MySQL, ...)
        await writer.drain()
        data = await reader.read(4096)
        seen.append(data)
        writer.write(b"app got " + str(len(data)).encode() + b"\n")
        await writer.drain()
        writer.close()

    app_server = await asyncio.start_server(app, "127.0.0.1", 0)
    local, local_port = await start_http("alice")
    proxy = CarrierProxy(sniff_timeout=0.05)
    route = PortRoute(
        app_server.sockets[0].getsockname()[1],
        (BridgeRoute("alice", header("alice"), ("127.0.0.1", local_port)),),
    )
    port = await proxy.listen(route)
    tls_hello = bytes.fromhex("16030100f8010000f40303") + b"\x00" * 40
    http2 = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
    try:
        for opening in (tls_hello, http2, b"\x00\x01binary"):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(opening)
            assert await asyncio.wait_for(reader.readline(), 5) == b"app greets\n"
            assert (
                await asyncio.wait_for(reader.readline(), 5) == f"app got {len(opening)}\n".encode()
            )
            writer.close()
        assert seen == [tls_hello, http2, b"\x00\x01binary"]
        # A client that waits for the server: after sniff_timeout, the app greets it.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await asyncio.wait_for(reader.readline(), 5) == b"app greets\n"
        writer.write(b"QUIT\r\n")
        assert await asyncio.wait_for(reader.readline(), 5) == b"app got 6\n"
        writer.close()
        # HTTP/1 whose request line comes in pieces is still HTTP: routed by the rules.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GE")
        await writer.drain()
        await asyncio.sleep(0.01)  # not synchronisation: two packets, not one
        writer.write(b"T /x HTTP/1.1\r\nX-Dev: alice\r\nContent-Length: 2\r\n\r\nhi")
        status, body = await asyncio.wait_for(read_response(reader), 5)
        assert (status, body) == (200, b"alice GET /x 2 for 127.0.0.1")
        writer.close()
    finally:
        await proxy.close()
        app_server.close()
        local.close()
