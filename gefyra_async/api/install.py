"""Install and remove the cluster side (namespace, CRD, RBAC, stowaway, tunnel Service)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import anyio
import structlog

from gefyra_async import __version__
from gefyra_async.adapters.kube_apply import KubeRequestError, apply, delete
from gefyra_async.adapters.kube_objects import (
    Bridges,
    Clients,
    crd_established,
    deployment_available,
    deployment_labels,
    namespace_exists,
)
from gefyra_async.api.context import Context, UserError
from gefyra_async.core import images, manifests, names
from gefyra_async.core.settings import Settings

Obj = dict[str, Any]

log = structlog.get_logger(__name__)


def image(settings: Settings, component: images.Component) -> str:
    """The image of COMPONENT this client uses: ``<registry>/<component>:<version>``."""
    try:
        return images.image_ref(settings.registry, component, __version__)
    except images.ImageNameError as exc:
        raise UserError(str(exc)) from exc


def render(
    settings: Settings, *, service_annotations: Mapping[str, str] | None = None
) -> list[Obj]:
    """The cluster side as objects, for `install` to print or apply."""
    try:
        return manifests.cluster_side(
            settings, __version__, service_annotations=service_annotations
        )
    except images.ImageNameError as exc:
        raise UserError(str(exc)) from exc


async def _wait(check: Callable[[], Awaitable[bool]], what: str, within: float, hint: str) -> None:
    with anyio.move_on_after(within):
        while not await check():  # noqa: ASYNC110 - polls the API
            await anyio.sleep(0.5)
        return
    raise UserError(f"{what} was not ready after {within:.0f}s; {hint}")


def _refused(obj: Obj, exc: KubeRequestError, verb: str) -> UserError:
    """A refusal by the API server as one sentence; 403 names `install` and the right."""
    meta = obj["metadata"]
    where = f" in namespace {meta['namespace']}" if meta.get("namespace") else ""
    what = f"{obj['kind']} {meta['name']}{where}"
    if exc.status == 403:
        return UserError(
            f"your kubeconfig may not {verb} {what} (the API server answered 403 Forbidden); "
            "an admin can install the cluster side with `gefyra-async install --apply`, "
            "or grant that right"
        )
    return UserError(f"the API server refused to {verb} {what}: {exc}")


async def install(
    ctx: Context, *, service_annotations: Mapping[str, str] | None = None
) -> list[Obj]:
    """Create or update the cluster side and wait until stowaway is available."""
    s = ctx.settings
    objects = render(s, service_annotations=service_annotations)
    for obj in objects:
        try:
            await apply(ctx.api, obj)
        except KubeRequestError as exc:
            raise _refused(obj, exc, "create or update") from exc
    crd_name = f"{names.CLIENT_PLURAL}.{s.api_group}"

    async def established() -> bool:
        return await crd_established(ctx.api, crd_name)

    await _wait(established, f"the custom resource {crd_name}", 30, "check the API server")
    await wait_available(ctx)
    return objects


async def wait_available(ctx: Context) -> None:
    s = ctx.settings

    async def available() -> bool:
        return await deployment_available(ctx.api, s.namespace, names.STOWAWAY)

    await _wait(
        available,
        f"stowaway in namespace {s.namespace}",
        s.install_timeout,
        f"see `kubectl -n {s.namespace} describe pods` (can the cluster pull the image "
        f"{image(s, 'stowaway')}? build and push it with "
        f"`gefyra-async images build --push --registry {s.registry}`)",
    )


async def installed_version(ctx: Context) -> str | None:
    """The version of the cluster side (stowaway's Deployment); None: not installed."""
    labels = await deployment_labels(ctx.api, ctx.settings.namespace, names.STOWAWAY)
    return None if labels is None else labels.get(names.VERSION, "unknown")


async def ensure_installed(ctx: Context, *, upgrade: bool = False) -> None:
    """For `up`: install the cluster side if missing; one of another version is replaced
    only when asked (UPGRADE), since every client of the cluster uses it."""
    try:
        version = await installed_version(ctx)
    except KubeRequestError as exc:
        if exc.status != 403:
            raise UserError(
                f"the API server refused to tell the cluster side's version: {exc}"
            ) from exc
        version = None  # may not even look: installing says what is missing
    if version is None or (upgrade and version != __version__):
        await install(ctx)
    elif version != __version__:
        raise UserError(
            f"the cluster side in namespace {ctx.settings.namespace} is gefyra-async {version}, "
            f"this client is {__version__}; replace it in place with `gefyra-async up "
            "--upgrade` (or an admin's `gefyra-async install --apply`): other connections "
            "reconnect by themselves"
        )
    else:
        await wait_available(ctx)


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


async def uninstall(ctx: Context) -> list[str]:
    """Remove the cluster side; waits until the namespace is gone. Returns what was removed
    (``Kind/name``, bridges and clients included); empty: nothing was there."""
    s = ctx.settings
    # Bridges first, while stowaway still runs to take carriers out of the pods (and
    # before the CRD goes: deleting it would wait on their finalizers).
    removed = [f"Bridge/{name}" for name in await remove_bridges(ctx)]
    if await namespace_exists(ctx.api, s.namespace):
        removed += [f"Client/{c['metadata']['name']}" for c in await Clients(ctx.api, s).list()]
    for obj in reversed(render(s)):
        try:
            if await delete(ctx.api, obj):
                removed.append(f"{obj['kind']}/{obj['metadata']['name']}")
        except KubeRequestError as exc:
            raise _refused(obj, exc, "delete") from exc

    async def gone() -> bool:
        return not await namespace_exists(ctx.api, s.namespace)

    await _wait(
        gone, f"removal of namespace {s.namespace}", s.install_timeout, "it may still be finalizing"
    )
    return removed
