"""A DNS forwarder for cargo: the local app containers ask it, it asks the cluster DNS.

Cargo's address is the app containers' only name server, so every query they make lands
here and goes through the tunnel to ONE upstream, the cluster DNS (e.g. ``10.96.0.10:53``).
There is deliberately no second resolver, no fallback to ``/etc/resolv.conf`` and no
public resolver: an answer from anywhere else would be an answer about a different
network, and silently mixing the two is worse than a visible SERVFAIL. For the same
reason both addresses must be IP literals, so the forwarder never needs DNS itself.

The raw query is forwarded and the upstream's raw answer returned, so the query id, the
flags and EDNS pass through untouched. Queries arrive over UDP and over TCP (RFC 1035
4.2.2 length prefix) on the same port; UDP queries go upstream over UDP with a per-attempt
timeout and retries, TCP queries over TCP. When the upstream truncates a UDP answer (TC
bit) the full answer is fetched over TCP; it is handed back over UDP only if it fits the
size the client said it can take (512 bytes, or its EDNS payload size), otherwise the
client gets the truncated answer and, as every stub resolver does, asks again over TCP.
An upstream that does not answer, or fails, earns the client a SERVFAIL with the same
id, before the client's own timeout (glibc: 5 s) gives up on us.
"""

from __future__ import annotations

import ipaddress
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.abc
import structlog
from anyio.abc import SocketAttribute
from anyio.streams.buffered import BufferedByteReceiveStream
from anyio.streams.stapled import MultiListener
from dnslib import QTYPE, RCODE, DNSHeader, DNSRecord

log = structlog.get_logger(__name__)

DEFAULT_TIMEOUT = 2.0
DEFAULT_MAX_IN_FLIGHT = 256
# A client that sends no EDNS OPT record can take this much over UDP (RFC 1035 4.2.1).
CLASSIC_UDP_LIMIT = 512
MAX_MESSAGE = 65535
_HEADER_LEN = 12
_FLAG_QR = 0x8000
_FLAG_TC = 0x0200
# With port 0 the UDP socket picks a free port that TCP may find taken; try again then.
_BIND_ATTEMPTS = 20


@dataclass(frozen=True)
class Endpoint:
    """An IP literal and a port."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass
class DnsStats:
    """Counters of one forwarder, for status views and tests.

    Every received message is a query and ends as exactly one of answered (the upstream's
    answer, NXDOMAIN and upstream SERVFAIL included), servfail (made here: no or a failed
    upstream answer, or too many queries in flight) or malformed (dropped unanswered).
    """

    queries: int = 0
    answered: int = 0
    servfail: int = 0
    malformed: int = 0
    upstream_timeouts: int = 0  # queries whose every attempt went unanswered
    overloaded: int = 0  # queries refused with SERVFAIL because max_in_flight were running
    in_flight: int = 0


class UpstreamError(RuntimeError):
    """The upstream's answer could not be used; the message says why."""


class DnsForwarder:
    """Answers DNS queries on ``listen`` (UDP and TCP) by asking ``upstream`` and only it."""

    def __init__(
        self,
        upstream: Endpoint,
        listen: Endpoint,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        retries: int = 1,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        tcp_idle_timeout: float = 10.0,
        warn_interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        up = _ip_literal(upstream.host, "upstream")
        here = _ip_literal(listen.host, "listen")
        if not 0 < upstream.port <= MAX_MESSAGE:
            raise ValueError(f"upstream port {upstream.port} is not a port")
        if not 0 <= listen.port <= MAX_MESSAGE:
            raise ValueError(f"listen port {listen.port} is not a port")
        if upstream.port == listen.port and (
            up == here or (here.is_unspecified and up.is_loopback)
        ):
            raise ValueError(f"the upstream {upstream} is this forwarder: queries would loop")
        if timeout <= 0 or tcp_idle_timeout <= 0:
            raise ValueError("timeouts must be positive")
        if retries < 0:
            raise ValueError("retries cannot be negative")
        if max_in_flight < 1:
            raise ValueError("at least one query must be allowed in flight")
        self.upstream = upstream
        self.listen = listen
        self.timeout = timeout
        self.retries = retries
        self.max_in_flight = max_in_flight
        self.tcp_idle_timeout = tcp_idle_timeout
        self.stats = DnsStats()
        self._warn_interval = warn_interval
        self._clock = clock
        self._last_warning: float | None = None
        self._warnings_held_back = 0

    async def serve(
        self, *, task_status: anyio.abc.TaskStatus[Endpoint] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve until cancelled; reports the bound address (the real port) once listening."""
        udp, tcp = await self._bind()
        async with udp, tcp:
            bound = Endpoint(self.listen.host, udp.extra(SocketAttribute.local_port))
            log.info("dns forwarder listening", listen=str(bound), upstream=str(self.upstream))
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._serve_udp, udp, tg, name="dns:udp")
                tg.start_soon(tcp.serve, self._serve_tcp_connection, tg, name="dns:tcp")
                task_status.started(bound)

    async def _bind(self) -> tuple[anyio.abc.UDPSocket, MultiListener[anyio.abc.SocketStream]]:
        """Bind UDP and TCP to the same port, which clients expect of a name server."""
        attempts = _BIND_ATTEMPTS if self.listen.port == 0 else 1
        for attempt in range(1, attempts + 1):
            udp = await anyio.create_udp_socket(
                local_host=self.listen.host, local_port=self.listen.port
            )
            try:
                tcp = await anyio.create_tcp_listener(
                    local_host=self.listen.host, local_port=udp.extra(SocketAttribute.local_port)
                )
            except BaseException as exc:
                with anyio.CancelScope(shield=True):
                    await udp.aclose()
                if isinstance(exc, OSError) and attempt < attempts:
                    continue
                raise
            return udp, tcp
        raise AssertionError("unreachable: the last bind attempt returns or raises")

    # ---- UDP ----------------------------------------------------------------------------

    async def _serve_udp(self, udp: anyio.abc.UDPSocket, tg: anyio.abc.TaskGroup) -> None:
        # anyio refuses concurrent sends on one socket; answers are sent one at a time.
        send_lock = anyio.Lock()
        async for packet, client in udp:
            query = self._accept(packet, client, "udp")
            if query is None:
                continue
            if self.stats.in_flight >= self.max_in_flight:
                answer = self._overloaded(query, client)
                async with send_lock:
                    await _send_quietly(udp, answer, client)
                continue
            # Counted here, not in the task, so that the limit holds before tasks start.
            self.stats.in_flight += 1
            tg.start_soon(self._answer_udp, udp, send_lock, packet, query, client)

    async def _answer_udp(
        self,
        udp: anyio.abc.UDPSocket,
        send_lock: anyio.Lock,
        packet: bytes,
        query: Any,
        client: tuple[str, int],
    ) -> None:
        try:
            answer = await self._forward(packet, query, client, client_limit=_udp_limit(query))
            async with send_lock:
                await _send_quietly(udp, answer, client)
        finally:
            self.stats.in_flight -= 1

    # ---- TCP ----------------------------------------------------------------------------

    async def _serve_tcp_connection(self, stream: anyio.abc.SocketStream) -> None:
        async with stream:
            client = _peer(stream.extra(SocketAttribute.remote_address))
            reader = BufferedByteReceiveStream(stream)
            try:
                # A client may send several queries on one connection (RFC 7766); they are
                # answered in order.
                while True:
                    packet = await self._read_tcp_message(reader)
                    if packet is None:
                        return
                    query = self._accept(packet, client, "tcp")
                    if query is None:
                        return  # a peer that sends garbage gets no more of our time
                    if self.stats.in_flight >= self.max_in_flight:
                        answer = self._overloaded(query, client)
                    else:
                        self.stats.in_flight += 1
                        try:
                            answer = await self._forward(
                                packet, query, client, client_limit=MAX_MESSAGE, over_tcp=True
                            )
                        finally:
                            self.stats.in_flight -= 1
                    await stream.send(_framed(answer))
            except (anyio.BrokenResourceError, anyio.EndOfStream, anyio.IncompleteRead, OSError):
                log.debug("dns client connection lost", client=client[0])

    async def _read_tcp_message(self, reader: BufferedByteReceiveStream) -> bytes | None:
        """The next length-prefixed message, or None when the client is idle or gone."""
        with anyio.move_on_after(self.tcp_idle_timeout):
            try:
                (length,) = struct.unpack("!H", await reader.receive_exactly(2))
            except (anyio.EndOfStream, anyio.IncompleteRead):
                return None  # a clean close between messages
            return await reader.receive_exactly(length)
        return None

    # ---- both ---------------------------------------------------------------------------

    def _accept(self, packet: bytes, client: tuple[str, int], transport: str) -> Any:
        """Count PACKET and parse it; None (and counted malformed) if it is not a query."""
        self.stats.queries += 1
        query = _parse_query(packet)
        if query is None:
            self.stats.malformed += 1
            log.debug("dropped malformed dns query", client=client[0], transport=transport)
            return None
        log.debug(
            "dns query",
            client=client[0],
            transport=transport,
            id=query.header.id,
            question=_describe(query),
        )
        return query

    def _overloaded(self, query: Any, client: tuple[str, int]) -> bytes:
        self.stats.overloaded += 1
        self.stats.servfail += 1
        self._warn(
            "dns forwarder overloaded, answering SERVFAIL",
            in_flight=self.stats.in_flight,
            limit=self.max_in_flight,
            client=client[0],
        )
        return servfail_for(query)

    async def _forward(
        self,
        packet: bytes,
        query: Any,
        client: tuple[str, int],
        *,
        client_limit: int,
        over_tcp: bool = False,
    ) -> bytes:
        """The upstream's answer to PACKET, or a SERVFAIL when there is none to give."""
        qid: int = query.header.id
        try:
            if over_tcp:
                answer = await self._exchange_tcp(packet, qid)
            else:
                answer = await self._exchange_udp(packet, qid)
                if _is_truncated(answer):
                    full = await self._exchange_tcp(packet, qid)
                    if len(full) <= client_limit:
                        answer = full
        except TimeoutError:
            self.stats.upstream_timeouts += 1
            self.stats.servfail += 1
            self._warn(
                "dns upstream did not answer in time",
                upstream=str(self.upstream),
                question=_describe(query),
                timeout=self.timeout,
            )
            return servfail_for(query)
        except (
            OSError,
            UpstreamError,
            anyio.BrokenResourceError,
            anyio.EndOfStream,
            anyio.IncompleteRead,
        ) as exc:
            self.stats.servfail += 1
            self._warn(
                "dns upstream failed",
                upstream=str(self.upstream),
                question=_describe(query),
                error=f"{type(exc).__name__}: {exc}",
            )
            return servfail_for(query)
        self.stats.answered += 1
        log.debug(
            "dns answer",
            client=client[0],
            id=qid,
            question=_describe(query),
            size=len(answer),
            truncated=_is_truncated(answer),
        )
        return answer

    async def _exchange_udp(self, packet: bytes, qid: int) -> bytes:
        """Ask over UDP, resending after each silent ``timeout``; TimeoutError if all are.

        One connected socket per query: the kernel then accepts datagrams from the upstream
        only, and the random source port makes forged answers hard to slip in. A late answer
        to an earlier attempt is as good as one to the latest.
        """
        async with await anyio.create_connected_udp_socket(
            self.upstream.host, self.upstream.port
        ) as sock:
            for _attempt in range(1 + self.retries):
                await sock.send(packet)
                with anyio.move_on_after(self.timeout):
                    while True:
                        data = await sock.receive()
                        if _is_answer_to(data, qid):
                            return data
        raise TimeoutError

    async def _exchange_tcp(self, packet: bytes, qid: int) -> bytes:
        """Ask over a fresh TCP connection; connecting and answering share one ``timeout``."""
        with anyio.fail_after(self.timeout):
            async with await anyio.connect_tcp(self.upstream.host, self.upstream.port) as stream:
                await stream.send(_framed(packet))
                reader = BufferedByteReceiveStream(stream)
                (length,) = struct.unpack("!H", await reader.receive_exactly(2))
                data = await reader.receive_exactly(length)
        if not _is_answer_to(data, qid):
            raise UpstreamError("the TCP answer does not belong to the query")
        return data

    def _warn(self, event: str, **fields: object) -> None:
        """Log a warning, at most one per ``warn_interval``; the rest go to debug.

        A dead tunnel fails every query, and hundreds of identical warnings per second
        would bury whatever else the log has to say; ``held_back`` tells how many there were.
        """
        now = self._clock()
        if self._last_warning is not None and now - self._last_warning < self._warn_interval:
            self._warnings_held_back += 1
            log.debug(event, **fields)
            return
        log.warning(event, held_back=self._warnings_held_back, **fields)
        self._last_warning = now
        self._warnings_held_back = 0


def servfail_for(query: Any) -> bytes:
    """A SERVFAIL answer to QUERY (a parsed dnslib ``DNSRecord``): same id and question."""
    header = DNSHeader(
        id=query.header.id,
        qr=1,
        opcode=query.header.opcode,
        rd=query.header.rd,
        ra=1,
        rcode=RCODE.SERVFAIL,
    )
    try:
        packed: bytes = DNSRecord(header, q=query.q).pack()
    except Exception:  # a question dnslib parsed but cannot pack: answer without it
        header.q = 0
        packed = DNSRecord(header).pack()
    return packed


def _ip_literal(host: str, what: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(
            f"{what} host {host!r} must be an IP address: the forwarder never resolves names"
        ) from None


def _parse_query(packet: bytes) -> Any:
    """PACKET parsed, or None if it is not a DNS query with exactly one question.

    Answers (QR set) are refused too: echoing them anywhere could start a loop.
    """
    try:
        record = DNSRecord.parse(packet)
    except Exception:  # dnslib raises more than DNSError on hostile input
        return None
    if record.header.qr or len(record.questions) != 1:
        return None
    return record


def _udp_limit(query: Any) -> int:
    """The largest UDP answer QUERY's sender accepts: its EDNS payload size, at least 512."""
    for rr in query.ar:
        if rr.rtype == QTYPE.OPT:
            return min(MAX_MESSAGE, max(CLASSIC_UDP_LIMIT, int(rr.rclass)))
    return CLASSIC_UDP_LIMIT


def _describe(query: Any) -> str:
    q = query.q
    return f"{q.qname} {QTYPE.get(q.qtype, q.qtype)}"


def _is_answer_to(data: bytes, qid: int) -> bool:
    if len(data) < _HEADER_LEN:
        return False
    rid, flags = struct.unpack("!HH", data[:4])
    return bool(rid == qid and flags & _FLAG_QR)


def _is_truncated(data: bytes) -> bool:
    (flags,) = struct.unpack("!H", data[2:4])
    return bool(flags & _FLAG_TC)


def _peer(address: object) -> tuple[str, int]:
    """(host, port) of a TCP peer; IPv6 addresses come with flow info and scope id."""
    if isinstance(address, tuple):
        return str(address[0]), int(address[1])
    return str(address), 0


def _framed(message: bytes) -> bytes:
    return struct.pack("!H", len(message)) + message


async def _send_quietly(udp: anyio.abc.UDPSocket, data: bytes, client: tuple[str, int]) -> None:
    """Send an answer; a client that went away is no reason to stop serving the others."""
    try:
        await udp.sendto(data, client[0], client[1])
    except (OSError, anyio.BrokenResourceError) as exc:
        log.debug("could not answer dns client", client=client[0], error=str(exc))
