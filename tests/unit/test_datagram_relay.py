"""The datagram relays over a real TCP stream, against a UDP echo server, all on 127.0.0.1.

    UDP client ─▶ udp_to_stream ══TCP══▶ serve_stream_relay ─▶ UDP echo server
               ◀─                ◀═════                      ◀─

Every packet in these tests goes to 127.0.0.1 only. Each test checks that it leaves no
task behind; waiting is on observable outcomes (an echo, the end of a stream), never on time.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial

import anyio
import anyio.abc
import anyio.lowlevel
import pytest
from anyio.abc import SocketAttribute

from gefyra_async.adapters.datagram_relay import RelayStats, serve_stream_relay, udp_to_stream
from gefyra_async.core import framing

pytestmark = pytest.mark.anyio

LOCAL = "127.0.0.1"
TIMEOUT = 10.0
MAX_UDP_PAYLOAD = 65507  # the most one IPv4 UDP datagram carries


def tasks_now() -> set[asyncio.Task[object]]:
    """The tasks alive now: a test compares its start and its end."""
    return set(asyncio.all_tasks())


async def udp_echo(*, task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED) -> None:
    """Sends every datagram back to its sender (WireGuard stands in here)."""
    async with await anyio.create_udp_socket(local_host=LOCAL) as sock:
        task_status.started(int(sock.extra(SocketAttribute.local_port)))
        async for datagram, sender in sock:
            await sock.sendto(datagram, *sender)


async def wait_until(condition: Callable[[], bool]) -> None:
    """Yield to the event loop until CONDITION holds (the caller's fail_after bounds it)."""
    while not condition():
        await anyio.lowlevel.checkpoint()


@dataclass
class Chain:
    """The whole path, started: ``client`` is connected to udp_to_stream's port."""

    client: anyio.abc.ConnectedUDPSocket
    local_port: int  # udp_to_stream's
    client_stats: RelayStats
    server_stats: RelayStats
    relay_port: int
    client_ended: anyio.Event


@asynccontextmanager
async def chain(*, max_frame: int = framing.MAX_DATAGRAM) -> AsyncIterator[Chain]:
    before = tasks_now()
    with anyio.fail_after(TIMEOUT):
        async with anyio.create_task_group() as tg:
            echo_port = await tg.start(udp_echo)
            server_stats, client_stats = RelayStats(), RelayStats()
            relay_port = await tg.start(
                partial(
                    serve_stream_relay,
                    listen_port=0,
                    udp_target=(LOCAL, echo_port),
                    max_frame=max_frame,
                    stats=server_stats,
                )
            )
            client_ended = anyio.Event()
            async with await anyio.connect_tcp(LOCAL, relay_port) as tcp:

                async def client_end(*, task_status: anyio.abc.TaskStatus[int]) -> None:
                    await udp_to_stream(
                        stream=tcp, max_frame=max_frame, stats=client_stats, task_status=task_status
                    )
                    client_ended.set()

                local_port = await tg.start(client_end)
                async with await anyio.create_connected_udp_socket(LOCAL, local_port) as client:
                    yield Chain(
                        client, local_port, client_stats, server_stats, relay_port, client_ended
                    )
                tg.cancel_scope.cancel()
    assert tasks_now() <= before


async def test_datagrams_come_back_intact_and_in_order() -> None:
    rng = random.Random(3)
    async with chain() as c:
        # A burst, as WireGuard sends them: all out before the first echo is read.
        burst = [rng.randbytes(rng.randrange(1, 1421)) for _ in range(64)]
        for datagram in burst:
            await c.client.send(datagram)
        assert [await c.client.receive() for _ in burst] == burst
        # The extremes, one at a time, up to the largest UDP payload. (Not empty: asyncio
        # before Python 3.13 silently sends no empty datagram, and WireGuard sends none.)
        for size in (1, 1420, 9000, MAX_UDP_PAYLOAD):
            datagram = rng.randbytes(size)
            await c.client.send(datagram)
            assert await c.client.receive() == datagram
        assert c.client_stats.to_stream == c.client_stats.from_stream == 68
        assert c.server_stats.streams_active == 1
        assert c.server_stats.to_stream == c.server_stats.from_stream == 68


async def test_client_end_returns_when_the_server_ends_the_stream() -> None:
    before = tasks_now()
    with anyio.fail_after(TIMEOUT):
        async with anyio.create_task_group() as tg:
            echo_port = await tg.start(udp_echo)
            server_scope = anyio.CancelScope()

            async def server(*, task_status: anyio.abc.TaskStatus[int]) -> None:
                with server_scope:
                    await serve_stream_relay(
                        listen_port=0, udp_target=(LOCAL, echo_port), task_status=task_status
                    )

            relay_port = await tg.start(server)
            async with await anyio.connect_tcp(LOCAL, relay_port) as tcp:
                ended = anyio.Event()

                async def client_end(*, task_status: anyio.abc.TaskStatus[int]) -> None:
                    await udp_to_stream(stream=tcp, task_status=task_status)
                    ended.set()

                local_port = await tg.start(client_end)
                async with await anyio.create_connected_udp_socket(LOCAL, local_port) as client:
                    await client.send(b"ping")
                    assert await client.receive() == b"ping"
                    server_scope.cancel()  # closes the server's end of the stream
                    await ended.wait()  # udp_to_stream returned, without an error
            tg.cancel_scope.cancel()
    assert tasks_now() <= before


async def test_server_ends_its_relay_when_the_client_closes_the_stream() -> None:
    before = tasks_now()
    stats = RelayStats()
    with anyio.fail_after(TIMEOUT):
        async with anyio.create_task_group() as tg:
            echo_port = await tg.start(udp_echo)
            relay_port = await tg.start(
                partial(
                    serve_stream_relay,
                    listen_port=0,
                    udp_target=(LOCAL, echo_port),
                    stats=stats,
                )
            )
            async with await anyio.connect_tcp(LOCAL, relay_port) as tcp:
                await tcp.send(framing.encode(b"one") + framing.encode(b"two"))
                assert await receive_frames(tcp, 2) == [b"one", b"two"]
                await tcp.send_eof()
                # The server closes its side once the relay has ended.
                with pytest.raises(anyio.EndOfStream):
                    await tcp.receive()
            assert (stats.streams_active, stats.streams_total) == (0, 1)
            tg.cancel_scope.cancel()
    assert tasks_now() <= before


async def test_streams_beyond_the_limit_are_closed_at_once() -> None:
    before = tasks_now()
    stats = RelayStats()
    with anyio.fail_after(TIMEOUT):
        async with anyio.create_task_group() as tg:
            echo_port = await tg.start(udp_echo)
            relay_port = await tg.start(
                partial(
                    serve_stream_relay,
                    listen_port=0,
                    udp_target=(LOCAL, echo_port),
                    max_streams=2,
                    stats=stats,
                )
            )
            first = await anyio.connect_tcp(LOCAL, relay_port)
            second = await anyio.connect_tcp(LOCAL, relay_port)
            for stream in (first, second):
                await stream.send(framing.encode(b"hello"))
                assert await receive_frames(stream, 1) == [b"hello"]
            async with await anyio.connect_tcp(LOCAL, relay_port) as third:
                with pytest.raises(anyio.EndOfStream):
                    await third.receive()
            assert (stats.streams_refused, stats.streams_active) == (1, 2)

            # Once one of the two has ended, a new stream is relayed again.
            await first.send_eof()
            with pytest.raises(anyio.EndOfStream):
                await first.receive()
            async with await anyio.connect_tcp(LOCAL, relay_port) as fourth:
                await fourth.send(framing.encode(b"again"))
                assert await receive_frames(fourth, 1) == [b"again"]
            await first.aclose()
            await second.aclose()
            tg.cancel_scope.cancel()
    assert tasks_now() <= before


async def test_server_drops_a_stream_that_sends_an_oversized_frame() -> None:
    before = tasks_now()
    stats = RelayStats()
    with anyio.fail_after(TIMEOUT):
        async with anyio.create_task_group() as tg:
            echo_port = await tg.start(udp_echo)
            relay_port = await tg.start(
                partial(
                    serve_stream_relay,
                    listen_port=0,
                    udp_target=(LOCAL, echo_port),
                    max_frame=1500,
                    stats=stats,
                )
            )
            async with await anyio.connect_tcp(LOCAL, relay_port) as good:
                async with await anyio.connect_tcp(LOCAL, relay_port) as bad:
                    await bad.send(b"\x05\xdd")  # announces 1501 bytes
                    with pytest.raises(anyio.EndOfStream):
                        await bad.receive()
                assert stats.streams_malformed == 1
                # The other stream is not disturbed.
                await good.send(framing.encode(b"x" * 1500))
                assert await receive_frames(good, 1) == [b"x" * 1500]
            tg.cancel_scope.cancel()
    assert tasks_now() <= before


async def test_client_end_raises_on_a_stream_that_sends_garbage() -> None:
    before = tasks_now()
    with anyio.fail_after(TIMEOUT):
        async with connected_pair() as (ours, theirs):
            await theirs.send(b"\xff\xff")
            with pytest.raises(framing.FramingError, match="announces 65535 bytes"):
                await udp_to_stream(stream=ours, max_frame=1500)
    assert tasks_now() <= before


async def test_client_end_drops_frames_until_wireguard_has_spoken() -> None:
    before = tasks_now()
    stats = RelayStats()
    with anyio.fail_after(TIMEOUT):
        async with connected_pair() as (ours, theirs), anyio.create_task_group() as tg:
            local_port = await tg.start(partial(udp_to_stream, stream=ours, stats=stats))
            await theirs.send(framing.encode(b"too early"))
            await wait_until(lambda: stats.dropped_no_peer == 1)
            async with await anyio.create_connected_udp_socket(LOCAL, local_port) as client:
                await client.send(b"initiation")
                assert await receive_frames(theirs, 1) == [b"initiation"]
                await theirs.send(framing.encode(b"response"))
                assert await client.receive() == b"response"
            assert (stats.to_stream, stats.from_stream) == (1, 1)
            tg.cancel_scope.cancel()
    assert tasks_now() <= before


async def test_client_end_drops_datagrams_over_the_frame_limit() -> None:
    async with chain(max_frame=1000) as c:
        await c.client.send(b"y" * 1001)
        await c.client.send(b"y" * 1000)
        assert await c.client.receive() == b"y" * 1000
        assert c.client_stats.dropped_oversized == 1


async def test_cancelling_the_client_end_closes_its_socket() -> None:
    async with chain() as c:
        await c.client.send(b"before")
        assert await c.client.receive() == b"before"
    # The chain's task group was cancelled while udp_to_stream waited on both sides
    # (chain() asserted that no task was left): it did not end on its own ...
    assert not c.client_ended.is_set()
    # ... and its UDP port is free again.
    async with await anyio.create_udp_socket(local_host=LOCAL, local_port=c.local_port) as again:
        assert again.extra(SocketAttribute.local_port) == c.local_port


# ---- helpers ------------------------------------------------------------------------------


async def receive_frames(stream: anyio.abc.ByteReceiveStream, count: int) -> list[bytes]:
    decoder = framing.FrameDecoder()
    frames: list[bytes] = []
    while len(frames) < count:
        frames += decoder.feed(await stream.receive())
    return frames


@asynccontextmanager
async def connected_pair() -> AsyncIterator[tuple[anyio.abc.SocketStream, anyio.abc.SocketStream]]:
    """Two ends of one TCP connection on 127.0.0.1."""
    send, receive = anyio.create_memory_object_stream[anyio.abc.SocketStream](1)
    with send, receive:
        async with await anyio.create_tcp_listener(local_host=LOCAL) as listener:
            port = int(listener.extra(SocketAttribute.local_port))
            async with anyio.create_task_group() as tg:
                tg.start_soon(listener.serve, send.send)
                ours = await anyio.connect_tcp(LOCAL, port)
                theirs = await receive.receive()
                tg.cancel_scope.cancel()
        async with ours, theirs:
            yield ours, theirs
