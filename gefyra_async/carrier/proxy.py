"""Carrier's data plane: one listener per bridged port, in the bridged pod.

The pod's ``nat PREROUTING`` redirects the bridged port to these listeners. A port with
one bridge and no rules is spliced as raw TCP to that bridge's upstream (stowaway →
tunnel → local container), any protocol. A port whose bridges have rules is spoken to as
HTTP/1.1: each request of a keep-alive connection is routed on its own — the first
bridge whose rules all match, else the original app at ``127.0.0.1:<port>`` (carrier's
own connections to the app do not pass PREROUTING). Bodies stream both ways; an
``Upgrade`` turns the connection raw. The kubelet's probes (``User-Agent: kube-probe/``)
always reach the original app, so the pod stays Ready whatever the local side does.
A connection on such a port that does not open with an HTTP/1.x request — a TLS
ClientHello, the HTTP/2 preface, another protocol, or a client that waits for the server
to speak first — is spliced to the original app as it is, within ``sniff_timeout``: rules
route HTTP/1 requests only, and nothing else may hang waiting for a request head.

Plain asyncio streams: this is the hot path of every bridged request.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace

import structlog

from gefyra_async.core.httprules import (
    Head,
    HttpParseError,
    Rule,
    is_kube_probe,
    keep_alive,
    looks_like_request,
    parse_head,
    request_framing,
    response_framing,
    rules_match,
    with_forwarded_for,
)

log = structlog.get_logger(__name__)

CHUNK = 65536
HEAD_LIMIT = 65536


@dataclass(frozen=True)
class BridgeRoute:
    name: str
    rules: tuple[Rule, ...]
    upstream: tuple[str, int]


@dataclass(frozen=True)
class PortRoute:
    port: int
    bridges: tuple[BridgeRoute, ...]

    @property
    def raw(self) -> bool:
        return len(self.bridges) == 1 and not self.bridges[0].rules


@dataclass
class Counters:
    connections: int = 0
    requests: int = 0
    errors: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"connections": self.connections, "requests": self.requests, "errors": self.errors}


Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def _open(host: str, port: int) -> Stream:
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(host, port, limit=HEAD_LIMIT), 10
    )
    _nodelay(writer)
    return reader, writer


def _nodelay(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _close(writer: asyncio.StreamWriter | None) -> None:
    if writer is not None:
        with contextlib.suppress(Exception):
            writer.close()


async def _pipe(reader: Reader, writer: asyncio.StreamWriter) -> None:
    """Copy until EOF, then half-close the other side."""
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (OSError, RuntimeError):
        _close(writer)


async def splice(a: tuple[Reader, asyncio.StreamWriter], b: Stream) -> None:
    await asyncio.gather(_pipe(a[0], b[1]), _pipe(b[0], a[1]))


async def copy_body(reader: Reader, writer: asyncio.StreamWriter, length: int | None) -> None:
    """Forward one body: LENGTH bytes; None = chunked (with trailers); -1 = until EOF."""
    if length is None:
        while True:
            line = await reader.readuntil(b"\r\n")
            size = int(line.split(b";", 1)[0].strip(), 16)
            writer.write(line)
            if size == 0:
                while (trailer := await reader.readuntil(b"\r\n")) != b"\r\n":
                    writer.write(trailer)
                writer.write(b"\r\n")
                break
            writer.write(await reader.readexactly(size + 2))
            await writer.drain()
    elif length == -1:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
    else:
        remaining = length
        while remaining:
            data = await reader.read(min(CHUNK, remaining))
            if not data:
                raise asyncio.IncompleteReadError(b"", remaining)
            writer.write(data)
            remaining -= len(data)
            await writer.drain()
    await writer.drain()


class _Prefixed:
    """A StreamReader with bytes already taken from it put back in front (the sniffed
    start of a connection). Once those are consumed, every call goes to the reader
    itself: the hot path pays one check."""

    def __init__(self, reader: asyncio.StreamReader, prefix: bytes) -> None:
        self._reader = reader
        self._buffer = bytearray(prefix)

    async def read(self, n: int = -1) -> bytes:
        if not self._buffer:
            return await self._reader.read(n)
        size = len(self._buffer) if n < 0 else min(n, len(self._buffer))
        return self._take(size)

    async def readexactly(self, n: int) -> bytes:
        if not self._buffer:
            return await self._reader.readexactly(n)
        head = self._take(min(n, len(self._buffer)))
        return head + await self._reader.readexactly(n - len(head)) if len(head) < n else head

    async def readuntil(self, separator: bytes = b"\n") -> bytes:
        if not self._buffer:
            return await self._reader.readuntil(separator)
        while (end := self._buffer.find(separator)) < 0:
            if len(self._buffer) > HEAD_LIMIT:
                raise asyncio.LimitOverrunError("separator not found within the limit", 0)
            more = await self._reader.read(CHUNK)
            if not more:
                raise asyncio.IncompleteReadError(self._take(len(self._buffer)), None)
            self._buffer += more
        return self._take(end + len(separator))

    def _take(self, n: int) -> bytes:
        data = bytes(self._buffer[:n])
        del self._buffer[:n]
        return data


Reader = asyncio.StreamReader | _Prefixed


def _refusal(status: int, reason: str) -> bytes:
    return f"HTTP/1.1 {status} {reason}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode()


def _bad_gateway(what: str, error: str) -> bytes:
    body = f"gefyra-async carrier: {what} is unreachable ({error})\n".encode()
    return (
        b"HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain\r\nConnection: close\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )


@dataclass
class CarrierProxy:
    app_host: str = "127.0.0.1"
    sniff_timeout: float = 0.1
    host: str = "0.0.0.0"
    routes: dict[int, PortRoute] = field(default_factory=dict)
    servers: dict[int, asyncio.Server] = field(default_factory=dict)
    counters: dict[str, Counters] = field(default_factory=dict)

    # ---- control ----

    async def listen(self, route: PortRoute) -> int:
        """Serve ROUTE on a new listener; returns the listener's port."""
        self.routes[route.port] = route

        def handler(
            port: int,
        ) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
            async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                await self._handle(port, reader, writer)

            return handle

        server = await asyncio.start_server(
            handler(route.port), self.host, 0, limit=HEAD_LIMIT, reuse_address=True
        )
        self.servers[route.port] = server
        listen_port = int(server.sockets[0].getsockname()[1])
        log.info("listening", port=route.port, listener=listen_port, raw=route.raw)
        return listen_port

    def listener(self, port: int) -> int | None:
        server = self.servers.get(port)
        return int(server.sockets[0].getsockname()[1]) if server and server.sockets else None

    def update(self, route: PortRoute) -> None:
        """New connections and requests on ROUTE's port use its bridges from now on."""
        self.routes[route.port] = route

    async def close_port(self, port: int) -> None:
        """Stop accepting on PORT; connections in flight finish."""
        self.routes.pop(port, None)
        server = self.servers.pop(port, None)
        if server is not None:
            server.close()

    async def close(self) -> None:
        for port in list(self.servers):
            await self.close_port(port)
        await asyncio.sleep(0)  # the loop closes the listening sockets on its next turn

    def stats(self) -> dict[str, dict[str, int]]:
        return {name: c.as_dict() for name, c in self.counters.items()}

    def _count(self, name: str) -> Counters:
        return self.counters.setdefault(name, Counters())

    # ---- data ----

    async def _handle(
        self, port: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        route = self.routes.get(port)
        _nodelay(writer)
        try:
            if route is None:
                return
            if route.raw:
                await self._raw(route, reader, writer)
                return
            first = await self._sniff(reader)
            if looks_like_request(first):
                await self._http(port, _Prefixed(reader, first), writer)
            elif first or not reader.at_eof():
                await self._to_app(port, first, reader, writer)
        except Exception as exc:  # one connection's failure never reaches the listener
            log.debug("connection failed", port=port, error=repr(exc))
        finally:
            _close(writer)

    async def _raw(
        self, route: PortRoute, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        bridge = route.bridges[0]
        first = b""
        with contextlib.suppress(TimeoutError):
            first = await asyncio.wait_for(reader.read(CHUNK), self.sniff_timeout)
        to_app = looks_like_request(first) and is_kube_probe(_sniff_headers(first))
        target = (self.app_host, route.port) if to_app else bridge.upstream
        counters = None if to_app else self._count(bridge.name)
        if counters:
            counters.connections += 1
        try:
            upstream = await _open(*target)
        except (OSError, TimeoutError) as exc:
            if counters:
                counters.errors += 1
            log.info("upstream unreachable", bridge=bridge.name, error=repr(exc))
            return
        try:
            if first:
                upstream[1].write(first)
            await splice((reader, writer), upstream)
        finally:
            _close(upstream[1])

    async def _sniff(self, reader: asyncio.StreamReader) -> bytes:
        """The first bytes of a connection: enough to tell an HTTP/1 request line (a
        method and a space), or whatever came within ``sniff_timeout`` (nothing from a
        client that waits for the server to speak first)."""
        first = b""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.sniff_timeout):
                while len(first) < 8 and b" " not in first:
                    more = await reader.read(CHUNK)
                    if not more:
                        break
                    first += more
        return first

    async def _to_app(
        self, port: int, first: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Not HTTP/1 (TLS, HTTP/2, another protocol): to the original app, as it is."""
        try:
            app = await _open(self.app_host, port)
        except (OSError, TimeoutError) as exc:
            log.info("original app unreachable", port=port, error=repr(exc))
            return
        try:
            if first:
                app[1].write(first)
            await splice((reader, writer), app)
        finally:
            _close(app[1])

    def _choose(self, port: int, head: Head) -> BridgeRoute | None:
        route = self.routes.get(port)
        if route is None or is_kube_probe(head.headers):
            return None
        target = head.first[1]
        for bridge in route.bridges:
            if rules_match(bridge.rules, target, head.headers):
                return bridge
        return None

    async def _http(self, port: int, reader: Reader, writer: asyncio.StreamWriter) -> None:
        upstreams: dict[str, Stream] = {}
        peer = writer.get_extra_info("peername")
        client = str(peer[0]) if isinstance(peer, tuple) else None
        try:
            while True:
                try:
                    raw = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    return
                except asyncio.LimitOverrunError:
                    writer.write(_refusal(431, "Request Header Fields Too Large"))
                    await writer.drain()
                    return
                try:
                    head = parse_head(raw)
                    body = request_framing(head)
                except HttpParseError:
                    writer.write(_refusal(400, "Bad Request"))
                    await writer.drain()
                    return
                bridge = self._choose(port, head)
                key = bridge.name if bridge else ""
                if bridge:
                    self._count(bridge.name).requests += 1
                upstream = upstreams.get(key)
                if upstream is None or upstream[0].at_eof() or upstream[1].is_closing():
                    target = bridge.upstream if bridge else (self.app_host, port)
                    try:
                        upstream = await _open(*target)
                    except (OSError, TimeoutError) as exc:
                        if bridge:
                            self._count(bridge.name).errors += 1
                        what = f"bridge {bridge.name}" if bridge else "the original app"
                        writer.write(_bad_gateway(what, type(exc).__name__))
                        await writer.drain()
                        return
                    upstreams[key] = upstream
                if bridge and client:
                    # Through the tunnel the local app sees cargo as its peer: say who asked.
                    head = replace(head, raw=with_forwarded_for(head.raw, client))
                again = await self._exchange(head, body, (reader, writer), upstream)
                if again is None:  # upgraded: the connection was spliced to its end
                    return
                if not again:
                    return
        finally:
            for _, w in upstreams.values():
                _close(w)

    async def _exchange(
        self, head: Head, body: int | None, down: tuple[Reader, asyncio.StreamWriter], up: Stream
    ) -> bool | None:
        """One request and its response. True: the connection may carry another;
        None: it was upgraded and spliced to its end."""
        method, _, version = head.first
        up[1].write(head.raw)
        sending = asyncio.create_task(copy_body(down[0], up[1], body)) if body != 0 else None
        try:
            while True:
                raw = await up[0].readuntil(b"\r\n\r\n")
                response = parse_head(raw)
                status = int(response.first[1])
                down[1].write(raw)
                if status == 101 or (method == "CONNECT" and 200 <= status < 300):
                    await down[1].drain()
                    if sending:
                        sending.cancel()
                    await splice(down, up)
                    return None
                if status >= 200:
                    break
            length = response_framing(method, status, response)
            await copy_body(up[0], down[1], length)
            if sending:
                await sending
                sending = None
        finally:
            if sending and not sending.done():
                sending.cancel()
        return (
            length != -1 and keep_alive(version, head) and keep_alive(response.first[0], response)
        )


def _sniff_headers(data: bytes) -> list[tuple[bytes, bytes]]:
    end = data.find(b"\r\n\r\n")
    try:
        return parse_head(data[: end if end >= 0 else len(data)]).headers
    except HttpParseError:
        return []
