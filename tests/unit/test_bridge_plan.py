"""Stowaway's bridge planning: parsing, selectors, carrier state, ports, per-pod routes."""

from __future__ import annotations

from typing import Any

import pytest

from gefyra_async.core import manifests
from gefyra_async.core.bridges import (
    Bridge,
    BridgePlan,
    PortMap,
    allocate_ports,
    bridge_name,
    carrier_state,
    parse_ports,
    parse_target,
    pod_ready,
    pod_routes,
    pod_scheduled,
    selector_matches,
)
from gefyra_async.core.settings import Settings


def bridge_obj(
    name: str, created: str, rules: list[dict[str, str]] | None = None
) -> dict[str, Any]:
    obj = manifests.bridge(
        Settings(),
        name,
        client="default",
        client_uid="uid-1",
        target={"namespace": "demo", "kind": "Deployment", "name": "web", "container": "app"},
        ports=[{"remote": 8080, "local": 8000}],
        local_container=f"local-{name}",
        rules=rules or [],
    )
    obj["metadata"]["creationTimestamp"] = created
    obj["metadata"]["uid"] = f"uid-{name}"
    return obj


def plan(name: str, created: str, rules: list[dict[str, str]] | None = None) -> BridgePlan:
    p = BridgePlan(Bridge.from_object(bridge_obj(name, created, rules)))
    p.pods = ["demo/web-1"]
    p.destination = "172.30.0.2"
    p.upstream_ports = {8080: 20000 + int(created[-2])}
    return p


def test_bridge_round_trips_through_its_object() -> None:
    b = Bridge.from_object(bridge_obj("b1", "2026-01-01T00:00:01Z"))
    assert (b.kind, b.workload, b.container, b.namespace) == ("Deployment", "web", "app", "demo")
    assert b.ports == (PortMap(8080, 8000),)
    assert b.global_
    assert b.finalized
    assert not b.deleting
    broken = bridge_obj("b2", "x")
    broken["spec"]["ports"] = []
    with pytest.raises(ValueError, match="ports"):
        Bridge.from_object(broken)


def test_targets_ports_and_names_are_parsed_or_refused_clearly() -> None:
    assert parse_target("deploy/web") == ("Deployment", "web", None)
    assert parse_target("sts/db/main") == ("StatefulSet", "db", "main")
    with pytest.raises(ValueError, match="kind"):
        parse_target("service/web")
    with pytest.raises(ValueError, match="kind/name"):
        parse_target("web")
    assert parse_ports(["8080:8000", "9000"]) == (PortMap(8080, 8000), PortMap(9000, 9000))
    for bad in (["x:1"], ["70000:1"], ["80", "80:81"], []):
        with pytest.raises(ValueError, match="port"):
            parse_ports(bad)
    assert bridge_name("default", "My_App", "web") == "default-my-app-web"


def test_selector_semantics() -> None:
    sel = {
        "matchLabels": {"app": "web"},
        "matchExpressions": [
            {"key": "tier", "operator": "In", "values": ["a", "b"]},
            {"key": "canary", "operator": "DoesNotExist"},
        ],
    }
    assert selector_matches(sel, {"app": "web", "tier": "a"})
    assert not selector_matches(sel, {"app": "web", "tier": "c"})
    assert not selector_matches(sel, {"app": "web", "tier": "a", "canary": "1"})
    assert not selector_matches({}, {"app": "web"})  # never "every pod"


def test_pod_readiness_and_carrier_state() -> None:
    pod: dict[str, Any] = {
        "metadata": {"name": "web-1"},
        "spec": {"ephemeralContainers": [{"name": "gefyra-carrier-1"}, {"name": "debug"}]},
        "status": {
            "podIP": "10.244.0.9",
            "conditions": [{"type": "Ready", "status": "True"}],
            "ephemeralContainerStatuses": [
                {"name": "gefyra-carrier-1", "state": {"terminated": {"reason": "Completed"}}}
            ],
        },
    }
    assert pod_ready(pod)
    state = carrier_state(pod)
    assert state.active is None
    assert state.next_name == "gefyra-carrier-2"
    pod["spec"]["ephemeralContainers"].append({"name": "gefyra-carrier-2"})
    pod["status"]["ephemeralContainerStatuses"].append(
        {"name": "gefyra-carrier-2", "state": {"waiting": {"reason": "ErrImageNeverPull"}}}
    )
    state = carrier_state(pod)
    assert (state.active, state.running, state.waiting_reason) == (
        "gefyra-carrier-2",
        False,
        "ErrImageNeverPull",
    )
    pod["metadata"]["deletionTimestamp"] = "now"
    assert not pod_ready(pod)


def test_a_pod_gets_carrier_once_bound_to_a_node_not_once_ready() -> None:
    pod: dict[str, Any] = {
        "metadata": {"name": "web-2"},
        "spec": {},
        "status": {"phase": "Pending"},
    }
    assert not pod_scheduled(pod)  # no node yet
    pod["spec"]["nodeName"] = "node-1"
    assert pod_scheduled(pod)  # the kubelet will start carrier beside the app
    pod["status"] |= {"phase": "Running", "podIP": "10.244.0.10"}
    pod["status"]["conditions"] = [{"type": "Ready", "status": "False"}]
    assert pod_scheduled(pod)
    assert not pod_ready(pod)
    pod["status"]["phase"] = "Succeeded"
    assert not pod_scheduled(pod)
    pod["status"]["phase"] = "Running"
    pod["metadata"]["deletionTimestamp"] = "now"
    assert not pod_scheduled(pod)


def test_ports_are_kept_and_never_shared() -> None:
    b1 = Bridge.from_object(bridge_obj("b1", "2026-01-01T00:00:01Z"))
    b2 = Bridge.from_object(bridge_obj("b2", "2026-01-01T00:00:02Z"))
    first = allocate_ports([b1, b2], {"b2": {8080: 20005}}, (20000, 20010))
    assert first == {"b1": {8080: 20000}, "b2": {8080: 20005}}
    # A kept port someone else already holds is not kept twice.
    clash = allocate_ports([b1, b2], {"b1": {8080: 20003}, "b2": {8080: 20003}}, (20000, 20010))
    assert clash["b1"][8080] == 20003
    assert clash["b2"][8080] != 20003
    with pytest.raises(ValueError, match="exhausted"):
        allocate_ports([b1, b2], {}, (20000, 20000))


def test_header_bridges_share_a_port_in_creation_order() -> None:
    alice = plan(
        "alice",
        "2026-01-01T00:00:02Z",
        [{"kind": "header", "name": "X-Dev", "match": "exact", "value": "alice"}],
    )
    bob = plan(
        "bob",
        "2026-01-01T00:00:01Z",
        [{"kind": "header", "name": "X-Dev", "match": "exact", "value": "bob"}],
    )
    routes, refused = pod_routes([alice, bob], "demo/web-1", "10.244.0.5")
    assert refused == {}
    assert [b["name"] for b in routes[0]["bridges"]] == ["bob", "alice"]
    assert routes[0]["bridges"][0]["upstream"] == "10.244.0.5:20001"
    # Other pods get nothing.
    assert pod_routes([alice, bob], "demo/web-2", "10.244.0.5") == ([], {})


def test_a_bridge_without_rules_cannot_share_its_port() -> None:
    everything = plan("all", "2026-01-01T00:00:01Z")
    header = plan(
        "alice", "2026-01-01T00:00:02Z", [{"kind": "path", "match": "prefix", "value": "/a"}]
    )
    routes, refused = pod_routes([everything, header], "demo/web-1", "10.244.0.5")
    assert [b["name"] for b in routes[0]["bridges"]] == ["all"]
    assert "already bridged by all" in refused["alice"]
    # The other way round: the older header bridge keeps the port.
    late = plan("late", "2026-01-01T00:00:03Z")
    routes, refused = pod_routes([header, late], "demo/web-1", "10.244.0.5")
    assert [b["name"] for b in routes[0]["bridges"]] == ["alice"]
    assert "late" in refused
    # A plan with a problem is not routed at all.
    header.problem = "local container gone"
    assert pod_routes([header], "demo/web-1", "10.244.0.5") == ([], {})


def test_carrier_container_runs_as_root_with_net_admin_only() -> None:
    c = manifests.carrier_container(
        "gefyra-carrier-1", "img", control="10.96.0.9:7700", namespace="demo", pod="web-1",
        token="t", orphan_timeout=60.0,
    )  # fmt: skip
    assert c["securityContext"]["capabilities"]["add"] == ["NET_ADMIN", "NET_RAW"]
    assert c["securityContext"]["runAsUser"] == 0
    env = {e["name"]: e["value"] for e in c["env"]}
    assert env["GEFYRA_ASYNC_CONTROL"] == "10.96.0.9:7700"
