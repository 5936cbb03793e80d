"""Cargo's container reporter: tells stowaway where the connection's local containers are.

Bridges name a local container; its address can change (a re-run, a recreated holder).
Cargo keeps one control connection to stowaway through the tunnel and sends the map
name → address of every container on the connection's network — apps under their own
name (they share their holder's address) — whenever it changes: on Docker events, and
every few seconds for anything an event did not say. Stowaway re-points the bridges at
once, without the CLI being attached. Cargo answers each of stowaway's pings: a cargo that
falls silent (a laptop gone to sleep or away) gets its bridges suspended by stowaway.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from typing import Any

import anyio
import anyio.abc
import structlog
from anyio.streams.buffered import BufferedByteReceiveStream

from gefyra_async.adapters.containers import addresses_on_network, with_label
from gefyra_async.core import control_protocol as proto
from gefyra_async.core import names
from gefyra_async.core.bus import EventBus
from gefyra_async.core.events import ContainerEvent, ControlLost

log = structlog.get_logger(__name__)

SILENCE_LIMIT = 12.0  # stowaway pings every 5 s: two missed pings and some slack
CONNECT_TIMEOUT = 1.0  # per attempt: a SYN lost in a stale tunnel is retried soon, not in 3-7 s
CONNECT_PATIENCE = 60.0  # then the attempt fails, and the supervisor takes over


def describe(exc: BaseException) -> str:
    """The first real error inside EXC (task groups wrap errors in exception groups)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}".rstrip(": ")


class ContainerReporter:
    name = "container-reporter"

    def __init__(
        self,
        docker_factory: Callable[[], Any],
        connection: str,
        network: str,
        control: tuple[str, int],
        period: float = 5.0,
        source: str | None = None,
    ) -> None:
        self.docker_factory = docker_factory
        self.connection = connection
        self.network = network
        self.control = control
        self.period = period
        # Bound to the tunnel address: no attempt leaves before the tunnel is configured
        # (stowaway accepts cargo only from inside the tunnel).
        self.source = source

    async def containers(self, docker: Any) -> dict[str, str]:
        found = await addresses_on_network(docker, self.network)
        for info in await with_label(docker, f"{names.CONNECTION}={self.connection}"):
            app = info.labels.get(names.APP)
            address = info.networks.get(self.network)
            if info.labels.get(names.ROLE) == names.ROLE_HOLDER and app and address:
                found[app] = address
        return found

    async def _connect(self, bus: EventBus) -> anyio.abc.SocketStream:
        host, port = self.control
        give_up = anyio.current_time() + CONNECT_PATIENCE
        while True:
            try:
                with anyio.fail_after(CONNECT_TIMEOUT):
                    return await anyio.connect_tcp(host, port, local_host=self.source)
            except TimeoutError:
                if anyio.current_time() > give_up:
                    raise
                # No answer through the tunnel: have it handshake again, and try again.
                bus.publish(ControlLost(reason="stowaway's control port does not answer"))
            except OSError as exc:
                if exc.errno != errno.EADDRNOTAVAIL:
                    raise
                await anyio.sleep(0.2)  # the tunnel address is not configured yet

    async def run(self, bus: EventBus) -> None:
        try:
            await self._report(bus)
        except Exception as exc:  # lost, silent, refused (a task group wraps them in groups)
            # The supervisor reconnects. Usually through the same tunnel session (a laptop
            # that slept); only when that gets no answer is the tunnel asked to handshake.
            log.info("control connection lost", reason=describe(exc))
            raise

    async def _report(self, bus: EventBus) -> None:
        host, port = self.control
        async with (
            self.docker_factory() as docker,
            bus.subscribe(ContainerEvent, name=self.name) as events,
            await self._connect(bus) as stream,
        ):
            await stream.send(proto.encode(proto.CargoHello(self.connection)))
            log.info("reporting local containers", control=f"{host}:{port}")
            reader = BufferedByteReceiveStream(stream)
            sending = anyio.Lock()

            async def send(message: proto.Message) -> None:
                async with sending:
                    await stream.send(proto.encode(message))

            async with anyio.create_task_group() as tg:

                async def listen() -> None:
                    while True:
                        with anyio.fail_after(SILENCE_LIMIT):
                            line = await reader.receive_until(b"\n", proto.MAX_LINE)
                        msg = proto.decode(line)
                        if isinstance(msg, proto.Error):
                            raise RuntimeError(f"stowaway refused cargo: {msg.message}")
                        if isinstance(msg, proto.Ping):  # the connection is alive: bridges stay
                            await send(proto.Pong())

                tg.start_soon(listen)
                sent: dict[str, str] | None = None
                while True:
                    current = await self.containers(docker)
                    if current != sent:
                        await send(proto.Containers(current))
                        sent = current
                        log.info("local containers reported", containers=current)
                    with anyio.move_on_after(self.period):
                        await events.receive()
                        await anyio.sleep(0.05)
