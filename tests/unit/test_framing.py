"""Length-prefixed datagrams over a byte stream (core/framing.py)."""

from __future__ import annotations

import random

import pytest

from gefyra_async.core.framing import MAX_DATAGRAM, FrameDecoder, FramingError, encode


def test_encode_prefixes_the_length_big_endian() -> None:
    assert encode(b"wg") == b"\x00\x02wg"
    assert encode(b"x" * 258)[:2] == b"\x01\x02"


def test_empty_datagram_is_a_frame_of_its_own() -> None:
    decoder = FrameDecoder()
    assert decoder.feed(encode(b"") + encode(b"a") + encode(b"")) == [b"", b"a", b""]
    assert decoder.pending == 0


def test_frame_split_at_every_byte_comes_out_once_complete() -> None:
    stream = encode(b"handshake initiation") + encode(b"second")
    decoder = FrameDecoder()
    out: list[bytes] = []
    for i in range(len(stream)):
        out += decoder.feed(stream[i : i + 1])
        if i < len(encode(b"handshake initiation")) - 1:
            assert out == []
    assert out == [b"handshake initiation", b"second"]
    decoder.finish()


def test_many_frames_in_random_chunks_come_out_intact_and_in_order() -> None:
    rng = random.Random(7)
    datagrams = [
        rng.randbytes(rng.choice([0, 1, 32, 148, 1420, 9000, MAX_DATAGRAM])) for _ in range(500)
    ]
    stream = b"".join(encode(d) for d in datagrams)
    decoder = FrameDecoder()
    out: list[bytes] = []
    position = 0
    while position < len(stream):
        size = rng.choice([1, 2, 3, 100, 1500, 70000, 300000])
        out += decoder.feed(stream[position : position + size])
        position += size
    assert out == datagrams
    decoder.finish()


def test_merged_frames_in_one_chunk() -> None:
    datagrams = [bytes([i]) * i for i in range(100)]
    assert FrameDecoder().feed(b"".join(encode(d) for d in datagrams)) == datagrams


def test_largest_datagram_passes_and_a_longer_one_is_refused() -> None:
    biggest = b"\xff" * MAX_DATAGRAM
    assert FrameDecoder().feed(encode(biggest)) == [biggest]
    with pytest.raises(FramingError, match="65536 bytes exceeds"):
        encode(biggest + b"!")


def test_oversized_frame_is_refused_from_its_header_alone() -> None:
    decoder = FrameDecoder(max_size=1500)
    assert decoder.feed(encode(b"ok")) == [b"ok"]
    # Only the header of the oversized frame has arrived: refused before any payload.
    with pytest.raises(FramingError, match="announces 1501 bytes"):
        decoder.feed(b"\x05\xdd")
    assert decoder.pending == 0
    # Broken for good: nothing marks where a next frame would start.
    with pytest.raises(FramingError):
        decoder.feed(encode(b"later"))
    with pytest.raises(FramingError):
        decoder.finish()


def test_encode_honours_a_smaller_limit() -> None:
    with pytest.raises(FramingError):
        encode(b"x" * 11, max_size=10)
    assert encode(b"x" * 10, max_size=10) == b"\x00\x0a" + b"x" * 10


def test_limit_must_fit_the_two_byte_header() -> None:
    with pytest.raises(ValueError, match="max_size"):
        FrameDecoder(max_size=MAX_DATAGRAM + 1)
    with pytest.raises(ValueError, match="max_size"):
        encode(b"", max_size=-1)


def test_stream_ending_inside_a_frame_is_reported() -> None:
    decoder = FrameDecoder()
    assert decoder.feed(encode(b"complete") + encode(b"cut short")[:5]) == [b"complete"]
    assert decoder.pending == 5
    with pytest.raises(FramingError, match="ended inside a frame"):
        decoder.finish()


def test_header_split_across_chunks() -> None:
    decoder = FrameDecoder()
    frame = encode(b"z" * 300)
    assert decoder.feed(frame[:1]) == []
    assert decoder.feed(frame[1:2]) == []
    assert decoder.feed(frame[2:]) == [b"z" * 300]
