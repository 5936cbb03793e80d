"""The carrier agent: ``python3 -m gefyra_async.carrier`` in a bridged pod.

Stowaway adds carrier to a pod as an ephemeral container (NET_ADMIN, the pod's network
namespace) and gives it, in its environment, where the control server is and a token.
Carrier keeps one connection to stowaway and makes each ``config`` true: a listener per
bridged port (``carrier/proxy.py``) and ``nat PREROUTING -p tcp --dport P
-j REDIRECT`` to it. A config without routes leaves it idle (no redirect, no listener),
ready for the pod's next bridge. It removes every redirect and exits on SIGTERM, on a
refused token, when told ``exit`` (by an older stowaway), or when stowaway has been
unreachable for longer than the orphan timeout — a vanished cluster side must not leave
a pod intercepted.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog

from gefyra_async.adapters.iptables import delete_rule, ensure_rule, rules_with_comment
from gefyra_async.carrier.proxy import BridgeRoute, CarrierProxy, PortRoute
from gefyra_async.core import control_protocol as proto
from gefyra_async.core import names
from gefyra_async.core.httprules import compile_rules
from gefyra_async.core.logging import configure_logging

log = structlog.get_logger(__name__)

SILENCE_LIMIT = 20.0  # stowaway pings every 5 s
STATS_PERIOD = 10.0
# Per attempt. Right after stowaway is replaced, the control Service may still lead to the
# old pod's address for a moment, where a SYN is never answered: try again soon instead.
CONNECT_TIMEOUT = 2.0


class Redirector(Protocol):
    async def install(self, port: int, to_port: int) -> None: ...
    async def remove(self, port: int) -> None: ...
    async def remove_all(self) -> None: ...


class IptablesRedirector:
    """``nat PREROUTING`` REDIRECT rules, each tagged with carrier's comment."""

    def __init__(self) -> None:
        self.installed: dict[int, int] = {}

    @staticmethod
    def _rule(port: int, to_port: int) -> list[str]:
        return [
            "-p", "tcp", "--dport", str(port),
            "-m", "comment", "--comment", names.CARRIER_COMMENT,
            "-j", "REDIRECT", "--to-ports", str(to_port),
        ]  # fmt: skip

    async def install(self, port: int, to_port: int) -> None:
        old = self.installed.get(port)
        if old == to_port:
            return
        await ensure_rule("nat", "PREROUTING", self._rule(port, to_port), first=True)
        if old is not None:
            await delete_rule("nat", "PREROUTING", self._rule(port, old))
        self.installed[port] = to_port

    async def remove(self, port: int) -> None:
        to_port = self.installed.pop(port, None)
        if to_port is not None:
            await delete_rule("nat", "PREROUTING", self._rule(port, to_port))

    async def remove_all(self) -> None:
        """Every carrier redirect in the pod, ours or a predecessor's."""
        self.installed.clear()
        for rule in await rules_with_comment("nat", "PREROUTING", names.CARRIER_COMMENT):
            await delete_rule("nat", "PREROUTING", rule)


@dataclass
class Carrier:
    control: tuple[str, int]
    hello: proto.CarrierHello
    redirector: Redirector
    proxy: CarrierProxy = field(default_factory=CarrierProxy)
    orphan_timeout: float = 60.0
    silence_limit: float = SILENCE_LIMIT
    routes: dict[int, PortRoute] = field(default_factory=dict)

    async def apply(self, config: proto.Config) -> dict[int, int]:
        """Make CONFIG's routes true; returns remote port → listener port."""
        wanted: dict[int, PortRoute] = {}
        for r in config.routes:
            bridges = tuple(
                BridgeRoute(
                    b["name"],
                    compile_rules(b.get("rules") or []),
                    (b["upstream"].rpartition(":")[0], int(b["upstream"].rpartition(":")[2])),
                )
                for b in r.get("bridges") or []
            )
            if bridges:
                wanted[int(r["port"])] = PortRoute(int(r["port"]), bridges)
        for port in [p for p in self.routes if p not in wanted]:
            await self.redirector.remove(port)  # first the redirect, then the listener
            await self.proxy.close_port(port)
            del self.routes[port]
        applied: dict[int, int] = {}
        for port, route in wanted.items():
            listener = self.proxy.listener(port)
            if listener is None:
                listener = await self.proxy.listen(route)
            else:
                self.proxy.update(route)
            await self.redirector.install(port, listener)
            self.routes[port] = route
            applied[port] = listener
        return applied

    async def shutdown(self) -> None:
        await self.redirector.remove_all()
        await self.proxy.close()
        self.routes.clear()

    async def session(self) -> int | None:
        """One control connection. Returns an exit code to stop, None to reconnect."""
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(*self.control), CONNECT_TIMEOUT
        )
        try:
            writer.write(proto.encode(self.hello))
            await writer.drain()
            last_stats: dict[str, Any] = {}
            next_stats = time.monotonic() + STATS_PERIOD
            while True:
                try:
                    line = await asyncio.wait_for(reader.readline(), self.silence_limit)
                except TimeoutError:
                    log.warning("stowaway silent; reconnecting")
                    return None
                if not line:
                    return None
                msg = proto.decode(line)
                if isinstance(msg, proto.Config):
                    applied = await self.apply(msg)
                    ports = {str(k): v for k, v in applied.items()}
                    writer.write(proto.encode(proto.Applied(msg.version, ports)))
                    log.info("config applied", version=msg.version, ports=applied)
                elif isinstance(msg, proto.Exit):  # from a stowaway that tells carriers to go
                    log.info("told to exit", reason=msg.reason)
                    await self.shutdown()
                    writer.write(proto.encode(proto.Bye()))
                    await writer.drain()
                    return 0
                elif isinstance(msg, proto.Error):
                    log.error("stowaway refused carrier", message=msg.message)
                    await self.shutdown()
                    return 1
                if time.monotonic() >= next_stats:
                    stats = self.proxy.stats()
                    if stats != last_stats:
                        writer.write(proto.encode(proto.Stats(stats)))
                        last_stats = stats
                    next_stats = time.monotonic() + STATS_PERIOD
                await writer.drain()
        finally:
            writer.close()

    async def run(self) -> int:
        """Connect, serve, reconnect; give up (removing everything) after the orphan timeout."""
        await self.redirector.remove_all()  # a predecessor's leftovers
        lost_since = time.monotonic()
        delay = 0.5
        try:
            while True:
                try:
                    code = await self.session()
                    if code is not None:
                        return code
                    lost_since, delay = time.monotonic(), 0.5
                except (OSError, TimeoutError, ValueError) as exc:
                    log.info("control unreachable", error=repr(exc))
                if time.monotonic() - lost_since > self.orphan_timeout:
                    log.warning(
                        "stowaway gone too long; removing redirects", seconds=self.orphan_timeout
                    )
                    return 0
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        finally:
            with contextlib.suppress(Exception):
                await self.shutdown()


def _env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise SystemExit(f"carrier: {name} is not set; carrier is started by stowaway")
    return value


async def amain() -> int:
    host, _, port = _env("GEFYRA_ASYNC_CONTROL").rpartition(":")
    carrier = Carrier(
        control=(host, int(port)),
        hello=proto.CarrierHello(
            namespace=_env("GEFYRA_ASYNC_POD_NAMESPACE"),
            pod=_env("GEFYRA_ASYNC_POD_NAME"),
            carrier=_env("GEFYRA_ASYNC_CARRIER_NAME"),
            token=_env("GEFYRA_ASYNC_CARRIER_TOKEN"),
        ),
        redirector=IptablesRedirector(),
        orphan_timeout=float(os.environ.get("GEFYRA_ASYNC_ORPHAN_TIMEOUT", "60")),
    )
    task = asyncio.create_task(carrier.run())
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    try:
        return await task
    except asyncio.CancelledError:
        log.info("terminated; redirects removed")
        return 0


def main() -> None:
    configure_logging(debug=bool(os.environ.get("GEFYRA_ASYNC_DEBUG")))
    sys.exit(asyncio.run(amain()))
