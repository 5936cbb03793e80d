"""How a connection's WireGuard datagrams reach stowaway: over UDP, or through the API server.

``udp``: cargo sends them to the tunnel Service (a node's NodePort or the load balancer).
``api``: cargo sends them to a relay of the gefyra-async process on the Docker host, which
frames them into one port-forward to stowaway through the Kubernetes API server — only the
API server must be reachable, as for kubectl. UDP is probed while the API transport runs and
taken back as soon as it answers: stowaway echoes a probe on the tunnel Service's ``probe``
port, so the probe needs no WireGuard session and disturbs none.

Pure: message formats and checks of values that cross trust boundaries.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Literal

Transport = Literal["udp", "api"]
Choice = Literal["auto", "udp", "api"]

PROBE_MAGIC = b"gefyra-async-probe/1 "
PROBE_ANSWER = b"gefyra-async-ok/1 "  # shorter than PROBE_MAGIC: no amplification
NONCE_SIZE = 16
PROBE_SIZE = len(PROBE_MAGIC) + NONCE_SIZE

_HOST = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$")


class EndpointError(ValueError):
    """A host:port that cannot be a tunnel endpoint; the message says why."""


def probe(nonce: bytes) -> bytes:
    if len(nonce) != NONCE_SIZE:
        raise ValueError(f"a probe nonce has {NONCE_SIZE} bytes")
    return PROBE_MAGIC + nonce


def answer(datagram: bytes) -> bytes | None:
    """Stowaway's answer to a probe: no larger than the probe (no amplification), and
    nothing at all for anything else."""
    if len(datagram) != PROBE_SIZE or not datagram.startswith(PROBE_MAGIC):
        return None
    return PROBE_ANSWER + datagram[len(PROBE_MAGIC) :]


def answers(datagram: bytes, nonce: bytes) -> bool:
    """Whether DATAGRAM is stowaway's answer to the probe with NONCE."""
    return datagram == PROBE_ANSWER + nonce


def parse_endpoint(value: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` → (host, port); EndpointError with a reason."""
    text = value.strip()
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise EndpointError(f"endpoint {value!r}: {host!r} is not an IPv6 address") from None
    else:
        host, sep, port = text.rpartition(":")
        if sep and not _HOST.match(host):
            raise EndpointError(f"endpoint {value!r}: {host!r} is not a host name or address")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise EndpointError(f"endpoint {value!r} is not host:port with a port from 1 to 65535")
    return host, int(port)


def format_endpoint(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
