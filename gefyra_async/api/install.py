"""Install and remove the cluster side (namespace, CRD, RBAC, stowaway, tunnel Service)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio
import structlog

from gefyra_async import __version__
from gefyra_async.adapters.kube_apply import apply, delete
from gefyra_async.adapters.kube_objects import (
    Bridges,
    crd_established,
    deployment_available,
    namespace_exists,
)
from gefyra_async.api.context import Context, UserError
from gefyra_async.core import manifests, names

log = structlog.get_logger(__name__)


def stowaway_image() -> str:
    return f"{names.IMAGE_PREFIX}/stowaway:{__version__}"


def cargo_image() -> str:
    return f"{names.IMAGE_PREFIX}/cargo:{__version__}"


async def _wait(check: Callable[[], Awaitable[bool]], what: str, within: float, hint: str) -> None:
    with anyio.move_on_after(within):
        while not await check():  # noqa: ASYNC110 - polls the API
            await anyio.sleep(0.5)
        return
    raise UserError(f"{what} was not ready after {within:.0f}s; {hint}")


async def install(ctx: Context, image: str | None = None) -> None:
    """Create or update the cluster side and wait until stowaway is available."""
    s = ctx.settings
    for obj in manifests.cluster_side(s, image or stowaway_image()):
        await apply(ctx.api, obj)
    crd_name = f"{names.CLIENT_PLURAL}.{s.api_group}"

    async def established() -> bool:
        return await crd_established(ctx.api, crd_name)

    async def available() -> bool:
        return await deployment_available(ctx.api, s.namespace, names.STOWAWAY)

    await _wait(established, f"the custom resource {crd_name}", 30, "check the API server")
    await _wait(
        available,
        f"stowaway in namespace {s.namespace}",
        s.install_timeout,
        f"see `kubectl -n {s.namespace} describe pods` (is the image "
        f"{image or stowaway_image()} available to the cluster?)",
    )


async def remove_bridges(ctx: Context, chosen: list[str] | None = None) -> list[str]:
    """Delete the bridges CHOSEN (all when None) and wait until stowaway has had every
    carrier drop them. If stowaway cannot confirm in time (it is gone, say), the
    finalizer is removed here so nothing stays behind; carriers then remove their
    redirects by themselves once they lose stowaway (orphan timeout)."""
    if not await namespace_exists(ctx.api, ctx.settings.namespace):
        return []
    bridges = Bridges(ctx.api, ctx.settings)
    if chosen is None:
        chosen = [b["metadata"]["name"] for b in await bridges.list()]
    for name in chosen:
        await bridges.delete(name)

    async def gone() -> bool:
        return all([await bridges.get(n) is None for n in chosen])

    with anyio.move_on_after(ctx.settings.bridge_timeout):
        while not await gone():  # noqa: ASYNC110 - polls the API
            await anyio.sleep(0.2)
        return chosen
    for name in chosen:
        log.warning("stowaway did not confirm removing the bridge; removing it anyway", bridge=name)
        await bridges.set_finalizers(name, [])
    return chosen


async def uninstall(ctx: Context) -> bool:
    """Remove the cluster side; waits until the namespace is gone. False: nothing was there."""
    s = ctx.settings
    # Bridges first, while stowaway still runs to take carriers out of the pods (and
    # before the CRD goes: deleting it would wait on their finalizers).
    await remove_bridges(ctx)
    found = False
    for obj in reversed(manifests.cluster_side(s, "")):
        found = await delete(ctx.api, obj) or found

    async def gone() -> bool:
        return not await namespace_exists(ctx.api, s.namespace)

    await _wait(
        gone, f"removal of namespace {s.namespace}", s.install_timeout, "it may still be finalizing"
    )
    return found
