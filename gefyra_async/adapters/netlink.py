"""Links, addresses and routes through netlink (pyroute2), in this or another netns.

A network namespace is named by a path: ``/proc/<pid>/ns/net`` of a container's
process, or ``/var/run/netns/<name>``. ``None`` means the caller's own namespace.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from pyroute2 import AsyncIPRoute
from pyroute2.netlink.exceptions import NetlinkError


class RouteError(RuntimeError):
    """A netlink request failed; the message names the request and the namespace."""


def _where(netns: str | None) -> str:
    return f"in {netns}" if netns else "in this network namespace"


async def _index(ipr: AsyncIPRoute, ifname: str, netns: str | None) -> int:
    found = await ipr.link_lookup(ifname=ifname)
    if not found:
        raise RouteError(f"there is no interface {ifname!r} {_where(netns)}")
    return int(found[0])


async def configure_link(
    ifname: str, address: str, *, mtu: int | None = None, netns: str | None = None
) -> None:
    """Give IFNAME the address (CIDR notation), set its MTU and bring it up (idempotent)."""
    iface = ipaddress.ip_interface(address)
    try:
        async with AsyncIPRoute(netns=netns) as ipr:
            index = await _index(ipr, ifname, netns)
            if mtu is not None:
                await ipr.link("set", index=index, mtu=mtu)
            existing = [
                (a.get("address"), a.get("prefixlen"))
                async for a in await ipr.addr("dump", index=index)
            ]
            if (str(iface.ip), iface.network.prefixlen) not in existing:
                await ipr.addr(
                    "add", index=index, address=str(iface.ip), prefixlen=iface.network.prefixlen
                )
            await ipr.link("set", index=index, state="up")
    except NetlinkError as exc:
        raise RouteError(f"configuring {ifname} {_where(netns)} failed: {exc}") from exc


async def replace_routes(ifname: str, cidrs: Sequence[str], *, netns: str | None = None) -> None:
    """Route each CIDR through IFNAME (replacing any route for the same destination)."""
    try:
        async with AsyncIPRoute(netns=netns) as ipr:
            index = await _index(ipr, ifname, netns)
            for cidr in cidrs:
                await ipr.route("replace", dst=str(ipaddress.ip_network(cidr)), oif=index)
    except NetlinkError as exc:
        raise RouteError(
            f"routing {list(cidrs)} via {ifname} {_where(netns)} failed: {exc}"
        ) from exc


async def set_default_route(gateway: str, *, netns: str | None = None) -> bool:
    """Make GATEWAY the default route; return False when it already was."""
    try:
        async with AsyncIPRoute(netns=netns) as ipr:
            current = [
                r.get("gateway")
                async for r in await ipr.route("dump", family=2)
                if r.get("dst_len") == 0 and r.get("table") == 254
            ]
            if current == [gateway]:
                return False
            await ipr.route("replace", dst="default", gateway=gateway)
            return True
    except NetlinkError as exc:
        raise RouteError(
            f"setting the default route to {gateway} {_where(netns)} failed: {exc}"
        ) from exc


async def default_gateway(*, netns: str | None = None) -> str | None:
    async with AsyncIPRoute(netns=netns) as ipr:
        for r in [r async for r in await ipr.route("dump", family=2)]:
            if r.get("dst_len") == 0 and r.get("table") == 254:
                gw = r.get("gateway")
                return str(gw) if gw else None
    return None
