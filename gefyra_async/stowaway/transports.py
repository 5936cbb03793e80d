"""Stowaway's end of the API transport, and the UDP probe responder.

Clients whose UDP cannot reach the tunnel Service send their WireGuard datagrams through
a port-forward to the relay here, framed on one TCP stream each; the relay hands them to
the WireGuard device on loopback, which answers through the same relay (WireGuard roams
to whatever source a peer's last authenticated packet came from). The probe responder lets
those clients see when UDP works again.
"""

from __future__ import annotations

from functools import partial

import anyio
import structlog

from gefyra_async.adapters.datagram_relay import serve_stream_relay
from gefyra_async.adapters.udp_probe import serve_probes
from gefyra_async.core import names
from gefyra_async.core.bus import EventBus

log = structlog.get_logger(__name__)


class StowawayTransports:
    name = "stowaway-transports"

    def __init__(self, *, max_streams: int) -> None:
        self.max_streams = max_streams

    async def run(self, bus: EventBus) -> None:
        async with anyio.create_task_group() as tg:
            await tg.start(
                partial(
                    serve_stream_relay,
                    listen_port=names.RELAY_PORT,
                    udp_target=("127.0.0.1", names.STOWAWAY_LISTEN_PORT),
                    max_streams=self.max_streams,
                )
            )
            await tg.start(partial(serve_probes, port=names.PROBE_PORT))
            log.info("api transport relay and udp probe responder serving")
