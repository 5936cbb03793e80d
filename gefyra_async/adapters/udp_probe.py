"""UDP reachability probes of the tunnel Service (see core/transport.py): stowaway's
responder and the client's prober."""

from __future__ import annotations

import os

import anyio
import structlog
from anyio.abc import SocketAttribute

from gefyra_async.core import transport

log = structlog.get_logger(__name__)


async def serve_probes(
    *,
    port: int,
    host: str = "0.0.0.0",
    task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Answer well-formed probes on PORT (a shorter answer, nothing for anything else)."""
    async with await anyio.create_udp_socket(local_host=host, local_port=port) as udp:
        task_status.started(int(udp.extra(SocketAttribute.local_port)))
        async for datagram, sender in udp:
            reply = transport.answer(datagram)
            if reply is not None:
                await udp.sendto(reply, *sender)


async def udp_answers(host: str, port: int, *, attempts: int = 3, wait: float = 1.0) -> bool:
    """Whether a probe to HOST:PORT is answered (ATTEMPTS tries, WAIT seconds each)."""
    try:
        async with await anyio.create_connected_udp_socket(host, port) as udp:
            for _ in range(attempts):
                nonce = os.urandom(transport.NONCE_SIZE)
                await udp.send(transport.probe(nonce))
                with anyio.move_on_after(wait):
                    while True:
                        if transport.answers(await udp.receive(), nonce):
                            return True
    except OSError as exc:  # unreachable network, refused (ICMP), name not resolved
        log.debug("udp probe failed", target=f"{host}:{port}", error=str(exc))
    return False
