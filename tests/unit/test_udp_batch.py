"""BatchUdp on 127.0.0.1: datagram boundaries and order survive the kernel's UDP offloads.

A WireGuard batch is a run of equal-size datagrams and a shorter last one; the relays must
hand exactly those datagrams on, whether the kernel coalesced them (UDP_GRO), cut them
(UDP_SEGMENT) or neither.
"""

from __future__ import annotations

import socket

import anyio
import pytest

from gefyra_async.adapters import udp_batch
from gefyra_async.adapters.udp_batch import BatchUdp

pytestmark = pytest.mark.anyio

LOCAL = "127.0.0.1"
BUFFER = 1 << 20


def wireguard_like_batch() -> list[bytes]:
    """70 full-size datagrams (more than one UDP_SEGMENT send), a short one, then two of
    another size: distinct contents, so a reordering or a merge shows."""
    full = [bytes([i]) * 1452 for i in range(70)]
    return [*full, b"\xfe" * 100, b"\x01" * 80, b"\x02" * 80]


async def receive_all(receiver: BatchUdp, count: int) -> list[bytes]:
    got: list[bytes] = []
    with anyio.fail_after(10):
        while len(got) < count:
            got += [data for data, _ in await receiver.receive_batch(1 << 20)]
    return got


def test_runs_cut_where_one_send_must_end() -> None:
    sizes = [len(run[0]) for run in udp_batch._runs(wireguard_like_batch())]
    lengths = [len(run) for run in udp_batch._runs(wireguard_like_batch())]
    # 45 x 1452 bytes fit one datagram's payload limit (65507), 46 do not; the short
    # datagram closes the second run; the 80-byte ones start a run of their own.
    assert lengths == [45, 26, 2]
    assert sizes == [1452, 1452, 80]
    small = [b"y" * 100] * 70  # at most 64 segments a send, however small
    assert [len(r) for r in udp_batch._runs(small)] == [64, 6]
    assert udp_batch._runs([b"", b""]) == [[b""], [b""]]


async def test_segmented_sends_arrive_as_the_same_datagrams_coalesced_or_not() -> None:
    batch = wireguard_like_batch()
    for gro in (True, False):
        receiver = BatchUdp(LOCAL, 0, buffer=BUFFER)
        if not gro:
            receiver.sock.setsockopt(udp_batch.SOL_UDP, udp_batch.UDP_GRO, 0)
        sender = BatchUdp(LOCAL, receiver.port, connect=True, buffer=BUFFER)
        try:
            assert sender.send_nowait(batch) == 0
            assert await receive_all(receiver, len(batch)) == batch
        finally:
            sender.close()
            receiver.close()


async def test_without_offload_each_datagram_goes_alone_and_the_sender_is_known() -> None:
    batch = wireguard_like_batch()
    plain = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    plain.bind((LOCAL, 0))
    receiver = BatchUdp(LOCAL, 0, buffer=BUFFER)
    sender = BatchUdp(LOCAL, 0, buffer=BUFFER)
    sender.gso = False  # as on a kernel that refused UDP_SEGMENT once
    try:
        assert sender.send_nowait(batch, (LOCAL, receiver.port)) == 0
        got: list[tuple[bytes, udp_batch.Address]] = []
        with anyio.fail_after(10):
            while len(got) < len(batch):
                got += await receiver.receive_batch(1 << 20)
        assert [data for data, _ in got] == batch
        assert {origin for _, origin in got} == {(LOCAL, sender.port)}
        # A plain socket, which never asks for GRO, still gets every datagram on its own.
        assert sender.send_nowait(batch[:3], plain.getsockname()) == 0
        assert [plain.recv(2000) for _ in range(3)] == batch[:3]
    finally:
        for s in (sender, receiver):
            s.close()
        plain.close()


async def test_a_refused_offload_falls_back_and_sends_everything() -> None:
    receiver = BatchUdp(LOCAL, 0, buffer=BUFFER)
    sender = BatchUdp(LOCAL, receiver.port, connect=True, buffer=BUFFER)

    def refuse(run: list[bytes], to: object) -> None:
        raise OSError(5, "Input/output error")  # EIO: what a device without offload says

    sender._send_segmented = refuse  # type: ignore[method-assign]
    batch = wireguard_like_batch()
    try:
        assert sender.send_nowait(batch) == 0
        assert sender.gso is False
        assert await receive_all(receiver, len(batch)) == batch
    finally:
        sender.close()
        receiver.close()
