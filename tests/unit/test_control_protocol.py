"""The control protocol's one codec: every message round-trips; what is not a message is
refused with a reason before any value of it is used (e.g. in stowaway's iptables rules)."""

from __future__ import annotations

import json

import pytest

from gefyra_async.core import control_protocol as proto

MESSAGES: list[proto.Message] = [
    proto.CarrierHello("ns", "web-1", "gefyra-carrier-1", "a" * 64),
    proto.CargoHello("default"),
    proto.Config(3, [{"port": 8080, "bridges": [{"name": "b", "rules": [], "upstream": "x:1"}]}]),
    proto.Applied(3, {"8080": 40123}),
    proto.Stats({"b": {"connections": 2, "requests": 5, "errors": 0}}),
    proto.Containers({"app": "172.30.0.2", "db_1": "172.30.0.3"}),
    proto.Ping(),
    proto.Pong(),
    proto.Bye(),
    proto.Exit("told"),
    proto.Error("bad token"),
]


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_every_message_round_trips_as_one_line(message: proto.Message) -> None:
    line = proto.encode(message)
    assert line.endswith(b"\n")
    assert line.count(b"\n") == 1
    assert proto.decode(line) == message


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"not json", "not JSON"),
        (b"[1, 2]", "a message is a JSON object"),
        (b'{"type": "shout"}', "unknown message type 'shout'"),
        (b'{"type": "hello", "role": "admin"}', "unknown role 'admin'"),
        (
            b'{"type": "hello", "role": "carrier", "namespace": "NS!", "pod": "p", '
            b'"carrier": "c", "token": "' + b"a" * 64 + b'"}',
            "namespace 'NS!' is not a Kubernetes name",
        ),
        (b'{"type": "hello", "role": "cargo", "connection": "x\\ny"}', "is not a Kubernetes"),
        (b'{"type": "config", "version": "1"}', "version must be an integer"),
        (b'{"type": "config", "version": true}', "version must be an integer"),
        (b'{"type": "config", "version": 1, "routes": [1]}', "routes must be a list of objects"),
        (b'{"type": "applied", "version": 1, "ports": {"80": 70000}}', "not a port"),
        (b'{"type": "containers", "containers": ["app"]}', "must map names to addresses"),
        (
            b'{"type": "containers", "containers": {"app": "172.30.0.2\\n-j ACCEPT"}}',
            "is not an IPv4 address",
        ),
        (b'{"type": "containers", "containers": {"app": "::1"}}', "is not an IPv4 address"),
        (b'{"type": "containers", "containers": {"app": "300.1.1.1"}}', "not an IPv4 address"),
        (b'{"type": "containers", "containers": {"-x": "172.30.0.2"}}', "not a container name"),
        (b'{"type": "stats", "bridges": {"b": 3}}', "stats are counters per bridge"),
    ],
)
def test_what_is_not_a_message_is_refused_with_the_reason(line: bytes, reason: str) -> None:
    with pytest.raises(proto.ProtocolError, match=reason.replace("(", r"\(")):
        proto.decode(line)


def test_a_line_over_the_limit_is_refused_before_it_is_parsed() -> None:
    huge = json.dumps({"type": "error", "message": "x" * proto.MAX_LINE}).encode()
    with pytest.raises(proto.ProtocolError, match="over the"):
        proto.decode(huge)
