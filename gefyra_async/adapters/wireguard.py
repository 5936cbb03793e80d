"""WireGuard control: the UAPI channel of a userspace WireGuard (wireguard-go).

wireguard-go listens on ``/var/run/wireguard/<interface>.sock`` and speaks the plain-text
cross-platform UAPI: ``get=1`` returns the device and its peers as ``key=value`` lines,
``set=1`` changes them — live, without restarting the device or disturbing other peers.
Keys on this channel are hex; everywhere else in gefyra-async they are base64.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import anyio.abc
import structlog

from gefyra_async.adapters.wgkeys import KeyPair, key_from_hex, key_to_hex

log = structlog.get_logger(__name__)

DEFAULT_SOCKET_DIR = Path("/var/run/wireguard")
MAX_RESPONSE = 4 * 1024 * 1024


class WireGuardError(RuntimeError):
    """The WireGuard device is missing or refused a request; the message says which."""


@dataclass(frozen=True)
class PeerConfig:
    """What to set for one peer (keys base64)."""

    public_key: str
    allowed_ips: Sequence[str] = ()
    endpoint: str | None = None
    persistent_keepalive: int | None = None
    replace_allowed_ips: bool = True


@dataclass
class PeerState:
    """One peer as the device reports it."""

    public_key: str
    endpoint: str | None = None
    allowed_ips: list[str] = field(default_factory=list)
    last_handshake: float | None = None  # unix time; None = never
    rx_bytes: int = 0
    tx_bytes: int = 0
    persistent_keepalive: int = 0

    def handshake_age(self, now: float | None = None) -> float | None:
        if self.last_handshake is None:
            return None
        return (time.time() if now is None else now) - self.last_handshake


@dataclass
class DeviceState:
    public_key: str | None
    listen_port: int | None
    peers: dict[str, PeerState]


def parse_get(text: str) -> DeviceState:
    """Parse the answer of ``get=1`` (without its trailing blank line)."""
    public_key: str | None = None
    listen_port: int | None = None
    peers: dict[str, PeerState] = {}
    peer: PeerState | None = None
    handshake_sec = 0
    for line in text.splitlines():
        if not line:
            continue
        key, _, value = line.partition("=")
        if key == "errno":
            if value != "0":
                raise WireGuardError(f"the WireGuard device answered errno={value}")
        elif key == "private_key":
            public_key = KeyPair.from_private(key_from_hex(value)).public
        elif key == "listen_port":
            listen_port = int(value)
        elif key == "public_key":
            peer = PeerState(public_key=key_from_hex(value))
            peers[peer.public_key] = peer
        elif peer is None:
            continue  # other device-level keys (fwmark, ...)
        elif key == "endpoint":
            peer.endpoint = value
        elif key == "allowed_ip":
            peer.allowed_ips.append(value)
        elif key == "last_handshake_time_sec":
            handshake_sec = int(value)
        elif key == "last_handshake_time_nsec":
            nsec = int(value)
            peer.last_handshake = handshake_sec + nsec / 1e9 if handshake_sec or nsec else None
        elif key == "rx_bytes":
            peer.rx_bytes = int(value)
        elif key == "tx_bytes":
            peer.tx_bytes = int(value)
        elif key == "persistent_keepalive_interval":
            peer.persistent_keepalive = int(value)
    return DeviceState(public_key=public_key, listen_port=listen_port, peers=peers)


def format_set(
    *,
    private_key: str | None = None,
    listen_port: int | None = None,
    replace_peers: bool = False,
    peers: Sequence[PeerConfig] = (),
    remove_peers: Sequence[str] = (),
) -> str:
    """The body of a ``set=1`` request, ending with the blank line."""
    lines = ["set=1"]
    if private_key is not None:
        lines.append(f"private_key={key_to_hex(private_key)}")
    if listen_port is not None:
        lines.append(f"listen_port={listen_port}")
    if replace_peers:
        lines.append("replace_peers=true")
    for p in peers:
        lines.append(f"public_key={key_to_hex(p.public_key)}")
        if p.endpoint:
            lines.append(f"endpoint={p.endpoint}")
        if p.persistent_keepalive is not None:
            lines.append(f"persistent_keepalive_interval={p.persistent_keepalive}")
        if p.replace_allowed_ips:
            lines.append("replace_allowed_ips=true")
        lines.extend(f"allowed_ip={cidr}" for cidr in p.allowed_ips)
    for public in remove_peers:
        lines.extend((f"public_key={key_to_hex(public)}", "remove=true"))
    return "\n".join(lines) + "\n\n"


class Uapi:
    """A client of one device's UAPI socket. Each call opens its own connection."""

    def __init__(self, interface: str, socket_dir: Path = DEFAULT_SOCKET_DIR) -> None:
        self.interface = interface
        self.path = socket_dir / f"{interface}.sock"

    def exists(self) -> bool:
        return self.path.is_socket()

    async def _request(self, body: str) -> str:
        try:
            stream = await anyio.connect_unix(os.fspath(self.path))
        except OSError as exc:
            raise WireGuardError(
                f"no WireGuard device {self.interface!r} answers on {self.path} ({exc.strerror})"
            ) from None
        async with stream:
            await stream.send(body.encode())
            data = b""
            while not data.endswith(b"\n\n"):
                try:
                    chunk = await stream.receive()
                except anyio.EndOfStream:
                    break
                data += chunk
                if len(data) > MAX_RESPONSE:
                    raise WireGuardError(f"the answer of {self.path} is larger than expected")
        return data.decode()

    async def get(self) -> DeviceState:
        return parse_get(await self._request("get=1\n\n"))

    async def set(
        self,
        *,
        private_key: str | None = None,
        listen_port: int | None = None,
        replace_peers: bool = False,
        peers: Sequence[PeerConfig] = (),
        remove_peers: Sequence[str] = (),
    ) -> None:
        answer = await self._request(
            format_set(
                private_key=private_key,
                listen_port=listen_port,
                replace_peers=replace_peers,
                peers=peers,
                remove_peers=remove_peers,
            )
        )
        if answer.strip() != "errno=0":
            raise WireGuardError(
                f"WireGuard device {self.interface!r} refused the change: {answer.strip()!r}"
            )


async def run_wireguard_go(
    interface: str,
    *,
    binary: str = "wireguard-go",
    socket_dir: Path = DEFAULT_SOCKET_DIR,
    start_timeout: float = 10.0,
    task_status: anyio.abc.TaskStatus[Uapi] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Run a wireguard-go device until cancelled; ``started`` hands out its Uapi.

    Raises WireGuardError when the process cannot start or exits on its own, so the
    supervising actor restarts it (and re-applies its configuration). Its output is
    drained into the log, so a chatty device can never block on a full pipe.
    """
    uapi = Uapi(interface, socket_dir)
    env = {**os.environ, "WG_PROCESS_FOREGROUND": "1", "LOG_LEVEL": "error"}
    output: list[str] = []
    try:
        proc = await anyio.open_process(
            [binary, "-f", interface], env=env, stderr=subprocess.STDOUT
        )
    except OSError as exc:
        raise WireGuardError(f"cannot start {binary} for {interface}: {exc.strerror}") from None

    async def drain() -> None:
        assert proc.stdout is not None
        async for chunk in proc.stdout:
            for line in chunk.decode(errors="replace").splitlines():
                output.append(line)
                del output[:-20]
                log.debug("wireguard-go", interface=interface, line=line)

    failure = ""
    try:
        async with proc, anyio.create_task_group() as tg:
            tg.start_soon(drain)
            with anyio.move_on_after(start_timeout):
                while not uapi.exists() and proc.returncode is None:  # noqa: ASYNC110
                    await anyio.sleep(0.02)
            if uapi.exists():
                task_status.started(uapi)
                code = await proc.wait()
                failure = f"{binary} for {interface} exited with status {code}"
            else:
                failure = f"{binary} did not create {uapi.path} for {interface}"
            tg.cancel_scope.cancel()
        raise WireGuardError(f"{failure}: " + (" / ".join(output[-3:]) or "no output"))
    finally:
        if proc.returncode is None:
            proc.terminate()
            with anyio.move_on_after(5, shield=True):
                await proc.wait()
            if proc.returncode is None:
                proc.kill()
