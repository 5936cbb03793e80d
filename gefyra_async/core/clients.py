"""Stowaway's plan for its clients: who gets which tunnel address and which peer.

Pure logic, no I/O: the stowaway agent feeds it the Client objects it listed and applies
the result to the WireGuard device and to the objects' status.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeGuard


@dataclass(frozen=True)
class PlannedClient:
    name: str
    public_key: str
    address: str | None  # tunnel address, None when the client is refused
    allowed_ips: tuple[str, ...] = ()
    problem: str = ""  # why it is refused or degraded


@dataclass
class Plan:
    clients: dict[str, PlannedClient] = field(default_factory=dict)

    def peers(self) -> dict[str, tuple[str, ...]]:
        """public key → allowed IPs, for every client that gets a peer."""
        return {c.public_key: c.allowed_ips for c in self.clients.values() if c.address}


def _valid_key(text: object) -> TypeGuard[str]:
    if not isinstance(text, str):
        return False
    try:
        return len(base64.b64decode(text, validate=True)) == 32
    except (binascii.Error, ValueError):
        return False


def plan_clients(
    objects: Iterable[Mapping[str, Any]], tunnel_cidr: str, server_address: str
) -> Plan:
    """Assign tunnel addresses (keeping the ones already in status) and peers.

    Clients are taken oldest first, so a newcomer never takes an address, key or subnet
    an existing client holds.
    """
    network = ipaddress.ip_network(tunnel_cidr)
    ordered = sorted(
        (o for o in objects if not o.get("metadata", {}).get("deletionTimestamp")),
        key=lambda o: (o["metadata"].get("creationTimestamp", ""), o["metadata"]["name"]),
    )
    used = {ipaddress.ip_address(server_address)}
    keep: dict[str, str] = {}
    for obj in ordered:
        address = (obj.get("status") or {}).get("tunnelAddress")
        if address and (ip := ipaddress.ip_address(address)) in network and ip not in used:
            used.add(ip)
            keep[obj["metadata"]["name"]] = address
    free = (h for h in network.hosts() if h not in used)

    plan = Plan()
    keys: dict[str, str] = {}
    subnets: dict[str, ipaddress.IPv4Network | ipaddress.IPv6Network] = {}
    for obj in ordered:
        name = obj["metadata"]["name"]
        spec = obj.get("spec") or {}
        key = spec.get("publicKey")
        if not _valid_key(key):
            plan.clients[name] = PlannedClient(name, str(key), None, (), "invalid public key")
            continue
        if key in keys:
            plan.clients[name] = PlannedClient(
                name, key, None, (), f"public key already used by client {keys[key]}"
            )
            continue
        keys[key] = name
        address = keep.get(name)
        if address is None:
            host = next(free, None)
            if host is None:
                plan.clients[name] = PlannedClient(name, key, None, (), "tunnel range exhausted")
                continue
            address = str(host)
        allowed = [f"{address}/32"]
        problem = ""
        if subnet_text := spec.get("localSubnet"):
            try:
                subnet = ipaddress.ip_network(subnet_text)
            except ValueError:
                problem = f"localSubnet {subnet_text!r} is not a network"
            else:
                clash = next((n for n, s in subnets.items() if s.overlaps(subnet)), None)
                if clash:
                    problem = f"localSubnet {subnet} overlaps client {clash}'s; not routed"
                else:
                    subnets[name] = subnet
                    allowed.append(str(subnet))
        plan.clients[name] = PlannedClient(name, key, address, tuple(allowed), problem)
    return plan
