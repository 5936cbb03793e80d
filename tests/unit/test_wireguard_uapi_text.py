"""The UAPI text format: parsing ``get=1`` answers and writing ``set=1`` requests."""

from __future__ import annotations

import pytest

from gefyra_async.adapters.wgkeys import KeyPair, key_to_hex
from gefyra_async.adapters.wireguard import PeerConfig, WireGuardError, format_set, parse_get

DEVICE = KeyPair.generate()
PEER = KeyPair.generate()


def test_parse_get_reads_device_and_peers() -> None:
    text = (
        f"private_key={key_to_hex(DEVICE.private)}\n"
        "listen_port=51820\n"
        f"public_key={key_to_hex(PEER.public)}\n"
        "preshared_key=" + "0" * 64 + "\n"
        "protocol_version=1\n"
        "endpoint=10.251.7.2:51821\n"
        "last_handshake_time_sec=1700000000\n"
        "last_handshake_time_nsec=500000000\n"
        "tx_bytes=1184\n"
        "rx_bytes=2016\n"
        "persistent_keepalive_interval=15\n"
        "allowed_ip=10.250.0.2/32\n"
        "allowed_ip=172.30.0.0/16\n"
        "errno=0\n"
    )
    state = parse_get(text)
    assert state.public_key == DEVICE.public
    assert state.listen_port == 51820
    peer = state.peers[PEER.public]
    assert peer.endpoint == "10.251.7.2:51821"
    assert peer.allowed_ips == ["10.250.0.2/32", "172.30.0.0/16"]
    assert peer.last_handshake == pytest.approx(1700000000.5)
    assert peer.handshake_age(now=1700000010.5) == pytest.approx(10.0)
    assert (peer.rx_bytes, peer.tx_bytes, peer.persistent_keepalive) == (2016, 1184, 15)


def test_parse_get_never_handshaken_peer() -> None:
    text = (
        f"public_key={key_to_hex(PEER.public)}\n"
        "last_handshake_time_sec=0\nlast_handshake_time_nsec=0\nerrno=0\n"
    )
    peer = parse_get(text).peers[PEER.public]
    assert peer.last_handshake is None
    assert peer.handshake_age() is None


def test_parse_get_raises_on_errno() -> None:
    with pytest.raises(WireGuardError, match="errno=1"):
        parse_get("errno=1\n")


def test_format_set_adds_and_removes_peers() -> None:
    gone = KeyPair.generate()
    text = format_set(
        private_key=DEVICE.private,
        listen_port=51820,
        peers=[PeerConfig(PEER.public, ["10.250.0.2/32"], "1.2.3.4:5", persistent_keepalive=15)],
        remove_peers=[gone.public],
    )
    assert text == (
        "set=1\n"
        f"private_key={key_to_hex(DEVICE.private)}\n"
        "listen_port=51820\n"
        f"public_key={key_to_hex(PEER.public)}\n"
        "endpoint=1.2.3.4:5\n"
        "persistent_keepalive_interval=15\n"
        "replace_allowed_ips=true\n"
        "allowed_ip=10.250.0.2/32\n"
        f"public_key={key_to_hex(gone.public)}\n"
        "remove=true\n"
        "\n"
    )
