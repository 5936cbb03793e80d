"""WireGuard's UDP datagrams carried over one byte stream, framed by ``core/framing``.

Where UDP cannot reach the cluster, the tunnel's datagrams travel over a TCP stream
instead, e.g. a port-forward through the Kubernetes API server:

    wireguard-go (client) ─UDP─▶ udp_to_stream ══stream══▶ serve_stream_relay ─UDP─▶ wireguard-go
                          ◀─────                ◀════════                      ◀────

Both ends keep UDP's semantics: a datagram that cannot be passed on right now (no peer
yet, a full socket buffer) is dropped and counted, never queued without bound; WireGuard
and the TCP connections inside the tunnel recover from loss as they would on the wire.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import anyio
import anyio.abc
import structlog
from anyio.abc import SocketAttribute

from gefyra_async.adapters.udp_batch import BatchUdp
from gefyra_async.core import framing

log = structlog.get_logger(__name__)

DEFAULT_WIREGUARD = ("127.0.0.1", 51820)
DEFAULT_MAX_STREAMS = 16
RECEIVE_CHUNK = 256 * 1024
# What a broken TCP connection raises in anyio; any of them ends that connection's relay.
_STREAM_ERRORS = (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError)
# Datagrams waiting on a UDP socket are framed into one write of at most this many bytes:
# one stream write (one WebSocket message through the API server) per burst, not per packet.
BATCH_BYTES = 256 * 1024
UDP_BUFFER = 4 * 1024 * 1024  # socket buffers: a burst of WireGuard packets fits


@dataclass
class RelayStats:
    """Counters of one relay, for status views and tests."""

    to_stream: int = 0  # datagrams framed into a stream
    from_stream: int = 0  # frames sent on as datagrams
    dropped_no_peer: int = 0  # frames that arrived before any local datagram named a peer
    dropped_oversized: int = 0  # datagrams longer than the frame limit
    dropped_full: int = 0  # frames not sent on: the UDP socket's buffer was full
    streams_active: int = 0
    streams_total: int = 0  # streams accepted and relayed
    streams_refused: int = 0  # streams closed at once: ``max_streams`` were active
    streams_malformed: int = 0  # streams ended because they sent a frame over the limit


async def udp_to_stream(
    *,
    stream: anyio.abc.ByteStream,
    listen: tuple[str, int] = ("127.0.0.1", 0),
    max_frame: int = framing.MAX_DATAGRAM,
    stats: RelayStats | None = None,
    task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Relay between a local UDP socket (WireGuard's endpoint) and STREAM until it ends.

    Datagrams arriving on ``listen`` are framed into STREAM; frames from STREAM go back as
    datagrams to the address the last local datagram came from, which is WireGuard's
    socket (WireGuard speaks first, so that address is known before an answer arrives).
    Reports the bound UDP port once listening. Returns when STREAM ends; a failure of
    STREAM (its own exception, or FramingError for a peer that sends garbage) is raised.
    Closing STREAM is the caller's business.
    """
    stats = stats if stats is not None else RelayStats()
    host, port = listen
    udp = BatchUdp(host, port, buffer=UDP_BUFFER)
    try:
        bound = udp.port
        peer: tuple[str, int] | None = None  # where the last local datagram came from

        async def datagrams_to_frames() -> None:
            nonlocal peer
            while True:
                frames = []
                for datagram, sender in await udp.receive_batch(BATCH_BYTES):
                    if len(datagram) > max_frame:
                        stats.dropped_oversized += 1
                        continue
                    if sender != peer:
                        log.debug("udp relay peer", peer=f"{sender[0]}:{sender[1]}", port=bound)
                        peer = sender
                    frames.append(framing.encode(datagram))
                if frames:
                    await stream.send(b"".join(frames))
                    stats.to_stream += len(frames)

        async def frames_to_datagrams() -> None:
            decoder = framing.FrameDecoder(max_size=max_frame)
            while True:
                try:
                    data = await stream.receive(RECEIVE_CHUNK)
                except anyio.EndOfStream:
                    _check_finished(decoder)
                    return
                datagrams = decoder.feed(data)
                if not datagrams:
                    continue
                if peer is None:
                    stats.dropped_no_peer += len(datagrams)
                    continue
                dropped = udp.send_nowait(datagrams, peer)
                stats.from_stream += len(datagrams) - dropped
                stats.dropped_full += dropped

        log.info("udp relay listening", listen=f"{host}:{bound}", max_frame=max_frame)
        task_status.started(bound)
        await _until_first_ends(datagrams_to_frames, frames_to_datagrams)
        log.info("udp relay stream ended", listen=f"{host}:{bound}")
    finally:
        udp.close()


async def serve_stream_relay(
    *,
    listen_port: int,
    listen_host: str = "127.0.0.1",
    udp_target: tuple[str, int] = DEFAULT_WIREGUARD,
    max_streams: int = DEFAULT_MAX_STREAMS,
    max_frame: int = framing.MAX_DATAGRAM,
    stats: RelayStats | None = None,
    task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Accept framed streams on ``listen_port`` and relay each to ``udp_target``, until cancelled.

    Each stream gets a fresh UDP socket connected to ``udp_target``, so WireGuard sees each
    stream as a peer endpoint of its own and roams to a reconnected one on its first
    authenticated packet. The default host is loopback: a port-forward connects to
    ``localhost`` inside the pod, and nothing else should reach the relay. At most
    ``max_streams`` are relayed at once; one more is closed at once. Reports the bound TCP
    port once listening.
    """
    if max_streams < 1:
        raise ValueError("at least one stream must be allowed")
    stats = stats if stats is not None else RelayStats()
    target_host, target_port = udp_target
    listener = await anyio.create_tcp_listener(local_host=listen_host, local_port=listen_port)
    async with listener:
        bound = int(listener.extra(SocketAttribute.local_port))

        async def relay_one(tcp: anyio.abc.SocketStream) -> None:
            async with tcp:
                client = _peer(tcp.extra(SocketAttribute.remote_address))
                if stats.streams_active >= max_streams:
                    stats.streams_refused += 1
                    log.warning(
                        "stream relay full, refusing a stream", client=client, limit=max_streams
                    )
                    return
                stats.streams_active += 1
                stats.streams_total += 1
                try:
                    await _relay_stream(
                        tcp, target_host, target_port, max_frame=max_frame, stats=stats
                    )
                except framing.FramingError as exc:
                    stats.streams_malformed += 1
                    log.warning("stream relay dropped a stream", client=client, error=str(exc))
                finally:
                    stats.streams_active -= 1
                log.debug("stream relay stream ended", client=client)

        log.info(
            "stream relay listening",
            listen=f"{listen_host}:{bound}",
            udp_target=f"{target_host}:{target_port}",
            max_streams=max_streams,
        )
        async with anyio.create_task_group() as tg:
            tg.start_soon(listener.serve, relay_one, tg, name="stream-relay:accept")
            task_status.started(bound)


async def _relay_stream(
    tcp: anyio.abc.SocketStream,
    host: str,
    port: int,
    *,
    max_frame: int,
    stats: RelayStats,
) -> None:
    """Relay one accepted stream to a fresh connected UDP socket until either side ends."""
    udp = BatchUdp(host, port, connect=True, buffer=UDP_BUFFER)
    try:

        async def frames_to_datagrams() -> None:
            decoder = framing.FrameDecoder(max_size=max_frame)
            while True:
                try:
                    data = await tcp.receive(RECEIVE_CHUNK)
                except (anyio.EndOfStream, *_STREAM_ERRORS):
                    return
                datagrams = decoder.feed(data)
                dropped = udp.send_nowait(datagrams)
                stats.from_stream += len(datagrams) - dropped
                stats.dropped_full += dropped

        async def datagrams_to_frames() -> None:
            while True:
                frames = []
                for datagram, _ in await udp.receive_batch(BATCH_BYTES):
                    if len(datagram) > max_frame:
                        stats.dropped_oversized += 1
                        continue
                    frames.append(framing.encode(datagram))
                if not frames:
                    continue
                try:
                    await tcp.send(b"".join(frames))
                except _STREAM_ERRORS:
                    return
                stats.to_stream += len(frames)

        await _until_first_ends(frames_to_datagrams, datagrams_to_frames)
    finally:
        udp.close()


async def _until_first_ends(*pumps: Callable[[], Awaitable[None]]) -> None:
    """Run PUMPS concurrently until the first one returns or fails, then stop the others.

    The first failure is raised as it is, not inside an ExceptionGroup, so callers catch
    the adapter's exceptions by their type.
    """
    failures: list[Exception] = []
    async with anyio.create_task_group() as tg:

        async def run(pump: Callable[[], Awaitable[None]]) -> None:
            try:
                await pump()
            except Exception as exc:  # re-raised below, outside the group
                failures.append(exc)
            tg.cancel_scope.cancel()

        for pump in pumps:
            tg.start_soon(run, pump)
    if failures:
        raise failures[0]


def _check_finished(decoder: framing.FrameDecoder) -> None:
    try:
        decoder.finish()
    except framing.FramingError as exc:
        log.warning("udp relay stream ended inside a frame", error=str(exc))


def _peer(address: object) -> str:
    if isinstance(address, tuple):
        return f"{address[0]}:{address[1]}"
    return str(address)
