"""Stowaway's address and peer plan for its clients."""

from __future__ import annotations

from typing import Any

from gefyra_async.adapters.wgkeys import KeyPair
from gefyra_async.core.clients import plan_clients

CIDR, SERVER = "10.250.0.0/16", "10.250.0.1"


def client(name: str, key: str, created: str, **extra: Any) -> dict[str, Any]:
    spec = {"publicKey": key, **{k: v for k, v in extra.items() if k == "localSubnet"}}
    obj: dict[str, Any] = {"metadata": {"name": name, "creationTimestamp": created}, "spec": spec}
    if "address" in extra:
        obj["status"] = {"tunnelAddress": extra["address"]}
    if extra.get("deleting"):
        obj["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return obj


def test_new_clients_get_the_next_free_addresses_in_age_order() -> None:
    a, b = KeyPair.generate().public, KeyPair.generate().public
    plan = plan_clients(
        [client("b", b, "2026-01-02T00:00:00Z"), client("a", a, "2026-01-01T00:00:00Z")],
        CIDR,
        SERVER,
    )
    assert plan.clients["a"].address == "10.250.0.2"
    assert plan.clients["b"].address == "10.250.0.3"
    assert plan.peers() == {a: ("10.250.0.2/32",), b: ("10.250.0.3/32",)}


def test_addresses_in_status_are_kept_and_skipped() -> None:
    a, b = KeyPair.generate().public, KeyPair.generate().public
    plan = plan_clients(
        [
            client("a", a, "2026-01-01T00:00:00Z", address="10.250.0.2"),
            client("b", b, "2026-01-02T00:00:00Z"),
        ],
        CIDR,
        SERVER,
    )
    assert plan.clients["a"].address == "10.250.0.2"
    assert plan.clients["b"].address == "10.250.0.3"


def test_local_subnet_is_routed_unless_it_overlaps_an_older_client() -> None:
    a, b = KeyPair.generate().public, KeyPair.generate().public
    plan = plan_clients(
        [
            client("a", a, "2026-01-01T00:00:00Z", localSubnet="172.30.0.0/24"),
            client("b", b, "2026-01-02T00:00:00Z", localSubnet="172.30.0.128/25"),
        ],
        CIDR,
        SERVER,
    )
    assert plan.clients["a"].allowed_ips == ("10.250.0.2/32", "172.30.0.0/24")
    assert plan.clients["b"].allowed_ips == ("10.250.0.3/32",)
    assert "overlaps client a" in plan.clients["b"].problem


def test_bad_and_duplicate_keys_get_no_peer() -> None:
    key = KeyPair.generate().public
    plan = plan_clients(
        [
            client("first", key, "2026-01-01T00:00:00Z"),
            client("copy", key, "2026-01-02T00:00:00Z"),
            client("junk", "not-a-key", "2026-01-03T00:00:00Z"),
        ],
        CIDR,
        SERVER,
    )
    assert plan.clients["copy"].address is None
    assert plan.clients["copy"].problem == "public key already used by client first"
    assert plan.clients["junk"].problem == "invalid public key"
    assert list(plan.peers()) == [key]


def test_deleting_clients_are_left_out() -> None:
    key = KeyPair.generate().public
    plan = plan_clients([client("gone", key, "2026-01-01T00:00:00Z", deleting=True)], CIDR, SERVER)
    assert plan.clients == {}


def test_exhausted_range_is_reported() -> None:
    keys = [KeyPair.generate().public for _ in range(3)]
    plan = plan_clients(
        [client(f"c{i}", k, f"2026-01-0{i + 1}T00:00:00Z") for i, k in enumerate(keys)],
        "10.250.0.0/30",
        "10.250.0.1",
    )
    assert plan.clients["c0"].address == "10.250.0.2"
    assert plan.clients["c1"].problem == "tunnel range exhausted"
