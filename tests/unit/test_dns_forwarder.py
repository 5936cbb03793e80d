"""The DNS forwarder against a real upstream DNS server (dnslib) on 127.0.0.1.

Every packet in these tests goes to 127.0.0.1 only: the upstream is a small server run
by the test itself, never a real resolver.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.abc
import pytest
from anyio.abc import SocketAttribute
from anyio.streams.buffered import BufferedByteReceiveStream
from dnslib import EDNS0, QTYPE, RCODE, RR, A, DNSRecord

from gefyra_async.adapters.dns import DnsForwarder, Endpoint

pytestmark = pytest.mark.anyio

LOCAL = "127.0.0.1"
CLIENT_TIMEOUT = 3.0  # longer than any answer the forwarder owes a client here
HUGE = [f"10.1.{i // 250}.{i % 250 + 1}" for i in range(60)]  # ~1 KB: more than 512 bytes
RECORDS: dict[str, list[str]] = {
    "web.demo.svc.cluster.local.": ["10.96.12.7"],
    "two.demo.svc.cluster.local.": ["10.0.0.1", "10.0.0.2"],
    # An upstream that truncates this one over UDP although it is small, as an upstream
    # with a lower UDP limit than the client's would: the full answer comes over TCP.
    "small-limit.test.": ["10.0.0.9"],
    "huge.test.": HUGE,
    **{f"svc{i}.test.": [f"10.2.0.{i + 1}"] for i in range(50)},
}
ALWAYS_TRUNCATED_OVER_UDP = {"small-limit.test."}


# ---- a tiny upstream DNS server ---------------------------------------------------------


@dataclass
class FakeUpstream:
    """What the upstream saw; ``delay`` holds every answer back that long."""

    endpoint: Endpoint
    delay: float = 0.0
    udp_queries: int = 0
    tcp_queries: int = 0
    active: int = 0
    max_active: int = 0
    names: list[str] = field(default_factory=list)


def upstream_answer(packet: bytes, *, udp: bool) -> bytes:
    """A-records from RECORDS, NXDOMAIN otherwise; over UDP truncated like a real server."""
    query = DNSRecord.parse(packet)
    reply = query.reply()
    name = str(query.q.qname)
    addresses = RECORDS.get(name)
    if addresses is None:
        reply.header.rcode = RCODE.NXDOMAIN
    else:
        for address in addresses:
            reply.add_answer(RR(name, QTYPE.A, rdata=A(address), ttl=30))
    packed: bytes = reply.pack()
    if udp:
        limit = 512
        for rr in query.ar:
            if rr.rtype == QTYPE.OPT:
                limit = max(512, rr.rclass)
        if name in ALWAYS_TRUNCATED_OVER_UDP or len(packed) > limit:
            packed = reply.truncate().pack()
    return packed


async def bind_same_port() -> tuple[anyio.abc.UDPSocket, anyio.abc.Listener[Any]]:
    for _ in range(20):
        udp = await anyio.create_udp_socket(local_host=LOCAL, local_port=0)
        try:
            tcp = await anyio.create_tcp_listener(
                local_host=LOCAL, local_port=udp.extra(SocketAttribute.local_port)
            )
        except OSError:
            await udp.aclose()
            continue
        return udp, tcp
    raise RuntimeError("no port free for both UDP and TCP")


@asynccontextmanager
async def fake_upstream(delay: float = 0.0) -> AsyncIterator[FakeUpstream]:
    udp, tcp = await bind_same_port()
    server = FakeUpstream(Endpoint(LOCAL, udp.extra(SocketAttribute.local_port)), delay=delay)
    send_lock = anyio.Lock()

    async def answer(packet: bytes, *, udp_transport: bool) -> bytes:
        server.names.append(str(DNSRecord.parse(packet).q.qname))
        server.active += 1
        server.max_active = max(server.max_active, server.active)
        try:
            await anyio.sleep(server.delay)
            return upstream_answer(packet, udp=udp_transport)
        finally:
            server.active -= 1

    async def answer_udp(packet: bytes, client: tuple[str, int]) -> None:
        data = await answer(packet, udp_transport=True)
        async with send_lock:
            await udp.sendto(data, *client)

    async def serve_udp(tg: anyio.abc.TaskGroup) -> None:
        async for packet, client in udp:
            server.udp_queries += 1
            tg.start_soon(answer_udp, packet, client)

    async def serve_tcp(stream: anyio.abc.ByteStream) -> None:
        async with stream:
            reader = BufferedByteReceiveStream(stream)
            (length,) = struct.unpack("!H", await reader.receive_exactly(2))
            packet = await reader.receive_exactly(length)
            server.tcp_queries += 1
            data = await answer(packet, udp_transport=False)
            await stream.send(struct.pack("!H", len(data)) + data)

    async with udp, tcp, anyio.create_task_group() as tg:
        tg.start_soon(serve_udp, tg)
        tg.start_soon(tcp.serve, serve_tcp, tg)
        try:
            yield server
        finally:
            tg.cancel_scope.cancel()


@asynccontextmanager
async def running(forwarder: DnsForwarder) -> AsyncIterator[Endpoint]:
    async with anyio.create_task_group() as tg:
        bound: Endpoint = await tg.start(forwarder.serve)
        try:
            yield bound
        finally:
            tg.cancel_scope.cancel()


def forwarder_to(upstream: Endpoint, **options: Any) -> DnsForwarder:
    return DnsForwarder(upstream, Endpoint(LOCAL, 0), **options)


# ---- clients ----------------------------------------------------------------------------


async def ask_udp(server: Endpoint, query: Any) -> Any:
    async with await anyio.create_connected_udp_socket(server.host, server.port) as sock:
        await sock.send(query.pack())
        with anyio.fail_after(CLIENT_TIMEOUT):
            return DNSRecord.parse(await sock.receive())


async def ask_tcp(server: Endpoint, query: Any) -> Any:
    with anyio.fail_after(CLIENT_TIMEOUT):
        async with await anyio.connect_tcp(server.host, server.port) as stream:
            packet = query.pack()
            await stream.send(struct.pack("!H", len(packet)) + packet)
            reader = BufferedByteReceiveStream(stream)
            (length,) = struct.unpack("!H", await reader.receive_exactly(2))
            return DNSRecord.parse(await reader.receive_exactly(length))


def addresses(answer: Any) -> list[str]:
    return [str(rr.rdata) for rr in answer.rr if rr.rtype == QTYPE.A]


def question(name: str, qid: int) -> Any:
    query = DNSRecord.question(name)
    query.header.id = qid
    return query


# ---- tests ------------------------------------------------------------------------------


async def test_a_record_arrives_with_the_query_id() -> None:
    async with fake_upstream() as upstream, running(forwarder_to(upstream.endpoint)) as fwd:
        answer = await ask_udp(fwd, question("web.demo.svc.cluster.local", 0x1234))
        assert answer.header.id == 0x1234
        assert answer.header.rcode == RCODE.NOERROR
        assert addresses(answer) == ["10.96.12.7"]
        two = await ask_udp(fwd, question("two.demo.svc.cluster.local", 0xBEEF))
        assert (two.header.id, addresses(two)) == (0xBEEF, ["10.0.0.1", "10.0.0.2"])
        assert upstream.udp_queries == 2
        assert upstream.tcp_queries == 0


async def test_nxdomain_passes_through() -> None:
    async with fake_upstream() as upstream:
        forwarder = forwarder_to(upstream.endpoint)
        async with running(forwarder) as fwd:
            answer = await ask_udp(fwd, question("nope.demo.svc.cluster.local", 77))
    assert answer.header.id == 77
    assert answer.header.rcode == RCODE.NXDOMAIN
    assert addresses(answer) == []
    assert (forwarder.stats.queries, forwarder.stats.answered, forwarder.stats.servfail) == (
        1,
        1,
        0,
    )


async def test_tcp_queries_are_answered_on_the_same_port() -> None:
    async with fake_upstream() as upstream:
        forwarder = forwarder_to(upstream.endpoint)
        async with running(forwarder) as fwd:
            answer = await ask_tcp(fwd, question("web.demo.svc.cluster.local", 4242))
            missing = await ask_tcp(fwd, question("gone.test", 4243))
    assert (answer.header.id, addresses(answer)) == (4242, ["10.96.12.7"])
    assert (missing.header.id, missing.header.rcode) == (4243, RCODE.NXDOMAIN)
    # A TCP query goes upstream over TCP.
    assert (upstream.udp_queries, upstream.tcp_queries) == (0, 2)
    assert forwarder.stats.answered == 2


async def test_truncated_upstream_answer_is_fetched_again_over_tcp() -> None:
    async with fake_upstream() as upstream, running(forwarder_to(upstream.endpoint)) as fwd:
        answer = await ask_udp(fwd, question("small-limit.test", 9))
        assert (upstream.udp_queries, upstream.tcp_queries) == (1, 1)
    assert answer.header.id == 9
    assert not answer.header.tc
    assert addresses(answer) == ["10.0.0.9"]


async def test_answer_too_big_for_the_client_keeps_tc_so_the_client_asks_over_tcp() -> None:
    async with fake_upstream() as upstream, running(forwarder_to(upstream.endpoint)) as fwd:
        # Without EDNS the client takes 512 bytes over UDP: it is told to use TCP ...
        truncated = await ask_udp(fwd, question("huge.test", 10))
        assert (truncated.header.id, truncated.header.tc) == (10, 1)
        assert addresses(truncated) == []
        # ... and over TCP it gets everything.
        full = await ask_tcp(fwd, question("huge.test", 11))
        assert (full.header.id, full.header.tc) == (11, 0)
        assert addresses(full) == HUGE
        # A client that announces a large EDNS buffer gets the whole answer over UDP.
        edns = question("huge.test", 12)
        edns.add_ar(EDNS0(udp_len=4096))
        big = await ask_udp(fwd, edns)
        assert (big.header.id, big.header.tc) == (12, 0)
        assert addresses(big) == HUGE


async def test_silent_upstream_gives_servfail_after_one_retry() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind((LOCAL, 0))  # bound, never read while the query runs
        upstream = Endpoint(LOCAL, silent.getsockname()[1])
        forwarder = forwarder_to(upstream, timeout=0.3, retries=1)
        async with running(forwarder) as fwd:
            started = anyio.current_time()
            answer = await ask_udp(fwd, question("web.demo.svc.cluster.local", 555))
            elapsed = anyio.current_time() - started
        silent.setblocking(False)
        attempts = 0
        while True:
            try:
                silent.recv(4096)
            except BlockingIOError:
                break
            attempts += 1
    assert answer.header.id == 555
    assert answer.header.rcode == RCODE.SERVFAIL
    assert str(answer.q.qname) == "web.demo.svc.cluster.local."
    assert 0.55 <= elapsed < 1.5  # two attempts of 0.3 s
    assert attempts == 2
    assert forwarder.stats.upstream_timeouts == 1
    assert (forwarder.stats.servfail, forwarder.stats.answered) == (1, 0)


async def test_unreachable_upstream_over_tcp_gives_servfail() -> None:
    # A UDP port nobody answers on; nothing listens on TCP there either.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind((LOCAL, 0))
        forwarder = forwarder_to(Endpoint(LOCAL, silent.getsockname()[1]), timeout=0.3)
        async with running(forwarder) as fwd:
            answer = await ask_tcp(fwd, question("web.demo.svc.cluster.local", 556))
    assert (answer.header.id, answer.header.rcode) == (556, RCODE.SERVFAIL)
    assert forwarder.stats.servfail == 1


async def test_malformed_input_is_counted_and_the_server_keeps_serving() -> None:
    async with fake_upstream() as upstream:
        forwarder = forwarder_to(upstream.endpoint)
        async with running(forwarder) as fwd:
            async with await anyio.create_connected_udp_socket(fwd.host, fwd.port) as sock:
                await sock.send(b"\x00\x01garbage")
                await sock.send(b"\x12\x34\x01")  # shorter than a header
                # An answer is not a query either.
                await sock.send(question("web.demo.svc.cluster.local", 1).reply().pack())
            # Garbage over TCP: the connection is closed without an answer.
            async with await anyio.connect_tcp(fwd.host, fwd.port) as stream:
                await stream.send(struct.pack("!H", 5) + b"\xff" * 5)
                with anyio.fail_after(3), pytest.raises(anyio.EndOfStream):
                    await stream.receive()
            answer = await ask_udp(fwd, question("web.demo.svc.cluster.local", 2))
    assert addresses(answer) == ["10.96.12.7"]
    assert forwarder.stats.malformed == 4
    assert (forwarder.stats.queries, forwarder.stats.answered) == (5, 1)
    assert upstream.udp_queries == 1


async def test_fifty_concurrent_queries_are_all_answered() -> None:
    answers: dict[int, Any] = {}

    async def one(fwd: Endpoint, i: int) -> None:
        answers[i] = await ask_udp(fwd, question(f"svc{i}.test", 1000 + i))

    async with fake_upstream(delay=0.2) as upstream:
        forwarder = forwarder_to(upstream.endpoint)
        async with running(forwarder) as fwd:
            started = anyio.current_time()
            async with anyio.create_task_group() as tg:
                for i in range(50):
                    tg.start_soon(one, fwd, i)
            elapsed = anyio.current_time() - started
    for i in range(50):
        assert answers[i].header.id == 1000 + i
        assert addresses(answers[i]) == [f"10.2.0.{i + 1}"]
    assert elapsed < 3.0  # one after the other would take 10 s
    assert upstream.max_active > 10
    assert (forwarder.stats.answered, forwarder.stats.in_flight) == (50, 0)


async def test_queries_over_the_limit_get_servfail() -> None:
    answers: dict[int, Any] = {}

    async def one(fwd: Endpoint, i: int) -> None:
        answers[i] = await ask_udp(fwd, question(f"svc{i}.test", i))

    async with fake_upstream(delay=0.5) as upstream:
        forwarder = forwarder_to(upstream.endpoint, max_in_flight=2)
        async with running(forwarder) as fwd, anyio.create_task_group() as tg:
            for i in range(5):
                tg.start_soon(one, fwd, i)
                await anyio.sleep(0.02)  # in this order at the forwarder
    rcodes = [answers[i].header.rcode for i in range(5)]
    assert rcodes == [RCODE.NOERROR] * 2 + [RCODE.SERVFAIL] * 3
    assert [answers[i].header.id for i in range(5)] == list(range(5))
    assert forwarder.stats.overloaded == 3
    assert (forwarder.stats.answered, forwarder.stats.servfail) == (2, 3)
    assert upstream.udp_queries == 2


@pytest.mark.parametrize(
    ("upstream", "listen", "message"),
    [
        (Endpoint("kube-dns.kube-system", 53), Endpoint(LOCAL, 53), "must be an IP address"),
        (Endpoint("10.96.0.10", 53), Endpoint("localhost", 53), "must be an IP address"),
        (Endpoint(LOCAL, 5353), Endpoint(LOCAL, 5353), "would loop"),
        (Endpoint(LOCAL, 5353), Endpoint("0.0.0.0", 5353), "would loop"),
        (Endpoint("10.96.0.10", 0), Endpoint(LOCAL, 53), "not a port"),
    ],
)
def test_bad_configuration_is_refused(upstream: Endpoint, listen: Endpoint, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DnsForwarder(upstream, listen)
