"""Docker images: pull, build and push with progress, errors as one sentence.

Docker reports pulls, builds and pushes as a stream of JSON messages; a failure arrives as
a message with ``error`` rather than as an HTTP status. Both end up here as
:class:`ImageError`, whose text names the image (and registry) and what to do.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Mapping
from typing import Any

import aiodocker
import aiohttp
from aiodocker.exceptions import DockerError

Progress = Callable[[str], None]  # one human-readable line per step worth telling


class ImageError(RuntimeError):
    """A pull, build or push failed; the message is one sentence with what to do."""


def registry_of(ref: str) -> str:
    """The registry host of an image reference (Docker Hub when it names none)."""
    first, sep, _ = ref.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return first
    return "docker.io"


def _explain_pull(ref: str, message: str) -> str:
    registry = registry_of(ref)
    lowered = message.lower()
    if "manifest unknown" in lowered or "not found" in lowered:
        return (
            f"the image {ref} is not in the registry {registry} ({message.strip()}); "
            "push it there (`gefyra-async images build --push --registry ...`) or choose "
            "another registry with --registry"
        )
    if "unauthorized" in lowered or "denied" in lowered:
        return (
            f"the registry {registry} refused the image {ref} ({message.strip()}); "
            f"log in with `docker login {registry}`"
        )
    return (
        f"pulling the image {ref} from {registry} failed ({message.strip()}); "
        "check that the registry is reachable from this Docker engine"
    )


class _Meter:
    """Turns Docker's per-layer progress messages into a line every second or so."""

    def __init__(self, what: str, progress: Progress | None, every: float = 1.0) -> None:
        self.what, self.progress, self.every = what, progress, every
        self.layers: dict[str, tuple[int, int]] = {}
        self.done: set[str] = set()
        self.last = 0.0

    def feed(self, message: Mapping[str, Any]) -> None:
        layer = str(message.get("id") or "")
        status = str(message.get("status") or "")
        detail = message.get("progressDetail") or {}
        if layer and detail.get("total"):
            self.layers[layer] = (int(detail.get("current") or 0), int(detail["total"]))
        if layer and status.startswith(
            ("Pull complete", "Already exists", "Pushed", "Layer already exists", "Mounted")
        ):
            self.done.add(layer)
        now = time.monotonic()
        if self.progress is not None and now - self.last >= self.every and self.layers:
            self.last = now
            current = sum(c for c, _ in self.layers.values())
            total = sum(t for _, t in self.layers.values())
            self.progress(
                f"{self.what}: {len(self.done)} layers done, "
                f"{current / 1e6:.1f}/{total / 1e6:.1f} MB"
            )


async def exists(docker: aiodocker.Docker, ref: str) -> bool:
    try:
        await docker.images.inspect(ref)
    except DockerError as exc:
        if exc.status == 404:
            return False
        raise ImageError(f"asking Docker for the image {ref} failed: {exc.message}") from exc
    return True


async def pull(docker: aiodocker.Docker, ref: str, progress: Progress | None = None) -> None:
    """Pull REF (a fully named image) with progress lines; ImageError on failure."""
    name, sep, tag = ref.rpartition(":")
    if not sep or "/" in tag:
        name, tag = ref, "latest"
    meter = _Meter(f"pulling {ref}", progress)
    if progress is not None:
        progress(f"pulling {ref}")
    try:
        async for message in docker.images.pull(name, tag=tag, stream=True, timeout=None):
            if message.get("error"):
                raise ImageError(_explain_pull(ref, str(message["error"])))
            meter.feed(message)
    except DockerError as exc:
        raise ImageError(_explain_pull(ref, exc.message)) from exc
    except (aiohttp.ClientError, OSError) as exc:
        raise ImageError(_explain_pull(ref, str(exc) or type(exc).__name__)) from exc
    if not await exists(docker, ref):
        raise ImageError(f"Docker reported pulling {ref}, but does not have it afterwards")
    if progress is not None:
        progress(f"pulled {ref}")


async def build(
    docker: aiodocker.Docker,
    context_tar: bytes,
    ref: str,
    *,
    build_args: Mapping[str, str],
    labels: Mapping[str, str],
    progress: Progress | None = None,
) -> str:
    """Build the image REF from a tar of its context (Dockerfile at the top); its id."""
    try:
        async for message in docker.images.build(
            fileobj=io.BytesIO(context_tar),
            tag=ref,
            buildargs=dict(build_args),
            labels=dict(labels),
            rm=True,
            forcerm=True,
            stream=True,
            encoding="identity",
            timeout=None,
        ):
            if message.get("error"):
                raise ImageError(
                    f"building the image {ref} failed: {str(message['error']).strip()}"
                )
            line = str(message.get("stream") or "").strip()
            if progress is not None and line.startswith("Step "):
                progress(f"{ref}: {line}")
    except DockerError as exc:
        raise ImageError(f"building the image {ref} failed: {exc.message}") from exc
    try:
        info = await docker.images.inspect(ref)
    except DockerError as exc:
        raise ImageError(f"the build of {ref} left no image: {exc.message}") from exc
    return str(info["Id"])


async def push(docker: aiodocker.Docker, ref: str, progress: Progress | None = None) -> str:
    """Push REF to its registry; returns the digest the registry reported."""
    name, _, tag = ref.rpartition(":")
    meter = _Meter(f"pushing {ref}", progress)
    digest = ""
    try:
        async for message in docker.images.push(name, tag=tag, stream=True, timeout=None):
            if message.get("error"):
                raise ImageError(
                    f"pushing {ref} to {registry_of(ref)} failed ({str(message['error']).strip()});"
                    f" check that the registry is reachable and that you may push (docker login)"
                )
            aux = message.get("aux") or {}
            digest = str(aux.get("Digest") or digest)
            meter.feed(message)
    except DockerError as exc:
        raise ImageError(f"pushing {ref} failed: {exc.message}") from exc
    if progress is not None:
        progress(f"pushed {ref} {digest}".rstrip())
    return digest


async def untag(docker: aiodocker.Docker, ref: str) -> bool:
    """Remove the name REF (the image stays while other names or containers use it)."""
    try:
        await docker.images.delete(ref)
    except DockerError as exc:
        if exc.status == 404:
            return False
        if exc.status == 409:  # a container uses it: the name goes only with -f
            await docker.images.delete(ref, force=True)
            return True
        raise ImageError(f"removing the image name {ref} failed: {exc.message}") from exc
    return True
