"""Bridges as data, and stowaway's plan for them: which pod gets which carrier config.

Pure logic, no I/O. The pod-rewriter feeds it the Bridge, Client and Pod objects it
watches plus what cargos and carriers reported, and applies the result: ephemeral
containers, configs pushed to carriers, DNAT rules, status.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gefyra_async.core import names

KINDS = {
    "deploy": "Deployment",
    "deployment": "Deployment",
    "deployments": "Deployment",
    "sts": "StatefulSet",
    "statefulset": "StatefulSet",
    "statefulsets": "StatefulSet",
    "po": "Pod",
    "pod": "Pod",
    "pods": "Pod",
}

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


@dataclass(frozen=True)
class PortMap:
    remote: int
    local: int


@dataclass(frozen=True)
class Bridge:
    """One Bridge object, as stowaway and the CLI read it."""

    name: str
    client: str
    namespace: str  # the target's namespace
    kind: str  # Deployment, StatefulSet or Pod
    workload: str
    container: str
    ports: tuple[PortMap, ...]
    local_container: str
    rules: tuple[dict[str, Any], ...]
    created: str = ""
    deleting: bool = False
    finalized: bool = True  # carries stowaway's finalizer
    uid: str = ""

    @property
    def global_(self) -> bool:
        """No rules: every connection on its ports."""
        return not self.rules

    @property
    def target_text(self) -> str:
        return f"{self.kind.lower()}/{self.workload}/{self.container}"

    @classmethod
    def from_object(cls, obj: Mapping[str, Any]) -> Bridge:
        """Raises ValueError naming what is wrong with the object."""
        meta = obj.get("metadata") or {}
        spec = obj.get("spec") or {}
        target = spec.get("target") or {}
        try:
            ports = tuple(
                PortMap(int(p["remote"]), int(p["local"])) for p in spec.get("ports") or []
            )
        except (KeyError, TypeError, ValueError):
            raise ValueError("spec.ports must be a list of {remote, local} port numbers") from None
        if not ports:
            raise ValueError("spec.ports is empty")
        kind = KINDS.get(str(target.get("kind", "")).lower())
        if kind is None:
            raise ValueError(
                f"target kind {target.get('kind')!r} is not Deployment, StatefulSet or Pod"
            )
        for key in ("namespace", "name", "container"):
            if not target.get(key):
                raise ValueError(f"spec.target.{key} is missing")
        local = (spec.get("destination") or {}).get("container")
        if not local:
            raise ValueError("spec.destination.container is missing")
        if not spec.get("client"):
            raise ValueError("spec.client is missing")
        return cls(
            name=str(meta.get("name", "")),
            client=str(spec["client"]),
            namespace=str(target["namespace"]),
            kind=kind,
            workload=str(target["name"]),
            container=str(target["container"]),
            ports=ports,
            local_container=str(local),
            rules=tuple(dict(r) for r in spec.get("rules") or []),
            created=str(meta.get("creationTimestamp", "")),
            deleting=bool(meta.get("deletionTimestamp")),
            finalized=names.BRIDGE_FINALIZER in (meta.get("finalizers") or []),
            uid=str(meta.get("uid", "")),
        )


def parse_target(text: str) -> tuple[str, str, str | None]:
    """``kind/name[/container]`` → (Kind, name, container or None); ValueError if malformed."""
    parts = text.split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise ValueError(f"target {text!r} is not kind/name[/container] (e.g. deploy/web)")
    kind = KINDS.get(parts[0].lower())
    if kind is None:
        raise ValueError(
            f"target kind {parts[0]!r} is not one of deployment (deploy), statefulset (sts), pod"
        )
    return kind, parts[1], parts[2] if len(parts) == 3 else None


def parse_ports(specs: Iterable[str]) -> tuple[PortMap, ...]:
    """``remote:local`` or ``port`` (both the same) → PortMaps; ValueError if malformed."""
    found: list[PortMap] = []
    for spec in specs:
        remote, _, local = spec.partition(":")
        local = local or remote
        if not (remote.isdigit() and local.isdigit()):
            raise ValueError(f"port {spec!r} is not remote:local (e.g. 8080:8080)")
        pm = PortMap(int(remote), int(local))
        if not (0 < pm.remote < 65536 and 0 < pm.local < 65536):
            raise ValueError(f"port {spec!r} is out of range 1-65535")
        if any(p.remote == pm.remote for p in found):
            raise ValueError(f"remote port {pm.remote} is given twice")
        found.append(pm)
    if not found:
        raise ValueError("give at least one port: -p remote:local")
    return tuple(found)


def bridge_name(connection: str, local_container: str, workload: str) -> str:
    """A default object name: ``<connection>-<local>-<workload>``, DNS-label safe."""
    raw = f"{connection}-{local_container}-{workload}".lower()
    cleaned = re.sub(r"[^a-z0-9-]+", "-", raw).strip("-")[:63].strip("-")
    return cleaned or "bridge"


def valid_name(name: str) -> bool:
    return len(name) <= 63 and bool(_DNS_LABEL.match(name))


# ---- label selectors -----------------------------------------------------------------


def selector_matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """Kubernetes LabelSelector semantics (matchLabels AND matchExpressions).

    An empty or missing selector matches nothing here: a workload always has one, and
    bridging "every pod" by accident would be far worse than bridging none.
    """
    if not selector:
        return False
    match_labels = selector.get("matchLabels") or {}
    expressions = selector.get("matchExpressions") or []
    if not match_labels and not expressions:
        return False
    if any(labels.get(k) != v for k, v in match_labels.items()):
        return False
    for expr in expressions:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


# ---- pods ----------------------------------------------------------------------------


def pod_ready(pod: Mapping[str, Any]) -> bool:
    status = pod.get("status") or {}
    if pod.get("metadata", {}).get("deletionTimestamp") or not status.get("podIP"):
        return False
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or []
    )


def pod_scheduled(pod: Mapping[str, Any]) -> bool:
    """The pod is bound to a node and neither finished nor ending (Ready or not, yet)."""
    if pod.get("metadata", {}).get("deletionTimestamp"):
        return False
    phase = (pod.get("status") or {}).get("phase")
    return bool((pod.get("spec") or {}).get("nodeName")) and phase in ("Pending", "Running")


def container_ports(pod_or_template_spec: Mapping[str, Any], container: str) -> list[int] | None:
    """Declared TCP ports of CONTAINER; None when there is no such container."""
    for c in pod_or_template_spec.get("containers") or []:
        if c.get("name") == container:
            return [
                int(p["containerPort"])
                for p in c.get("ports") or []
                if p.get("protocol", "TCP") == "TCP" and "containerPort" in p
            ]
    return None


@dataclass(frozen=True)
class CarrierState:
    active: str | None  # an added carrier that has not terminated
    running: bool
    next_name: str
    terminated_reason: str = ""
    waiting_reason: str = ""
    count: int = 0  # carriers in the pod's spec, alive or ended


def carrier_state(pod: Mapping[str, Any]) -> CarrierState:
    """Which carrier ephemeral container of POD is alive, and the name of a new one."""
    prefix = names.CARRIER_PREFIX + "-"
    spec_names = [
        c.get("name", "")
        for c in (pod.get("spec") or {}).get("ephemeralContainers") or []
        if c.get("name", "").startswith(prefix)
    ]
    statuses = {
        s.get("name"): s.get("state") or {}
        for s in (pod.get("status") or {}).get("ephemeralContainerStatuses") or []
    }
    active, running, reason, waiting = None, False, "", ""
    for name in spec_names:
        state = statuses.get(name, {})
        if "terminated" in state:
            reason = str(state["terminated"].get("reason", ""))
            continue
        active, running = name, "running" in state
        waiting = str((state.get("waiting") or {}).get("reason", ""))
    numbers = [int(n[len(prefix) :]) for n in spec_names if n[len(prefix) :].isdigit()]
    return CarrierState(
        active, running, f"{prefix}{max(numbers, default=0) + 1}", reason, waiting, len(spec_names)
    )


# ---- the plan ------------------------------------------------------------------------


@dataclass
class BridgePlan:
    """What the pod-rewriter should make true for one bridge."""

    bridge: Bridge
    problem: str = ""  # why it is not applied (condition reason : message)
    reason: str = ""
    destination: str | None = None  # the local container's address
    pods: list[str] = field(default_factory=list)  # "ns/pod" of ready target pods
    upstream_ports: dict[int, int] = field(default_factory=dict)  # remote port → stowaway port


def allocate_ports(
    bridges: Iterable[Bridge],
    kept: Mapping[str, Mapping[int, int]],
    port_range: tuple[int, int],
) -> dict[str, dict[int, int]]:
    """A stowaway port per (bridge, remote port); ports already in a bridge's status stay."""
    ordered = sorted(bridges, key=lambda b: (b.created, b.name))
    used: set[int] = set()
    result: dict[str, dict[int, int]] = {}
    for b in ordered:
        mine = {}
        for pm in b.ports:
            old = (kept.get(b.name) or {}).get(pm.remote)
            if old is not None and port_range[0] <= old <= port_range[1] and old not in used:
                mine[pm.remote] = old
                used.add(old)
        result[b.name] = mine
    free = (p for p in range(port_range[0], port_range[1] + 1) if p not in used)
    for b in ordered:
        for pm in b.ports:
            if pm.remote not in result[b.name]:
                port = next(free, None)
                if port is None:
                    raise ValueError("stowaway's bridge port range is exhausted")
                result[b.name][pm.remote] = port
    return result


def pod_routes(
    plans: Iterable[BridgePlan], pod_key: str, upstream_host: str
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """The carrier config routes of one pod, and the bridges refused there (name → why).

    Bridges of a port are tried oldest first. A bridge without rules takes every
    connection of its port, so it cannot share the port with any other bridge: the
    older one wins, the newer one is refused on that pod.
    """
    by_port: dict[int, list[tuple[BridgePlan, PortMap]]] = {}
    for plan in sorted(plans, key=lambda p: (p.bridge.created, p.bridge.name)):
        if pod_key not in plan.pods or plan.problem:
            continue
        for pm in plan.bridge.ports:
            by_port.setdefault(pm.remote, []).append((plan, pm))
    refused: dict[str, str] = {}
    for port in sorted(by_port):
        first: Bridge | None = None
        for plan, _ in by_port[port]:
            b = plan.bridge
            if b.name in refused:
                continue
            if first is None:
                first = b
            elif b.global_ or first.global_:
                refused[b.name] = (
                    f"port {port} of pod {pod_key} is already bridged by {first.name}; "
                    "a bridge without rules cannot share a port"
                )
    # A refused bridge is left out on all its ports, not half applied.
    routes: list[dict[str, Any]] = []
    for port in sorted(by_port):
        entries = [
            {
                "name": plan.bridge.name,
                "rules": list(plan.bridge.rules),
                "upstream": f"{upstream_host}:{plan.upstream_ports[pm.remote]}",
            }
            for plan, pm in by_port[port]
            if plan.bridge.name not in refused
        ]
        if entries:
            routes.append({"port": port, "bridges": entries})
    return routes, refused


def bridges_in(routes: Iterable[Mapping[str, Any]]) -> set[str]:
    return {b["name"] for r in routes for b in r.get("bridges", [])}
