"""The platform's readiness probe for cluster DNS, against a real UDP DNS server (dnslib)."""

from __future__ import annotations

import importlib.util
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from dnslib import QTYPE, RCODE, RR, A, DNSRecord

PROBE = Path(__file__).resolve().parents[1] / "platform" / "tools" / "dns_probe.py"


def load_probe() -> ModuleType:
    spec = importlib.util.spec_from_file_location("dns_probe", PROBE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


RECORDS = {
    "kubernetes.default.svc.cluster.local.": ["10.96.0.1"],
    "two.example.": ["10.0.0.1", "10.0.0.2"],
}


@pytest.fixture
def dns_server() -> Iterator[int]:
    """A UDP DNS server on 127.0.0.1 that knows RECORDS and answers NXDOMAIN otherwise."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                data, addr = sock.recvfrom(4096)
            except TimeoutError:
                continue
            request = DNSRecord.parse(data)
            reply = request.reply()
            name = str(request.q.qname)
            if name in RECORDS and request.q.qtype == QTYPE.A:
                for address in RECORDS[name]:
                    reply.add_answer(RR(name, QTYPE.A, rdata=A(address), ttl=5))
            else:
                reply.header.rcode = RCODE.NXDOMAIN
            sock.sendto(reply.pack(), addr)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield sock.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        sock.close()


def test_probe_returns_the_a_record(dns_server: int) -> None:
    probe = load_probe()
    found = probe.query("127.0.0.1", "kubernetes.default.svc.cluster.local", 2, port=dns_server)
    assert found == ["10.96.0.1"]


def test_probe_reads_every_answer(dns_server: int) -> None:
    assert load_probe().query("127.0.0.1", "two.example", 2, port=dns_server) == [
        "10.0.0.1",
        "10.0.0.2",
    ]


def test_probe_returns_nothing_for_nxdomain(dns_server: int) -> None:
    assert load_probe().query("127.0.0.1", "missing.example", 2, port=dns_server) == []


def test_probe_raises_when_nothing_answers() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    with pytest.raises(TimeoutError):
        load_probe().query("127.0.0.1", "x.example", 0.5, port=port)
