"""The API transport's pure parts: UDP probes and endpoints; stowaway's probe responder
and the client's prober on loopback."""

from __future__ import annotations

import os
from pathlib import Path

import anyio
import pytest

from gefyra_async.adapters.udp_probe import serve_probes, udp_answers
from gefyra_async.cargo import tunnel as cargo_tunnel
from gefyra_async.core import transport


def test_a_probe_is_answered_shorter_and_only_when_well_formed() -> None:
    nonce = os.urandom(transport.NONCE_SIZE)
    request = transport.probe(nonce)
    reply = transport.answer(request)
    assert reply is not None
    assert len(reply) < len(request)  # nothing to amplify
    assert transport.answers(reply, nonce)
    assert not transport.answers(reply, os.urandom(transport.NONCE_SIZE))
    for junk in (b"", request[:-1], request + b"x", b"\x01" * len(request), b"x" * 1500):
        assert transport.answer(junk) is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("192.0.2.7:31820", ("192.0.2.7", 31820)),
        ("node-1.example.com:51820", ("node-1.example.com", 51820)),
        ("[2001:db8::1]:31820", ("2001:db8::1", 31820)),
    ],
)
def test_endpoints_are_parsed(value: str, expected: tuple[str, int]) -> None:
    assert transport.parse_endpoint(value) == expected
    assert transport.format_endpoint(*expected) == value


@pytest.mark.parametrize(
    "value",
    ["", "host", "host:", ":31820", "host:0", "host:65536", "host:x", "a b:1", "h;rm:1",
     "[nope]:1", "host:1\nendpoint=evil:2", "-h:1"],
)  # fmt: skip
def test_bad_endpoints_are_refused_with_a_reason(value: str) -> None:
    with pytest.raises(transport.EndpointError, match="endpoint"):
        transport.parse_endpoint(value)


@pytest.mark.anyio
async def test_the_prober_sees_the_responder_and_not_a_closed_port() -> None:
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            port = await tg.start(
                lambda task_status: serve_probes(port=0, host="127.0.0.1", task_status=task_status)
            )
            assert await udp_answers("127.0.0.1", port)
            tg.cancel_scope.cancel()
        # Nothing listens there any more: no answer (an ICMP refusal or silence).
        assert not await udp_answers("127.0.0.1", port, attempts=1, wait=0.3)


def test_cargo_keeps_the_endpoint_it_was_moved_to(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(cargo_tunnel, "ENDPOINT_OVERRIDE", tmp_path / "state" / "endpoint")
    config = cargo_tunnel.TunnelConfig(
        private_key="k", address="10.250.0.2", server_public_key="s",
        endpoint="192.0.2.2:31820", routes=("10.96.0.0/12",),
    )  # fmt: skip
    tunnel = cargo_tunnel.CargoTunnel(config)
    assert tunnel.endpoint() == "192.0.2.2:31820"
    cargo_tunnel.write_endpoint_override("172.30.0.1:40000")
    # A restarted tunnel actor (a new instance) reads it again.
    assert cargo_tunnel.CargoTunnel(config).endpoint() == "172.30.0.1:40000"
    cargo_tunnel.write_endpoint_override(None)
    assert tunnel.endpoint() == "192.0.2.2:31820"
