"""Stowaway's pod-rewriter: makes every Bridge object true on every pod it targets.

Desired state: the Bridge objects (and their Clients). Observed state: the pods (from
the pod watch), the carriers and cargos connected to the control server. Each pass

- resolves each bridge's target pods and its local container's address (from cargo);
- adds carrier as an ephemeral container to every Ready target pod without a live one
  (the pod keeps running; nothing restarts) and pushes each carrier its pod's config;
- tells a carrier whose pod has no bridge left to remove its redirects and idle: the
  pod's next bridge reuses it, so a pod never gains a second carrier while stowaway runs
  (and at most ``carrier_max_per_pod`` in its life);
- rewrites the kernel DNAT that carries bridged connections from carriers on to the
  local container, through the client's own peer (one stowaway port per bridged port);
- writes status (pods bridged, Ready condition, measured Ready→bridged delay) and
  Kubernetes Events, and removes the finalizer of a deleted bridge once no carrier
  still applies it.

Pods, Bridges and Clients are read from the watches' stores (``core/store``), never from
events: a pass runs on every hint about them or a control event (bursts coalesce) and at
least every few seconds, and sees the whole current state whichever hints it missed.
Everything it does is idempotent.
"""

from __future__ import annotations

import datetime
import time
from dataclasses import dataclass
from typing import Any

import anyio
import structlog

from gefyra_async.adapters.kube_objects import (
    Bridges,
    add_ephemeral_container,
    record_event,
    workload,
)
from gefyra_async.adapters.nat import replace_chain
from gefyra_async.core import manifests, names
from gefyra_async.core.bridges import (
    Bridge,
    BridgePlan,
    allocate_ports,
    carrier_state,
    container_ports,
    pod_ready,
    pod_routes,
    pod_scheduled,
    selector_matches,
)
from gefyra_async.core.bus import EventBus, next_burst
from gefyra_async.core.conditions import set_condition
from gefyra_async.core.control_plane import ControlPlane, carrier_token, silence
from gefyra_async.core.events import (
    Event,
    ObjectChanged,
    PeerChanged,
    Resync,
    StoreSynced,
    about,
)
from gefyra_async.core.settings import Settings
from gefyra_async.core.store import Key, StoreView

log = structlog.get_logger(__name__)

DNAT_CHAIN = "GA-BRIDGES"
PASS_PERIOD = 5.0
WORKLOAD_CACHE_SECONDS = 10.0


def _iso(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).isoformat(timespec="milliseconds")


@dataclass
class PodMark:
    """What the rewriter remembers of one (bridge, pod) pair."""

    bridged_at: float | None = None  # wall clock
    bridged_mono: float | None = None  # monotonic
    delay: float | None = None  # Ready → bridged as stowaway saw them; negative: before Ready


class PodRewriter:
    name = "pod-rewriter"

    def __init__(
        self,
        settings: Settings,
        api: Any,
        control: ControlPlane,
        *,
        pod_ip: str,
        control_address: str,
        carrier_image: str,
        secret: str,
        pods: StoreView,
        bridges: StoreView,
        clients: StoreView,
    ) -> None:
        self.settings = settings
        self.api = api
        self.control = control
        self.pod_ip = pod_ip
        self.control_address = control_address
        self.carrier_image = carrier_image
        self.secret = secret
        self.bridges_api = Bridges(api, settings)
        low, _, high = settings.bridge_port_range.partition("-")
        self.port_range = (int(low), int(high))
        self.pods, self.bridges, self.clients = pods, bridges, clients
        self.ready_since: dict[str, float] = {}  # pod key → monotonic time it turned Ready
        self.bridge_seen: dict[str, float] = {}  # bridge uid → monotonic time first seen
        self.client_seen: dict[str, float] = {}  # client uid → monotonic time first seen
        self.deleting_since: dict[str, float] = {}  # bridge uid → monotonic
        self.marks: dict[tuple[str, str], PodMark] = {}
        self.adding: dict[str, tuple[str, float]] = {}  # pod key → (carrier, monotonic)
        self.workloads: dict[tuple[str, str, str], tuple[float, dict[str, Any] | None]] = {}
        self.dnat: list[list[str]] | None = None
        self.reported: dict[str, Any] = {}  # bridge name → last status written (stable part)
        self.destinations: dict[str, str | None] = {}
        self.problems: dict[str, str] = {}
        self.limited: set[str] = set()  # pods that reached carrier_max_per_pod

    # ---- hints ----

    def _take(self, event: Event) -> None:
        if isinstance(event, ObjectChanged) and event.resource == self.pods.resource:
            self._note_ready(f"{event.namespace}/{event.name}")

    def _note_ready(self, key: str) -> None:
        """When POD turned Ready, as its Ready version reached the store (the Ready →
        bridged delay is measured from it)."""
        pod = self._pod(key)
        if pod is None or not pod_ready(pod):
            self.ready_since.pop(key, None)
        elif key not in self.ready_since:
            self.ready_since[key] = self.pods.updated_at(Key.parse(key)) or time.monotonic()

    def _pod(self, key: str) -> dict[str, Any] | None:
        return self.pods.get(Key.parse(key))

    def _bridge(self, name: str) -> dict[str, Any] | None:
        return self.bridges.get(Key(self.settings.namespace, name))

    def _synced(self) -> bool:
        # Before every store took its first list, a pass would see no bridges or no pods,
        # and send carriers away that still serve.
        return self.pods.synced and self.bridges.synced and self.clients.synced

    async def run(self, bus: EventBus) -> None:
        subscription = bus.subscribe(
            ObjectChanged,
            StoreSynced,
            PeerChanged,
            Resync,
            name=self.name,
            where=about(self.pods.resource, self.bridges.resource, self.clients.resource),
        )
        async with subscription as events:
            while True:
                for event in await next_burst(events, wait=PASS_PERIOD, settle=0.02):
                    self._take(event)
                if not self._synced():
                    continue
                try:
                    await self.reconcile()
                except Exception as exc:  # one bad pass must not stop the next
                    log.exception("reconcile failed", error=str(exc))
                    await anyio.sleep(1)

    # ---- the pass ----

    async def _workload(self, ns: str, kind: str, name: str) -> dict[str, Any] | None:
        key = (ns, kind, name)
        cached = self.workloads.get(key)
        if cached and time.monotonic() - cached[0] < WORKLOAD_CACHE_SECONDS:
            return cached[1]
        obj = await workload(self.api, ns, kind, name)
        self.workloads[key] = (time.monotonic(), obj)
        return obj

    async def _plan(self, obj: dict[str, Any]) -> BridgePlan | None:
        try:
            b = Bridge.from_object(obj)
        except ValueError as exc:
            meta = obj.get("metadata", {})
            name = meta.get("name", "?")
            if meta.get("deletionTimestamp"):  # nothing was applied for it
                keep = [f for f in meta.get("finalizers") or [] if f != names.BRIDGE_FINALIZER]
                await self.bridges_api.set_finalizers(name, keep)
                return None
            await self._status_invalid(name, str(exc))
            return None
        self.bridge_seen.setdefault(b.uid, time.monotonic())
        plan = BridgePlan(b)
        if b.deleting:
            self.deleting_since.setdefault(b.uid, time.monotonic())
            plan.reason, plan.problem = "Deleting", "being removed"
            return plan
        client = self.clients.get(Key(self.settings.namespace, b.client))
        address = ((client or {}).get("status") or {}).get("tunnelAddress")
        if not address:
            plan.reason = "ClientNotConnected"
            plan.problem = f"connection {b.client} has no tunnel address (is it up?)"
            return plan
        containers = self.control.containers_of(address)
        now = time.monotonic()
        uid = str(((client or {}).get("metadata") or {}).get("uid"))
        first_seen = self.client_seen.setdefault(uid, now)
        silent = silence(self.control.cargo_heard.get(address), first_seen, now)
        last = (obj.get("status") or {}).get("destination") or {}
        if silent > self.settings.client_silence_limit:
            # The laptop is asleep or gone: the pods' own apps serve until it is back.
            plan.reason = "ClientGone"
            plan.problem = (
                f"connection {b.client} has not been heard from for over "
                f"{self.settings.client_silence_limit:.0f}s; the bridge is suspended (the "
                "original app serves) until it is back"
            )
        elif (
            containers is None
            and last.get("container") == b.local_container
            and last.get("address")
        ):
            # This stowaway has not heard from cargo yet (it restarted, or the control
            # connection is re-forming): keep the bridge on the address it last had rather
            # than dropping the carriers; cargo's report corrects it if it moved.
            plan.destination = str(last["address"])
        elif containers is None:
            plan.reason = "WaitingForCargo"
            plan.problem = f"cargo of connection {b.client} has not reported its containers yet"
        elif b.local_container not in containers:
            plan.reason = "LocalContainerNotFound"
            plan.problem = (
                f"local container {b.local_container} is not running in connection {b.client}"
            )
        else:
            plan.destination = containers[b.local_container]
        if b.kind == "Pod":
            selected = (
                [f"{b.namespace}/{b.workload}"]
                if self.pods.get(Key(b.namespace, b.workload)) is not None
                else []
            )
            if not selected:
                plan.reason, plan.problem = "TargetNotFound", f"pod {b.workload} does not exist"
        else:
            wl = await self._workload(b.namespace, b.kind, b.workload)
            if wl is None:
                plan.reason = "TargetNotFound"
                plan.problem = f"{b.kind.lower()} {b.workload} does not exist in {b.namespace}"
                return plan
            selector = (wl.get("spec") or {}).get("selector")
            selected = [
                f"{b.namespace}/{pod['metadata']['name']}"
                for pod in self.pods.objects(b.namespace)
                if selector_matches(selector, pod["metadata"].get("labels") or {})
            ]
        for key in selected:
            self._note_ready(key)  # also for pods whose hint was dropped
            if container_ports((self._pod(key) or {}).get("spec") or {}, b.container) is None:
                plan.reason = "ContainerNotFound"
                plan.problem = f"pod {key} has no container {b.container}"
        # Carrier joins a pod as soon as it is bound to a node — the kubelet starts it beside
        # the app — so that the pod is bridged by the time it turns Ready (when the Service
        # starts sending it traffic); a bridged pod stays bridged while it is briefly not
        # Ready, and while it terminates.
        plan.pods = sorted(
            k for k in selected if pod_scheduled(self._pod(k) or {}) or k in self.control.carriers
        )
        return plan

    async def reconcile(self) -> None:
        bridges = self.bridges.objects(self.settings.namespace)
        plans = [p for obj in bridges if (p := await self._plan(obj))]
        kept = {
            p.bridge.name: {
                int(k): int(v)
                for k, v in (
                    ((self._bridge(p.bridge.name) or {}).get("status") or {}).get("upstreamPorts")
                    or {}
                ).items()
            }
            for p in plans
        }
        ports = allocate_ports([p.bridge for p in plans], kept, self.port_range)
        for p in plans:
            p.upstream_ports = ports[p.bridge.name]
            if p.destination is None and not p.problem:
                p.reason, p.problem = "LocalContainerNotFound", "no address for the local container"
        active = [p for p in plans if not p.problem]
        refused: dict[str, str] = {}

        # Carriers: config for every pod with bridges; those without idle. A carrier stays
        # (without redirects) when its bridges are suspended (the laptop went silent, the
        # local container is being re-run) or removed: it resumes at once, and the pod's
        # spec — which keeps every ephemeral container it ever had — gains no second one.
        wanted = sorted({k for p in active for k in p.pods} | set(self.control.carriers))
        for key in wanted:
            routes, refused_here = pod_routes(active, key, self.pod_ip)
            refused.update(refused_here)
            if routes:
                await self._ensure_carrier(key, routes)
            else:
                self.adding.pop(key, None)
                await self.control.push(key, [])

        await self._write_dnat(active, refused)
        for p in plans:
            await self._report(p, refused.get(p.bridge.name))
        await self._finalize(plans)
        self._prune(bridges)

    def _prune(self, bridges: list[dict[str, Any]]) -> None:
        """Forget what belongs to objects that are gone, so no memory grows with churn."""
        names_ = {str(b["metadata"]["name"]) for b in bridges}
        uids = {str(b["metadata"].get("uid")) for b in bridges}
        clients = {
            str(c["metadata"].get("uid")) for c in self.clients.objects(self.settings.namespace)
        }
        now = time.monotonic()
        for cache, keep in (
            (self.bridge_seen, uids),
            (self.deleting_since, uids),
            (self.client_seen, clients),
            (self.reported, names_),
            (self.problems, names_),
            (self.destinations, names_),
        ):
            for key in set(cache) - keep:
                del cache[key]
        for pair in [pair for pair in self.marks if pair[0] not in names_]:
            del self.marks[pair]
        for pod in [
            k for k in (*self.ready_since, *self.adding, *self.limited) if self._pod(k) is None
        ]:
            self.ready_since.pop(pod, None)
            self.adding.pop(pod, None)
            self.limited.discard(pod)
        for wl in [k for k, (at, _) in self.workloads.items() if now - at > WORKLOAD_CACHE_SECONDS]:
            del self.workloads[wl]

    async def _ensure_carrier(self, key: str, routes: list[dict[str, Any]]) -> None:
        if key in self.control.carriers:
            await self.control.push(key, routes)
            self.adding.pop(key, None)
            return
        pod = self._pod(key)
        if pod is None:
            return
        state = carrier_state(pod)
        pending = self.adding.get(key)
        now = time.monotonic()
        if state.active:
            # Added and not terminated: it connects in a moment (or is stuck; say so).
            if pending is None:
                self.adding[key] = (state.active, now)
            return
        if (
            pending
            and pending[0] == state.next_name
            and now - pending[1] < self.settings.carrier_start_timeout
        ):
            return  # our patch is on its way into the pod's status
        if state.count >= self.settings.carrier_max_per_pod:
            if key not in self.limited:
                self.limited.add(key)
                await record_event(
                    self.api,
                    self._pod_ref(pod),
                    "CarrierLimit",
                    f"{state.count} carriers of this pod ended; gefyra-async adds no more "
                    "(check that stowaway is reachable from the pod, then roll the workload "
                    "out, e.g. `gefyra-async unbridge --restore`)",
                    warning=True,
                )
            return
        ns, name = key.split("/", 1)
        carrier = state.next_name
        container = manifests.carrier_container(
            carrier,
            self.carrier_image,
            control=self.control_address,
            namespace=ns,
            pod=name,
            token=carrier_token(self.secret, ns, name, carrier),
            orphan_timeout=self.settings.carrier_orphan_timeout,
        )
        try:
            await add_ephemeral_container(self.api, ns, name, container)
        except Exception as exc:
            log.warning("adding carrier failed", pod=key, error=str(exc))
            self.adding[key] = (carrier, now)
            await record_event(
                self.api,
                self._pod_ref(pod),
                "CarrierFailed",
                f"adding {carrier} failed: {exc}",
                warning=True,
            )
            return
        self.adding[key] = (carrier, now)
        log.info("carrier added", pod=key, carrier=carrier)
        await record_event(
            self.api,
            self._pod_ref(pod),
            "CarrierAdded",
            f"gefyra-async added {carrier} to intercept bridged ports (no restart)",
        )

    @staticmethod
    def _pod_ref(pod: dict[str, Any]) -> dict[str, str]:
        meta = pod["metadata"]
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "namespace": meta["namespace"],
            "name": meta["name"],
            "uid": meta.get("uid", ""),
        }

    def _bridge_ref(self, b: Bridge) -> dict[str, str]:
        return {
            "apiVersion": f"{self.settings.api_group}/{names.CLIENT_VERSION}",
            "kind": names.BRIDGE_KIND,
            "namespace": self.settings.namespace,
            "name": b.name,
            "uid": b.uid,
        }

    async def _write_dnat(self, active: list[BridgePlan], refused: dict[str, str]) -> None:
        rules: list[list[str]] = []
        for p in active:
            if p.bridge.name in refused or p.destination is None:
                continue
            sources = [ip for k in p.pods if (ip := self._pod_ip(k))]
            for pm in p.bridge.ports:
                for source in sources:
                    rules.append(
                        [
                            "-s", f"{source}/32", "-d", f"{self.pod_ip}/32", "-p", "tcp",
                            "--dport", str(p.upstream_ports[pm.remote]),
                            "-j", "DNAT", "--to-destination", f"{p.destination}:{pm.local}",
                        ]
                    )  # fmt: skip
        if rules != self.dnat:
            await replace_chain("nat", DNAT_CHAIN, rules, hook=("PREROUTING", ["-p", "tcp"]))
            self.dnat = rules
            log.info("bridge DNAT rewritten", rules=len(rules))

    def _pod_ip(self, key: str) -> str | None:
        ip: str | None = ((self._pod(key) or {}).get("status") or {}).get("podIP")
        return ip

    async def _report(self, p: BridgePlan, refused: str | None) -> None:
        b = p.bridge
        if b.deleting:
            return
        now_wall, now = time.time(), time.monotonic()
        pods: list[dict[str, Any]] = []
        bridged = 0
        for key in p.pods:
            session = self.control.carriers.get(key)
            done = bool(
                session
                and session.settled()
                and b.name in session.applied_bridges()
                and self._pod_ip(key)  # in the DNAT
            )
            mark = self.marks.setdefault((b.name, key), PodMark())
            if done and mark.bridged_at is None:
                mark.bridged_at, mark.bridged_mono = now_wall, now
                log.info("pod bridged", bridge=b.name, pod=key)
                await record_event(
                    self.api, self._bridge_ref(b), "PodBridged", f"pod {key} bridged"
                )
            elif not done:
                mark.bridged_at, mark.bridged_mono, mark.delay = None, None, None
            ready = self.ready_since.get(key)
            seen = self.bridge_seen.get(b.uid, now)
            # Only pods that turned Ready after the bridge existed have a fair delay; a pod
            # bridged while it was starting has a negative one.
            if mark.bridged_mono is not None and mark.delay is None and ready and ready >= seen:
                mark.delay = round(mark.bridged_mono - ready, 3)
                log.info("pod ready and bridged", bridge=b.name, pod=key, delay=mark.delay)
            bridged += done
            entry: dict[str, Any] = {"pod": key, "bridged": done}
            if mark.bridged_at is not None:
                entry["bridgedAt"] = _iso(mark.bridged_at)
            if mark.delay is not None:
                entry["readyToBridgedSeconds"] = mark.delay
            if session is not None and b.name in session.stats:
                entry["stats"] = session.stats[b.name]
            pods.append(entry)
        for key in [k for (bn, k) in self.marks if bn == b.name and k not in p.pods]:
            del self.marks[(b.name, key)]
            await record_event(
                self.api, self._bridge_ref(b), "PodGone", f"pod {key} left the bridge"
            )
        reason, message = p.reason, p.problem
        if refused:
            reason, message = "Conflict", refused
        elif not message and not p.pods:
            reason, message = "NoPods", f"{b.kind.lower()} {b.workload} has no pod"
        elif not message and bridged < len(p.pods):
            waiting = [k for k in p.pods if not any(e["pod"] == k and e["bridged"] for e in pods)]
            details = []
            for k in waiting:
                state = carrier_state(self._pod(k) or {})
                if k in self.limited:
                    details.append(
                        f"{k}: {state.count} carriers ended, no more are added (roll it out)"
                    )
                elif state.waiting_reason:
                    details.append(f"{k}: carrier {state.waiting_reason}")
            reason = "Bridging"
            message = f"{bridged}/{len(p.pods)} pods bridged" + (
                f" ({'; '.join(details)})" if details else ""
            )
        ready = not message
        if ready:
            reason, message = "Bridged", f"{bridged}/{len(p.pods)} pods bridged"
        if self.problems.get(b.name) != reason:
            if not ready and reason not in ("Bridging", "WaitingForCargo"):
                await record_event(self.api, self._bridge_ref(b), reason, message, warning=True)
            self.problems[b.name] = reason
        if self.destinations.get(b.name) not in (None, p.destination) and p.destination:
            await record_event(
                self.api,
                self._bridge_ref(b),
                "Repointed",
                f"local container {b.local_container} is now at {p.destination}",
            )
        self.destinations[b.name] = p.destination
        old = (self._bridge(b.name) or {}).get("status") or {}
        status: dict[str, Any] = {
            "targetText": b.target_text,
            "destination": {"container": b.local_container, "address": p.destination},
            "upstream": self.pod_ip,
            "upstreamPorts": {str(k): v for k, v in p.upstream_ports.items()},
            "pods": pods,
            "bridgedText": f"{bridged}/{len(p.pods)}",
            "problem": message if not ready else None,
        }
        conditions = set_condition(old.get("conditions"), "Ready", ready, reason, message)
        stable = (status, [(c["type"], c["status"], c["reason"], c["message"]) for c in conditions])
        if self.reported.get(b.name) != stable:
            status["conditions"] = conditions
            await self.bridges_api.patch_status(b.name, status)
            self.reported[b.name] = stable

    async def _status_invalid(self, name: str, message: str) -> None:
        """A Bridge object stowaway cannot read (written by hand, or by a newer client)."""
        if self.problems.get(name) == message:
            return
        self.problems[name] = message
        old = (self._bridge(name) or {}).get("status") or {}
        conditions = set_condition(old.get("conditions"), "Ready", False, "Invalid", message)
        await self.bridges_api.patch_status(name, {"problem": message, "conditions": conditions})

    async def _finalize(self, plans: list[BridgePlan]) -> None:
        for p in plans:
            b = p.bridge
            if not b.deleting or not b.finalized:
                continue
            holders = [
                s.key
                for s in self.control.carriers.values()
                if b.name in s.sent_bridges() or (not s.settled() and b.name in s.dropping)
            ]
            waited = time.monotonic() - self.deleting_since.get(b.uid, time.monotonic())
            if holders and waited < self.settings.bridge_timeout:
                continue
            if holders:
                log.warning(
                    "finalizing bridge carriers did not confirm", bridge=b.name, pods=holders
                )
            obj = self._bridge(b.name) or {}
            finalizers = [
                f
                for f in obj.get("metadata", {}).get("finalizers") or []
                if f != names.BRIDGE_FINALIZER
            ]
            await self.bridges_api.set_finalizers(b.name, finalizers)
            self.reported.pop(b.name, None)
            self.problems.pop(b.name, None)
            self.destinations.pop(b.name, None)
            log.info("bridge removed", bridge=b.name)
