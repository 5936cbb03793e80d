"""The control protocol between stowaway, carriers and cargos: typed messages, one codec.

One JSON object per line (docs/bridge.md lists them). Every message that crosses the
connection is decoded here, and only here, into a frozen dataclass whose fields are
checked: a peer that sends something else gets a ``ProtocolError`` with the reason, never a
value passed on as it is — cargo's container addresses, for instance, end up in stowaway's
iptables rules, so they must be plain IPv4 addresses. Pure logic, no I/O.
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

MAX_LINE = 1 << 20  # bytes of one message, newline included
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")  # a Kubernetes object name
_CONTAINER = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$")  # a Docker container name
_TOKEN = re.compile(r"^[0-9a-f]{64}$")


class ProtocolError(ValueError):
    """A line that is not a valid message of this protocol; the reason says what is wrong."""


# ---- the messages -----------------------------------------------------------------------


@dataclass(frozen=True)
class CarrierHello:
    namespace: str
    pod: str
    carrier: str
    token: str
    type: Literal["hello"] = "hello"
    role: Literal["carrier"] = "carrier"


@dataclass(frozen=True)
class CargoHello:
    connection: str
    type: Literal["hello"] = "hello"
    role: Literal["cargo"] = "cargo"


@dataclass(frozen=True)
class Config:
    """Stowaway → carrier: the whole desired state of the carrier's pod."""

    version: int
    routes: list[dict[str, Any]] = field(default_factory=list)
    type: Literal["config"] = "config"


@dataclass(frozen=True)
class Applied:
    """Carrier → stowaway: remote port → listener port of every redirect installed."""

    version: int
    ports: dict[str, int] = field(default_factory=dict)
    type: Literal["applied"] = "applied"


@dataclass(frozen=True)
class Stats:
    bridges: dict[str, dict[str, int]] = field(default_factory=dict)
    type: Literal["stats"] = "stats"


@dataclass(frozen=True)
class Containers:
    """Cargo → stowaway: local container name → its address on the connection network."""

    containers: dict[str, str] = field(default_factory=dict)
    type: Literal["containers"] = "containers"


@dataclass(frozen=True)
class Ping:
    type: Literal["ping"] = "ping"


@dataclass(frozen=True)
class Pong:
    type: Literal["pong"] = "pong"


@dataclass(frozen=True)
class Bye:
    type: Literal["bye"] = "bye"


@dataclass(frozen=True)
class Exit:
    reason: str = ""
    type: Literal["exit"] = "exit"


@dataclass(frozen=True)
class Error:
    message: str
    type: Literal["error"] = "error"


Hello = CarrierHello | CargoHello
Message = (
    CarrierHello | CargoHello | Config | Applied | Stats | Containers | Ping | Pong | Bye | Exit
    | Error
)  # fmt: skip


# ---- the codec --------------------------------------------------------------------------


def encode(message: Message) -> bytes:
    """MESSAGE as one line."""
    return (json.dumps(asdict(message), separators=(",", ":")) + "\n").encode()


def decode(line: bytes | str) -> Message:
    """The message on LINE; ProtocolError if it is not one."""
    if len(line) > MAX_LINE:
        raise ProtocolError(f"a message of {len(line)} bytes is over the {MAX_LINE} allowed")
    try:
        data = json.loads(line)
    except ValueError as exc:
        raise ProtocolError(f"not JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise ProtocolError("a message is a JSON object")
    kind = data.get("type")
    try:
        if kind == "hello":
            return _hello(data)
        if kind == "config":
            return Config(_int(data, "version"), _list(data, "routes"))
        if kind == "applied":
            return Applied(_int(data, "version"), _ports(data.get("ports")))
        if kind == "stats":
            return Stats(_stats(data.get("bridges")))
        if kind == "containers":
            return Containers(_containers(data.get("containers")))
        if kind == "ping":
            return Ping()
        if kind == "pong":
            return Pong()
        if kind == "bye":
            return Bye()
        if kind == "exit":
            return Exit(_text(data.get("reason", "")))
        if kind == "error":
            return Error(_text(data.get("message", "")))
    except (TypeError, KeyError) as exc:
        raise ProtocolError(f"a {kind} message is malformed ({exc})") from exc
    raise ProtocolError(f"unknown message type {str(kind)[:40]!r}")


def _hello(data: dict[str, Any]) -> Hello:
    role = data.get("role")
    if role == "carrier":
        namespace, pod, carrier = (_name(data, k) for k in ("namespace", "pod", "carrier"))
        token = str(data.get("token", ""))
        if not _TOKEN.match(token):
            raise ProtocolError("a carrier's token is 64 hex digits")
        return CarrierHello(namespace, pod, carrier, token)
    if role == "cargo":
        return CargoHello(_name(data, "connection"))
    raise ProtocolError(f"unknown role {str(role)[:40]!r}")


def _name(data: dict[str, Any], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not _NAME.match(value):
        raise ProtocolError(f"{key} {str(value)[:80]!r} is not a Kubernetes name")
    return value


def _int(data: dict[str, Any], key: str) -> int:
    value = data.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ProtocolError(f"{key} must be an integer, not {str(value)[:40]!r}")
    return value


def _list(data: dict[str, Any], key: str) -> list[dict[str, Any]]:
    value = data.get(key) or []
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise ProtocolError(f"{key} must be a list of objects")
    return value


def _port(value: object) -> int:
    port = int(str(value))
    if not 0 < port < 65536:
        raise ProtocolError(f"{value!r} is not a port")
    return port


def _ports(value: object) -> dict[str, int]:
    if not isinstance(value, dict):
        return {}
    try:
        return {str(_port(k)): _port(v) for k, v in value.items()}
    except ValueError as exc:
        raise ProtocolError(f"ports must map ports to ports ({exc})") from exc


def _stats(value: object) -> dict[str, dict[str, int]]:
    if not isinstance(value, dict):
        return {}
    out: dict[str, dict[str, int]] = {}
    for name, counters in value.items():
        if not isinstance(counters, dict):
            raise ProtocolError("stats are counters per bridge")
        out[str(name)[:253]] = {
            str(k)[:40]: int(v)
            for k, v in counters.items()
            if isinstance(v, int) and not isinstance(v, bool)
        }
    return out


def _containers(value: object) -> dict[str, str]:
    if not isinstance(value, dict):
        raise ProtocolError("containers must map names to addresses")
    out: dict[str, str] = {}
    for name, address in value.items():
        if not isinstance(name, str) or not _CONTAINER.match(name):
            raise ProtocolError(f"{str(name)[:80]!r} is not a container name")
        try:
            parsed = ipaddress.IPv4Address(str(address))
        except ValueError as exc:
            raise ProtocolError(
                f"container {name}'s address {str(address)[:80]!r} is not an IPv4 address"
            ) from exc
        out[name] = str(parsed)
    return out


def _text(value: object) -> str:
    return str(value)[:1000]
