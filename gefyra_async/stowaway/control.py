"""Stowaway's control server: one JSON-lines connection per carrier and per cargo.

Carriers (in bridged pods) say hello with a token stowaway gave them, receive their
pod's whole config and answer which ports they redirect. Cargos (on developer machines)
connect through the tunnel and report the addresses of their local containers; the
source address of that connection is the client's tunnel address, which WireGuard
authenticates. The messages and their codec are ``core/control_protocol`` (listed in
docs/bridge.md); a peer whose line does not decode is answered with an error and hung up
on. The pod-rewriter reads the sessions and pushes configs; every change of a session is a
``PeerChanged`` event on the bus.
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.abc
import structlog
from anyio.streams.buffered import BufferedByteReceiveStream

from gefyra_async.core import control_protocol as proto
from gefyra_async.core.bus import EventBus
from gefyra_async.core.control_plane import carrier_token
from gefyra_async.core.events import PeerChanged

log = structlog.get_logger(__name__)

PING_PERIOD = 5.0
# How a peer's connection may end (a pod deleted, a carrier killed, a bad line): normal.
CONNECTION_ENDED = (
    TimeoutError,
    ValueError,
    anyio.IncompleteRead,
    anyio.EndOfStream,
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    anyio.DelimiterNotFound,
    OSError,
)


class Session:
    """One connected peer; ``send`` is safe to call from any task."""

    def __init__(self, stream: anyio.abc.ByteStream) -> None:
        self.stream = stream
        self.lock = anyio.Lock()
        self.connected_at = time.time()

    async def send(self, message: proto.Message) -> bool:
        data = proto.encode(message)
        try:
            async with self.lock:
                await self.stream.send(data)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            return False
        return True

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.stream.aclose()


@dataclass(eq=False)
class CarrierSession:
    session: Session
    namespace: str
    pod: str
    carrier: str
    sent_version: int = 0
    sent_routes: list[dict[str, Any]] | None = None
    applied_version: int = -1
    applied_ports: dict[str, int] = field(default_factory=dict)
    applied_at: float = 0.0  # monotonic
    stats: dict[str, Any] = field(default_factory=dict)
    dropping: set[str] = field(default_factory=set)  # bridges the last config removed

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.pod}"

    def applied_bridges(self) -> set[str]:
        """Bridges the carrier confirmed (its last applied version is the last sent)."""
        if self.applied_version != self.sent_version or self.sent_routes is None:
            return set()
        ports = {int(p) for p in self.applied_ports}
        return {
            b["name"]
            for r in self.sent_routes
            if int(r["port"]) in ports
            for b in r.get("bridges", [])
        }

    def settled(self) -> bool:
        """The carrier confirmed the last config it was sent."""
        return self.applied_version == self.sent_version

    def sent_bridges(self) -> set[str]:
        return {b["name"] for r in self.sent_routes or [] for b in r.get("bridges", [])}


@dataclass(eq=False)
class CargoSession:
    session: Session
    address: str  # the client's tunnel address
    connection: str
    containers: dict[str, str] = field(default_factory=dict)


class ControlServer:
    name = "control"

    def __init__(
        self,
        port: int,
        secret: str,
        tunnel_cidr: str,
        host: str = "0.0.0.0",
        cargo_silence_limit: float = 20.0,
    ) -> None:
        self.port = port
        self.cargo_silence_limit = cargo_silence_limit
        self.host = host
        self.secret = secret
        self.tunnel = ipaddress.ip_network(tunnel_cidr)
        self.carriers: dict[str, CarrierSession] = {}
        self.cargos: dict[str, CargoSession] = {}
        # Last map each cargo reported, kept across its reconnects so bridges don't flap.
        self.containers: dict[str, dict[str, str]] = {}
        self.cargo_heard: dict[str, float] = {}  # tunnel address → monotonic, last message
        self.bus: EventBus | None = None

    # ---- used by the pod-rewriter ----

    async def push(self, key: str, routes: list[dict[str, Any]]) -> bool:
        """Send ROUTES to the carrier of pod KEY unless it already has them."""
        cs = self.carriers.get(key)
        if cs is None:
            return False
        if cs.sent_routes == routes:
            return True
        cs.dropping = cs.sent_bridges() - {b["name"] for r in routes for b in r.get("bridges", [])}
        cs.sent_version += 1
        cs.sent_routes = routes
        return await cs.session.send(proto.Config(cs.sent_version, routes))

    def containers_of(self, address: str) -> dict[str, str] | None:
        return self.containers.get(address)

    # ---- the server ----

    def _changed(self, role: str, key: str, what: str) -> None:
        if self.bus is not None:
            self.bus.publish(PeerChanged(role=role, key=key, what=what))

    async def run(self, bus: EventBus) -> None:
        self.bus = bus
        listener = await anyio.create_tcp_listener(
            local_host=self.host, local_port=self.port, reuse_port=False
        )
        log.info("control server listening", port=self.port)
        async with listener:
            await listener.serve(self._handle)

    async def _handle(self, stream: anyio.abc.SocketStream) -> None:
        remote = stream.extra(anyio.abc.SocketAttribute.remote_address)
        peer = str(remote[0]) if isinstance(remote, tuple) else str(remote)
        session = Session(stream)
        reader = BufferedByteReceiveStream(stream)
        try:
            with anyio.fail_after(10):
                hello = proto.decode(await reader.receive_until(b"\n", proto.MAX_LINE))
            if isinstance(hello, proto.CarrierHello):
                await self._carrier(session, reader, hello, peer)
            elif isinstance(hello, proto.CargoHello):
                await self._cargo(session, reader, hello, peer)
            else:
                await session.send(proto.Error("expected hello"))
        except proto.ProtocolError as exc:
            log.warning("control peer refused: malformed message", peer=peer, error=str(exc))
            await session.send(proto.Error(str(exc)))
        except CONNECTION_ENDED as exc:
            log.debug("control connection ended", peer=peer, error=repr(exc))
        except Exception as exc:  # one connection must never take the server down
            log.warning("control connection failed", peer=peer, error=repr(exc))
        finally:
            await session.close()

    async def _messages(self, reader: BufferedByteReceiveStream, silence: float | None) -> Any:
        while True:
            with anyio.fail_after(silence):  # a peer that went silent is gone
                line = await reader.receive_until(b"\n", proto.MAX_LINE)
            if line.strip():
                yield proto.decode(line)

    async def _pinger(self, session: Session) -> None:
        while await session.send(proto.Ping()):  # noqa: ASYNC110 - a heartbeat
            await anyio.sleep(PING_PERIOD)

    async def _converse(
        self,
        session: Session,
        reader: BufferedByteReceiveStream,
        on_message: Callable[[proto.Message], bool],
        silence: float | None = None,
    ) -> None:
        """Ping the peer and hand each of its messages to ON_MESSAGE (False: stop) until it
        goes; the end of the connection is normal, not an error, and so is a peer that
        breaks the protocol (it is told why and hung up on)."""
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._pinger, session)
            try:
                async for msg in self._messages(reader, silence):
                    if not on_message(msg):
                        break
            except proto.ProtocolError as exc:
                log.warning("control peer hung up on: malformed message", error=str(exc))
                await session.send(proto.Error(str(exc)))
            except CONNECTION_ENDED as exc:
                log.debug("control connection ended", error=repr(exc))
            finally:
                tg.cancel_scope.cancel()

    async def _carrier(
        self,
        session: Session,
        reader: BufferedByteReceiveStream,
        hello: proto.CarrierHello,
        peer: str,
    ) -> None:
        ns, pod, carrier = hello.namespace, hello.pod, hello.carrier
        expected = carrier_token(self.secret, ns, pod, carrier)
        if not hmac.compare_digest(expected, hello.token):
            log.warning("carrier refused: bad token", pod=f"{ns}/{pod}", peer=peer)
            await session.send(proto.Error("bad token"))
            return
        cs = CarrierSession(session, ns, pod, carrier)
        old = self.carriers.get(cs.key)
        if old is not None:
            await old.session.close()
        self.carriers[cs.key] = cs
        log.info("carrier connected", pod=cs.key, carrier=carrier, peer=peer)
        self._changed("carrier", cs.key, "connected")

        def on_message(msg: proto.Message) -> bool:
            if isinstance(msg, proto.Applied):
                cs.applied_version = msg.version
                cs.applied_ports = dict(msg.ports)
                cs.applied_at = time.monotonic()
                self._changed("carrier", cs.key, "applied")
            elif isinstance(msg, proto.Stats):
                cs.stats = dict(msg.bridges)
                self._changed("carrier", cs.key, "stats")
            return not isinstance(msg, proto.Bye)

        try:
            await self._converse(session, reader, on_message)
        finally:
            if self.carriers.get(cs.key) is cs:
                del self.carriers[cs.key]
            log.info("carrier left", pod=cs.key, carrier=carrier)
            self._changed("carrier", cs.key, "closed")

    async def _cargo(
        self,
        session: Session,
        reader: BufferedByteReceiveStream,
        hello: proto.CargoHello,
        peer: str,
    ) -> None:
        try:
            inside = ipaddress.ip_address(peer) in self.tunnel
        except ValueError:
            inside = False
        if not inside:
            log.warning("cargo refused: not from the tunnel", peer=peer)
            await session.send(proto.Error("cargo must connect through the tunnel"))
            return
        cargo = CargoSession(session, peer, hello.connection)
        old = self.cargos.get(peer)
        if old is not None:
            await old.session.close()
        self.cargos[peer] = cargo
        log.info("cargo connected", address=peer, connection=cargo.connection)
        self.cargo_heard[peer] = time.monotonic()
        self._changed("cargo", peer, "connected")  # a suspended bridge resumes now

        def on_message(msg: proto.Message) -> bool:
            self.cargo_heard[peer] = time.monotonic()
            if isinstance(msg, proto.Containers):
                found = dict(msg.containers)
                if found != self.containers.get(peer):
                    cargo.containers = found
                    self.containers[peer] = found
                    log.info("local containers", address=peer, containers=found)
                    self._changed("cargo", peer, "containers")
            return True

        try:
            await self._converse(session, reader, on_message, self.cargo_silence_limit)
        finally:
            if self.cargos.get(peer) is cargo:
                del self.cargos[peer]
            log.info("cargo left", address=peer)
            self._changed("cargo", peer, "closed")
