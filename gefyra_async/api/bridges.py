"""Bridges: traffic of a cluster workload handed to a local container.

``bridge`` checks everything the user named before it writes anything — the connection,
the namespace, the workload, the container and its port, the local container — then
writes one Bridge object and waits until stowaway reports every ready pod of the target
bridged. If that does not happen it removes the object again and says why. ``unbridge``
deletes the object and waits until every carrier dropped it (stowaway's finalizer), so
when it returns the original app serves again.
"""

from __future__ import annotations

import datetime
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import structlog

from gefyra_async.adapters import containers as docker
from gefyra_async.adapters.kube_objects import (
    AlreadyExistsError,
    Bridges,
    Clients,
    namespace_exists,
    roll_out,
    workload,
)
from gefyra_async.api.connection import cargo_name, network_name
from gefyra_async.api.context import Context, UserError
from gefyra_async.api.install import remove_bridges
from gefyra_async.core import manifests, names
from gefyra_async.core.bridges import (
    PortMap,
    bridge_name,
    container_ports,
    parse_ports,
    parse_target,
    valid_name,
)
from gefyra_async.core.conditions import condition
from gefyra_async.core.httprules import Rule

log = structlog.get_logger(__name__)

# Stowaway's reasons that waiting will not change.
TERMINAL = frozenset({"Conflict", "TargetNotFound", "ContainerNotFound", "Invalid"})


@dataclass
class BridgeRequest:
    target: str  # kind/name[/container]
    ports: Sequence[str]  # remote:local
    local: str  # the local container
    namespace: str | None = None
    rules: list[dict[str, str]] = field(default_factory=list)
    name: str | None = None
    connection: str = "default"


def header_rule(text: str, match: str = "exact") -> dict[str, str]:
    """``Name=value`` → a header rule (``Name: value`` works too)."""
    sep = "=" if "=" in text else ":"
    header, _, value = text.partition(sep)
    if not header.strip() or sep not in text:
        raise UserError(f"header rule {text!r} is not NAME=VALUE (e.g. X-Dev=alice)")
    return _checked(
        {"kind": "header", "name": header.strip(), "match": match, "value": value.strip()}
    )


def path_rule(value: str, match: str = "exact") -> dict[str, str]:
    return _checked({"kind": "path", "match": match, "value": value})


def _checked(rule: dict[str, str]) -> dict[str, str]:
    try:
        return Rule.from_dict(rule).to_dict()
    except ValueError as exc:
        raise UserError(f"rule {rule}: {exc}") from None


async def _target_container(
    ctx: Context,
    namespace: str,
    kind: str,
    name: str,
    container: str | None,
    ports: Sequence[PortMap],
) -> str:
    if not await namespace_exists(ctx.api, namespace):
        raise UserError(f"namespace {namespace!r} does not exist; check -n/--namespace")
    obj = await workload(ctx.api, namespace, kind, name)
    if obj is None:
        raise UserError(
            f"{kind.lower()} {name!r} does not exist in namespace {namespace!r}; "
            f"see `kubectl -n {namespace} get {kind.lower()}s`"
        )
    spec = obj["spec"] if kind == "Pod" else obj["spec"]["template"]["spec"]
    all_names = [c["name"] for c in spec.get("containers") or []]
    remote = [p.remote for p in ports]
    if container is None:
        fits = [c for c in all_names if set(remote) <= set(container_ports(spec, c) or [])]
        if not fits:
            declared = {c: container_ports(spec, c) for c in all_names}
            raise UserError(
                f"no container of {kind.lower()}/{name} declares port(s) {remote} "
                f"(declared: {declared}); pick the port a container serves"
            )
        return str(fits[0])
    declared_ports = container_ports(spec, container)
    if declared_ports is None:
        raise UserError(
            f"{kind.lower()}/{name} has no container {container!r} (it has {', '.join(all_names)})"
        )
    missing = [p for p in remote if p not in declared_ports]
    if missing:
        raise UserError(
            f"container {container!r} of {kind.lower()}/{name} does not declare port(s) "
            f"{missing} (it declares {declared_ports or 'none'})"
        )
    return container


async def _local_container(ctx: Context, connection: str, local: str) -> None:
    info = await docker.inspect(ctx.docker, local)
    if info is None or not info.running:
        raise UserError(
            f"local container {local!r} is not running; start it with "
            f"`gefyra-async run --connection {connection} --name {local} ...`"
        )
    ours = (
        info.labels.get(names.CONNECTION) == connection or network_name(connection) in info.networks
    )
    if not ours:
        raise UserError(
            f"local container {local!r} is not part of connection {connection}; start it with "
            f"`gefyra-async run --connection {connection}` (or attach it to network "
            f"{network_name(connection)})"
        )


async def bridge(ctx: Context, req: BridgeRequest, *, wait: bool = True) -> dict[str, Any]:
    """Make REQ's bridge; returns the Bridge object once every ready target pod is bridged."""
    try:
        kind, workload_name, container = parse_target(req.target)
        ports = parse_ports(req.ports)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    rules = [_checked(dict(r)) for r in req.rules]
    name = req.name or bridge_name(req.connection, req.local, workload_name)
    if not valid_name(name):
        raise UserError(f"bridge name {name!r} is not valid; use lower-case letters, digits, '-'")
    namespace = req.namespace or ctx.namespace
    client = (
        await Clients(ctx.api, ctx.settings).get(req.connection)
        if await namespace_exists(ctx.api, ctx.settings.namespace)
        else None
    )
    cargo = await docker.inspect(ctx.docker, cargo_name(req.connection))
    if client is None or cargo is None or not cargo.running:
        raise UserError(
            f"connection {req.connection!r} is not up; "
            f"run `gefyra-async up --name {req.connection}` first"
        )
    container = await _target_container(ctx, namespace, kind, workload_name, container, ports)
    await _local_container(ctx, req.connection, req.local)
    bridges = Bridges(ctx.api, ctx.settings)
    body = manifests.bridge(
        ctx.settings,
        name,
        client=req.connection,
        client_uid=client["metadata"]["uid"],
        target={
            "namespace": namespace,
            "kind": kind,
            "name": workload_name,
            "container": container,
        },
        ports=[{"remote": p.remote, "local": p.local} for p in ports],
        local_container=req.local,
        rules=rules,
    )
    try:
        await bridges.create(body)
    except AlreadyExistsError:
        raise UserError(
            f"a bridge named {name!r} exists already; unbridge it first or choose --name"
        ) from None
    log.info("bridge created", bridge=name, target=req.target, namespace=namespace)
    if not wait:
        obj = await bridges.get(name)
        return obj or body
    try:
        return await _wait_bridged(ctx, name)
    except BaseException:
        with anyio.CancelScope(shield=True):
            await remove_bridges(ctx, [name])
        raise


async def _wait_bridged(ctx: Context, name: str) -> dict[str, Any]:
    bridges = Bridges(ctx.api, ctx.settings)
    last = "stowaway has not reported on it yet"
    with anyio.move_on_after(ctx.settings.bridge_timeout):
        while True:
            obj = await bridges.get(name)
            ready = condition(obj or {}, "Ready")
            if obj is not None and ready is not None:
                if ready.get("status") == "True":
                    return obj
                last = str(ready.get("message"))
                if ready.get("reason") in TERMINAL:
                    raise UserError(f"bridge {name} cannot work: {last}; nothing was changed")
            await anyio.sleep(0.2)
    raise UserError(
        f"bridge {name} was not in place after {ctx.settings.bridge_timeout:.0f}s ({last}); "
        f"it was removed again. See `kubectl -n {ctx.settings.namespace} describe bridge {name}`"
    )


async def unbridge(
    ctx: Context,
    name: str | None = None,
    *,
    connection: str | None = None,
    everything: bool = False,
    restore: bool = False,
) -> list[str]:
    """Remove bridge NAME, or with EVERYTHING all bridges (of CONNECTION if given).

    Returns the names removed; waits until the original app serves again. A pod keeps its
    (idle) carrier for its life — Kubernetes never removes an ephemeral container — so
    RESTORE then rolls the bridged Deployments and StatefulSets out: their new pods are
    exactly as before the bridge. A bridge of a bare pod cannot be restored that way and is
    refused before anything is removed.
    """
    bridges = await list_bridges(ctx, connection)
    if everything:
        chosen = [b["metadata"]["name"] for b in bridges]
    else:
        if name is None:
            raise UserError("name a bridge to remove, or pass --all")
        if not any(b["metadata"]["name"] == name for b in bridges):
            known = ", ".join(b["metadata"]["name"] for b in bridges) or "none"
            raise UserError(f"there is no bridge named {name!r} (bridges: {known})")
        chosen = [name]
    targets = sorted(
        {
            (t.get("namespace", ""), t.get("kind", ""), t.get("name", ""))
            for b in bridges
            if b["metadata"]["name"] in chosen
            for t in [(b.get("spec") or {}).get("target") or {}]
        }
    )
    if restore:
        pods = [f"pod/{name} in {ns}" for ns, kind, name in targets if kind == "Pod"]
        if pods:
            raise UserError(
                f"--restore rolls out Deployments and StatefulSets; {', '.join(pods)} would "
                "have to be deleted and created again by hand; unbridge without --restore"
            )
    await remove_bridges(ctx, chosen)
    if restore:
        at = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        for ns, kind, workload_name in targets:
            if not await roll_out(ctx.api, ns, kind, workload_name, at):
                log.info("not rolled out: the workload is gone", workload=f"{ns}/{workload_name}")
    return chosen


async def list_bridges(ctx: Context, connection: str | None = None) -> list[dict[str, Any]]:
    if not await namespace_exists(ctx.api, ctx.settings.namespace):
        return []
    found = await Bridges(ctx.api, ctx.settings).list()
    if connection is not None:
        found = [b for b in found if (b.get("spec") or {}).get("client") == connection]
    return sorted(found, key=lambda b: b["metadata"]["name"])


async def get_bridge(ctx: Context, name: str) -> dict[str, Any]:
    obj = (
        await Bridges(ctx.api, ctx.settings).get(name)
        if await namespace_exists(ctx.api, ctx.settings.namespace)
        else None
    )
    if obj is None:
        raise UserError(f"there is no bridge named {name!r}; see `gefyra-async bridge list`")
    return obj


def summary(obj: dict[str, Any]) -> dict[str, Any]:
    """The user-facing view of a Bridge object (``bridge list -o json``)."""
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    target = spec.get("target") or {}
    ready = condition(obj, "Ready") or {}
    return {
        "name": obj["metadata"]["name"],
        "connection": spec.get("client"),
        "namespace": target.get("namespace"),
        "target": "/".join(
            [
                str(target.get("kind", "")).lower(),
                str(target.get("name")),
                str(target.get("container")),
            ]
        ),
        "ports": [f"{p['remote']}:{p['local']}" for p in spec.get("ports") or []],
        "local": (spec.get("destination") or {}).get("container"),
        "localAddress": (status.get("destination") or {}).get("address"),
        "rules": spec.get("rules") or [],
        "ready": ready.get("status") == "True",
        "reason": ready.get("reason"),
        "message": ready.get("message"),
        "pods": status.get("pods") or [],
    }


@asynccontextmanager
async def bridged(ctx: Context, req: BridgeRequest) -> AsyncIterator[dict[str, Any]]:
    """``bridge`` on entry, ``unbridge`` on exit."""
    obj = await bridge(ctx, req)
    try:
        yield obj
    finally:
        with anyio.CancelScope(shield=True):
            await remove_bridges(ctx, [obj["metadata"]["name"]])
