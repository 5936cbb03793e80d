"""Install and remove the cluster side (namespace, CRD, RBAC, stowaway, tunnel Service)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio
import structlog

from gefyra_async import __version__
from gefyra_async.adapters.kube_apply import apply, delete
from gefyra_async.adapters.kube_objects import (
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


async def uninstall(ctx: Context) -> bool:
    """Remove the cluster side; waits until the namespace is gone. False: nothing was there."""
    s = ctx.settings
    found = False
    for obj in reversed(manifests.cluster_side(s, "")):
        found = await delete(ctx.api, obj) or found

    async def gone() -> bool:
        return not await namespace_exists(ctx.api, s.namespace)

    await _wait(
        gone, f"removal of namespace {s.namespace}", s.install_timeout, "it may still be finalizing"
    )
    return found
