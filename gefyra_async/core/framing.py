"""Datagrams over a byte stream: each one prefixed with its length, 2 bytes big-endian.

A TCP stream (e.g. a port-forward through the Kubernetes API server) keeps the bytes but
not the boundaries of the WireGuard datagrams sent over it; the length prefix puts them
back, as RFC 1035 4.2.2 does for DNS over TCP. Two bytes bound a datagram to 65535 bytes,
which is also the most a UDP datagram can carry. Pure logic, no I/O.
"""

from __future__ import annotations

import struct

HEADER = struct.Struct("!H")
MAX_DATAGRAM = 65535


class FramingError(ValueError):
    """The stream does not carry frames of the agreed size; the connection should end."""


def _checked_limit(max_size: int) -> int:
    if not 0 <= max_size <= MAX_DATAGRAM:
        raise ValueError(f"max_size must be between 0 and {MAX_DATAGRAM}, not {max_size}")
    return max_size


def encode(datagram: bytes, *, max_size: int = MAX_DATAGRAM) -> bytes:
    """DATAGRAM as one frame; FramingError if it is longer than ``max_size``."""
    if len(datagram) > _checked_limit(max_size):
        raise FramingError(f"a datagram of {len(datagram)} bytes exceeds the {max_size} allowed")
    return HEADER.pack(len(datagram)) + datagram


class FrameDecoder:
    """Turns the bytes of a stream, in chunks of any size, back into datagrams.

    A frame announcing more than ``max_size`` bytes is refused as soon as its header is
    seen, before its payload is buffered, so a peer cannot make the decoder hold more than
    one frame's worth. After a FramingError the decoder stays broken: the stream cannot be
    resynchronised, as nothing marks where the next frame starts.
    """

    def __init__(self, *, max_size: int = MAX_DATAGRAM) -> None:
        self.max_size = _checked_limit(max_size)
        self._buffer = bytearray()
        self._error: FramingError | None = None

    @property
    def pending(self) -> int:
        """Bytes held of a frame not yet complete; 0 at a frame boundary."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes]:
        """The datagrams DATA completes, in order (often none, or several)."""
        if self._error is not None:
            raise self._error
        buffer = self._buffer
        buffer += data
        frames: list[bytes] = []
        start = 0
        while len(buffer) - start >= HEADER.size:
            (length,) = HEADER.unpack_from(buffer, start)
            if length > self.max_size:
                self._error = FramingError(
                    f"a frame announces {length} bytes, more than the {self.max_size} allowed"
                )
                buffer.clear()
                raise self._error
            end = start + HEADER.size + length
            if end > len(buffer):
                break
            frames.append(bytes(buffer[start + HEADER.size : end]))
            start = end
        # One deletion per feed, not one per frame: the rest moves once.
        del buffer[:start]
        return frames

    def finish(self) -> None:
        """Check that the stream ended at a frame boundary; FramingError if it did not."""
        if self._error is not None:
            raise self._error
        if self._buffer:
            raise FramingError(f"the stream ended inside a frame ({self.pending} bytes held)")
