"""The cluster-side objects and `run`'s port parsing."""

from __future__ import annotations

import dataclasses

import pytest

from gefyra_async.api.context import UserError
from gefyra_async.api.runner import parse_ports
from gefyra_async.core import manifests, names
from gefyra_async.core.settings import Settings


def test_every_object_carries_the_managed_by_label() -> None:
    s = Settings()
    objects = [
        *manifests.cluster_side(s, "1.0"),
        manifests.client(s, "dev", "k" * 43 + "=", "172.30.0.0/24"),
    ]
    for obj in objects:
        assert obj["metadata"]["labels"][names.MANAGED_BY] == names.MANAGED_BY_VALUE, obj["kind"]


def test_tunnel_service_node_port_or_load_balancer() -> None:
    node_port = manifests.tunnel_service(Settings(tunnel_port=31999))
    assert node_port["spec"]["type"] == "NodePort"
    assert node_port["spec"]["ports"][0]["nodePort"] == 31999
    lb = manifests.tunnel_service(
        dataclasses.replace(Settings(), tunnel_service_type="LoadBalancer")
    )
    assert lb["spec"]["type"] == "LoadBalancer"
    assert "nodePort" not in lb["spec"]["ports"][0]


def test_stowaway_role_grants_no_write_on_clients_spec() -> None:
    rules = manifests.role(Settings())["rules"]
    clients = next(r for r in rules if r["resources"] == [names.CLIENT_PLURAL])
    # A client's spec (its key, its subnet) is the developer's; stowaway may only read it,
    # and delete a client whose laptop never came back (the watchdog).
    assert set(clients["verbs"]) == {"get", "list", "watch", "delete"}


def test_parse_ports() -> None:
    exposed, bindings = parse_ports(["8080:80", "127.0.0.1:9000:9000", "5353:53/udp"])
    assert set(exposed) == {"80/tcp", "9000/tcp", "53/udp"}
    assert bindings["80/tcp"] == [{"HostIp": "", "HostPort": "8080"}]
    assert bindings["9000/tcp"] == [{"HostIp": "127.0.0.1", "HostPort": "9000"}]


@pytest.mark.parametrize("spec", ["80", "a:b", "1:2:3:4"])
def test_bad_ports_are_user_errors(spec: str) -> None:
    with pytest.raises(UserError, match="is not"):
        parse_ports([spec])
