"""The product's images: build (and push) them from the installed package; pull one when
Docker lacks it.

``gefyra-async images build --push --registry R`` gives a team its own copies of the
cargo, stowaway and carrier images under ``R/<component>:<version>``; ``up``, ``install``
and ``run`` then use ``R`` (``--registry`` or ``GEFYRA_ASYNC_REGISTRY``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import structlog

from gefyra_async import __version__
from gefyra_async.adapters import docker_images, image_context
from gefyra_async.api.context import UserError
from gefyra_async.core import images, names

log = structlog.get_logger(__name__)

PullPolicy = Literal["always", "missing", "never"]
Progress = docker_images.Progress


def log_progress(line: str) -> None:
    log.info("progress", step=line)


@dataclass(frozen=True)
class BuiltImage:
    component: images.Component
    ref: str
    image_id: str
    digest: str  # as the registry reported it; "" when not pushed


async def ensure(
    docker: Any, ref: str, policy: PullPolicy = "missing", progress: Progress | None = None
) -> None:
    """Make image REF available to Docker as POLICY says; UserError when it cannot be."""
    try:
        present = await docker_images.exists(docker, ref)
        if policy == "never":
            if not present:
                raise UserError(
                    f"the image {ref} is not available to Docker and --pull never forbids "
                    "pulling it; pull or build it first"
                )
            return
        if policy == "always" or not present:
            await docker_images.pull(docker, ref, progress or log_progress)
    except docker_images.ImageError as exc:
        raise UserError(str(exc)) from exc


async def build(
    docker: Any,
    *,
    registry: str,
    components: Sequence[images.Component] = images.COMPONENTS,
    base: str | None = None,
    base_python: str = "3.11",
    wireguard_go: str | None = None,
    push: bool = False,
    progress: Progress | None = None,
) -> list[BuiltImage]:
    """Build COMPONENTS' images as ``<registry>/<component>:<version>``; with PUSH, push
    them. BASE: the base image (python3 of version BASE_PYTHON); WIREGUARD_GO: a prebuilt
    static binary, else it is built from its Go module."""
    report = progress or log_progress
    try:
        registry = images.check_registry(registry)
        refs = {c: images.image_ref(registry, c, __version__) for c in components}
    except images.ImageNameError as exc:
        raise UserError(str(exc)) from exc
    if base is not None and not base.strip():
        raise UserError("--base is empty; name a base image with python3, or leave it out")
    built = []
    try:
        site = await image_context.dependencies(base_python, report)
        wireguard = (
            await image_context.wireguard_go(wireguard_go, report)
            if any(c != "carrier" for c in components)
            else None
        )
        for component, ref in refs.items():
            tar = image_context.context_tar(
                component, site, wireguard if component != "carrier" else None
            )
            report(f"building {ref} ({len(tar) / 1e6:.0f} MB context)")
            image_id = await docker_images.build(
                docker,
                tar,
                ref,
                build_args={"BASE": base} if base else {},
                # Not the managed-by/component labels: containers inherit an image's
                # labels, and those mark the containers gefyra-async made itself.
                labels={
                    names.IMAGE_COMPONENT: component,
                    "org.opencontainers.image.version": __version__,
                },
                progress=report,
            )
            digest = await docker_images.push(docker, ref, report) if push else ""
            built.append(BuiltImage(component, ref, image_id, digest))
    except (image_context.ContextError, docker_images.ImageError) as exc:
        raise UserError(str(exc)) from exc
    return built
