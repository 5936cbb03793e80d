"""The WireGuard adapter against real wireguard-go devices in two network namespaces."""

from __future__ import annotations

import shutil
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import anyio.abc
import pytest

from gefyra_async.adapters.wgkeys import KeyPair
from gefyra_async.adapters.wireguard import PeerConfig, Uapi, WireGuardError
from tests.e2e.netns import ip, netns_pair
from tests.e2e.platform import is_root, poll, unique_name

pytestmark = pytest.mark.skipif(
    not is_root() or shutil.which("wireguard-go") is None,
    reason="needs root and wireguard-go (tests/platform/platform.sh up installs it)",
)

ECHO_SERVER = """
import socket, sys
srv = socket.create_server((sys.argv[1], int(sys.argv[2])))
print("listening", flush=True)
while True:
    conn, _ = srv.accept()
    with conn, conn.makefile("rb") as lines:
        for line in lines:
            conn.sendall(b"echo: " + line)
"""


@asynccontextmanager
async def wireguard_go(netns: str, interface: str) -> AsyncIterator[Uapi]:
    """A wireguard-go device in NETNS, driven only through its UAPI socket."""
    proc = await anyio.open_process(["ip", "netns", "exec", netns, "wireguard-go", "-f", interface])
    uapi = Uapi(interface)
    try:

        async def ready() -> bool | None:
            return True if uapi.exists() else None

        await poll(ready, within=10, interval=0.05, what=f"wireguard-go {interface} is up")
        yield uapi
    finally:
        proc.terminate()
        with anyio.move_on_after(5):
            await proc.wait()
        await proc.aclose()


async def test_tunnel_carries_traffic_and_peers_change_live() -> None:
    a_keys, b_keys = KeyPair.generate(), KeyPair.generate()
    wg_a, wg_b = unique_name("wgt")[:15], unique_name("wgt")[:15]
    with netns_pair() as (ns_a, ns_b):
        async with wireguard_go(ns_a, wg_a) as uapi_a, wireguard_go(ns_b, wg_b) as uapi_b:
            await uapi_a.set(
                private_key=a_keys.private,
                listen_port=51820,
                peers=[PeerConfig(b_keys.public, ["10.250.200.2/32"], "10.251.7.2:51821")],
            )
            await uapi_b.set(
                private_key=b_keys.private,
                listen_port=51821,
                peers=[PeerConfig(a_keys.public, ["10.250.200.1/32"], persistent_keepalive=5)],
            )
            for ns, dev, addr in ((ns_a, wg_a, "10.250.200.1"), (ns_b, wg_b, "10.250.200.2")):
                ip("-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
                ip("-n", ns, "link", "set", dev, "up")

            # The device reports what was set, keys converted back to base64.
            state_a = await uapi_a.get()
            assert state_a.public_key == a_keys.public
            assert state_a.listen_port == 51820
            assert list(state_a.peers) == [b_keys.public]
            assert state_a.peers[b_keys.public].allowed_ips == ["10.250.200.2/32"]
            assert state_a.peers[b_keys.public].last_handshake is None

            server = await anyio.open_process(
                [
                    "ip",
                    "netns",
                    "exec",
                    ns_b,
                    sys.executable,
                    "-c",
                    ECHO_SERVER,
                    "10.250.200.2",
                    "7000",
                ]
            )
            try:
                assert server.stdout is not None
                banner = b""
                with anyio.fail_after(10):
                    while b"listening" not in banner:
                        banner += await server.stdout.receive()
                client_code = (
                    "import socket\n"
                    "s = socket.create_connection(('10.250.200.2', 7000), timeout=5)\n"
                    "f = s.makefile('rb')\n"
                    "for line in iter(input, 'quit'):\n"
                    "    s.sendall(line.encode() + b'\\n')\n"
                    "    print(f.readline().decode().strip(), flush=True)\n"
                )
                client = await anyio.open_process(
                    ["ip", "netns", "exec", ns_a, sys.executable, "-c", client_code]
                )
                try:
                    assert client.stdin is not None
                    assert client.stdout is not None
                    answer = await exchange_lines(client, b"through the tunnel\n")
                    assert answer == b"echo: through the tunnel\n"

                    peer_b = (await uapi_a.get()).peers[b_keys.public]
                    assert peer_b.last_handshake is not None
                    assert peer_b.handshake_age() is not None
                    assert peer_b.rx_bytes > 0
                    assert peer_b.tx_bytes > 0
                    assert peer_b.endpoint == "10.251.7.2:51821"
                    # B learnt A's endpoint from the handshake (A roams, B never knew it).
                    assert (await uapi_b.get()).peers[a_keys.public].endpoint == "10.251.7.1:51820"

                    # Adding and removing another peer live leaves the open connection alone.
                    other = KeyPair.generate()
                    await uapi_a.set(peers=[PeerConfig(other.public, ["10.250.200.9/32"])])
                    assert set((await uapi_a.get()).peers) == {b_keys.public, other.public}
                    assert await exchange_lines(client, b"still here\n") == b"echo: still here\n"
                    await uapi_a.set(remove_peers=[other.public])
                    assert set((await uapi_a.get()).peers) == {b_keys.public}
                    assert await exchange_lines(client, b"and now\n") == b"echo: and now\n"
                finally:
                    client.kill()
                    await client.aclose()
            finally:
                server.kill()
                await server.aclose()

            # Removing B's peer from A ends the tunnel for new traffic.
            await uapi_a.set(remove_peers=[b_keys.public])
            assert (await uapi_a.get()).peers == {}


async def exchange_lines(proc: anyio.abc.Process, line: bytes) -> bytes:
    assert proc.stdin is not None
    assert proc.stdout is not None
    await proc.stdin.send(line)
    answer = b""
    with anyio.fail_after(10):
        # A pipe may deliver the line in pieces: read up to its end.
        while not answer.endswith(b"\n"):
            answer += await proc.stdout.receive()
    return answer


async def test_missing_device_and_refused_change_are_clear_errors() -> None:
    missing = Uapi(unique_name("nowg")[:15])
    with pytest.raises(WireGuardError, match=r"no WireGuard device .* answers on"):
        await missing.get()
    with netns_pair(underlay="10.251.8") as (ns_a, _):
        async with wireguard_go(ns_a, unique_name("wgt")[:15]) as uapi:
            # An allowed IP that is not an address: the device answers with an errno.
            bad = PeerConfig(KeyPair.generate().public, ["not-an-ip/32"])
            with pytest.raises(WireGuardError, match="refused the change"):
                await uapi.set(peers=[bad])
