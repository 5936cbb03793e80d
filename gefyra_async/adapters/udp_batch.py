"""A non-blocking UDP socket that moves datagrams in batches, with Linux's UDP offloads.

WireGuard pushes tens of thousands of datagrams a second through a relay; one system call
and one Python round per datagram made the relays the tunnel's bottleneck. Linux can
coalesce them (``udp(7)``):

- ``UDP_GRO`` on a receiving socket: one ``recvmsg`` returns a run of datagrams from one
  sender that are all the same size (the last may be shorter), with that size in a control
  message — the datagrams a WireGuard batch (or another socket's ``UDP_SEGMENT`` send) made.
- ``UDP_SEGMENT`` on a send: one ``sendmsg`` of such a run, cut into datagrams by the kernel.
  WireGuard's own sockets (wireguard-go since 2023) read these runs coalesced in turn.

Where a kernel lacks either, the socket falls back to one datagram per call, with the same
results. Datagram boundaries are kept exactly in both cases.
"""

from __future__ import annotations

import errno
import socket
import struct
from collections.abc import Iterable

import anyio

# From <linux/udp.h>; the socket module does not name them.
SOL_UDP = getattr(socket, "SOL_UDP", 17)
UDP_SEGMENT = 103
UDP_GRO = 104
# The kernel's limits on one UDP_SEGMENT send (UDP_MAX_SEGMENTS is 64 before Linux 6.9,
# 128 after; the smaller one works everywhere) and on any one datagram's payload.
MAX_SEGMENTS = 64
MAX_PAYLOAD = 65507
_GSO_SIZE = struct.Struct("=H")
_CMSG_SPACE = socket.CMSG_SPACE(4)
# Errors of a send that says "not this way" rather than "not now": offload is turned off.
_NO_OFFLOAD = (errno.EIO, errno.EINVAL, errno.ENOPROTOOPT, errno.EOPNOTSUPP)

Address = tuple[str, int]


class BatchUdp:
    """A UDP socket bound to (HOST, PORT) — or connected to it with ``connect=True`` —
    whose reads take every datagram waiting and whose sends pass runs on in one call."""

    def __init__(self, host: str, port: int, *, connect: bool = False, buffer: int) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            self.sock.setblocking(False)
            for option, forced in (
                (socket.SO_RCVBUF, getattr(socket, "SO_RCVBUFFORCE", None)),
                (socket.SO_SNDBUF, getattr(socket, "SO_SNDBUFFORCE", None)),
            ):
                try:  # beyond net.core.[rw]mem_max where allowed (root, as WireGuard does)
                    self.sock.setsockopt(socket.SOL_SOCKET, forced or option, buffer)
                except (OSError, TypeError):
                    self.sock.setsockopt(socket.SOL_SOCKET, option, buffer)
            try:
                self.sock.setsockopt(SOL_UDP, UDP_GRO, 1)
                self.gro = True
            except OSError:
                self.gro = False
            self.gso = True  # until a send says otherwise
            if connect:
                self.sock.connect((host, port))
            else:
                self.sock.bind((host, port))
        except OSError:
            self.sock.close()
            raise

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    async def receive_batch(self, max_bytes: int) -> list[tuple[bytes, Address]]:
        """Every datagram waiting, up to about MAX_BYTES, in order; waits for at least one."""
        while True:
            batch: list[tuple[bytes, Address]] = []
            size = 0
            while size < max_bytes:
                try:
                    data, ancillary, _, sender = self.sock.recvmsg(MAX_PAYLOAD + 1, _CMSG_SPACE)
                except BlockingIOError:
                    break
                except ConnectionRefusedError:  # an ICMP error of an earlier send
                    continue
                origin = (str(sender[0]), int(sender[1]))
                size += len(data)
                segment = _segment_size(ancillary)
                if segment and segment < len(data):
                    view = memoryview(data)
                    batch.extend(
                        (bytes(view[at : at + segment]), origin)
                        for at in range(0, len(data), segment)
                    )
                else:
                    batch.append((data, origin))
            if batch:
                return batch
            await anyio.wait_readable(self.sock)

    def send_nowait(self, datagrams: Iterable[bytes], to: Address | None = None) -> int:
        """Send DATAGRAMS at once, runs of one size in one call; how many were not sent
        because the socket's buffer was full (dropped, as on a wire)."""
        dropped = 0
        for run in _runs(list(datagrams)) if self.gso else ([d] for d in datagrams):
            if len(run) == 1:
                dropped += not self._send(run[0], to)
                continue
            try:
                self._send_segmented(run, to)
            except (BlockingIOError, ConnectionRefusedError):
                dropped += len(run)
            except OSError as exc:
                if exc.errno not in _NO_OFFLOAD:
                    raise
                self.gso = False
                dropped += sum(not self._send(d, to) for d in run)
        return dropped

    def _send(self, datagram: bytes, to: Address | None) -> bool:
        try:
            if to is None:
                self.sock.send(datagram)
            else:
                self.sock.sendto(datagram, to)
        except (BlockingIOError, ConnectionRefusedError):
            return False
        return True

    def _send_segmented(self, run: list[bytes], to: Address | None) -> None:
        control = [(SOL_UDP, UDP_SEGMENT, _GSO_SIZE.pack(len(run[0])))]
        if to is None:
            self.sock.sendmsg([b"".join(run)], control)
        else:
            self.sock.sendmsg([b"".join(run)], control, 0, to)

    def close(self) -> None:
        self.sock.close()


def _segment_size(ancillary: list[tuple[int, int, bytes]]) -> int:
    for level, kind, data in ancillary:
        if level == SOL_UDP and kind == UDP_GRO and len(data) >= 2:
            return int(_GSO_SIZE.unpack_from(data)[0])
    return 0


def _runs(datagrams: list[bytes]) -> list[list[bytes]]:
    """DATAGRAMS cut into runs one ``UDP_SEGMENT`` send can carry: the same size, except a
    shorter last one; at most MAX_SEGMENTS and MAX_PAYLOAD bytes each."""
    runs: list[list[bytes]] = []
    run: list[bytes] = []
    size = total = 0
    for datagram in datagrams:
        length = len(datagram)
        if (
            run
            and 0 < length <= size
            and len(run) < MAX_SEGMENTS
            and total + length <= MAX_PAYLOAD
            and len(run[-1]) == size
        ):
            run.append(datagram)
            total += length
            continue
        run = [datagram]
        runs.append(run)
        size = total = length
    return runs
