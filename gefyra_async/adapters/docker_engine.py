"""The Docker engine: a checked connection and a container event stream that reconnects."""

from __future__ import annotations

import json
import os
from email.utils import parsedate_to_datetime
from typing import Any

import aiodocker
import aiohttp
import anyio
import structlog

from gefyra_async.core.bus import EventBus
from gefyra_async.core.events import ContainerEvent, DockerStreamState

log = structlog.get_logger(__name__)

# Attributes of a container event that are not the container's labels.
_NOT_LABELS = frozenset({"name", "image", "exitCode", "signal", "execDuration"})


class DockerUnavailableError(RuntimeError):
    """The Docker engine does not answer; the message says where and what to do."""


def _unreachable(where: str, reason: str) -> str:
    return (
        f"Docker is not reachable at {where} ({reason}); start the Docker engine or set DOCKER_HOST"
    )


async def open_docker(url: str | None = None) -> aiodocker.Docker:
    """A Docker client whose engine answered a version call."""
    where = url or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    try:
        docker = aiodocker.Docker(url)
    except (ValueError, OSError) as exc:
        raise DockerUnavailableError(_unreachable(where, str(exc))) from None
    try:
        with anyio.fail_after(10):
            await docker.version()
    except (aiodocker.DockerError, aiohttp.ClientError, OSError, TimeoutError) as exc:
        await docker.close()
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        raise DockerUnavailableError(_unreachable(where, reason)) from None
    return docker


def _event(data: dict[str, Any]) -> ContainerEvent | None:
    if data.get("Type") != "container":
        return None
    actor = data.get("Actor") or {}
    attributes: dict[str, str] = actor.get("Attributes") or {}
    return ContainerEvent(
        container_id=actor.get("ID") or data.get("id", ""),
        name=attributes.get("name", ""),
        # "exec_start: sh -c ..." and the like: keep the verb.
        action=str(data.get("Action") or data.get("status") or "").split(":")[0],
        labels={k: v for k, v in attributes.items() if k not in _NOT_LABELS},
    )


def _server_time(date: str | None) -> int | None:
    """The engine's clock from a response's ``Date`` header, in epoch seconds."""
    try:
        return int(parsedate_to_datetime(date).timestamp()) if date else None
    except (TypeError, ValueError):
        return None


async def docker_events(
    docker: aiodocker.Docker,
    bus: EventBus,
    *,
    filters: dict[str, list[str]] | None = None,
    reconnect_delay: float = 1.0,
) -> None:
    """Publish container events until cancelled; reconnect whenever the stream ends.

    After a reconnect the stream resumes from the last event's time (or, before the
    first event, from when the stream first connected, by the engine's clock), so events
    that happened during the gap are delivered (possibly one second's worth twice: events
    are hints, consumers reconcile).
    """
    since: int | None = None
    while True:
        params: dict[str, Any] = {"filters": json.dumps({"type": ["container"], **(filters or {})})}
        if since is not None:
            params["since"] = str(since)
        try:
            async with docker._query(
                "events", params=params, timeout=docker._resolve_long_running_timeout(None)
            ) as response:
                if since is None:
                    # Resume from here even if the stream is lost before its first event.
                    since = _server_time(response.headers.get("Date"))
                try:
                    bus.publish(DockerStreamState(connected=True))
                    async for line in response.content:
                        if not line.strip():
                            continue
                        data = json.loads(line)
                        since = int(data.get("time") or since or 0) or None
                        event = _event(data)
                        if event is not None:
                            bus.publish(event)
                finally:
                    # Synchronous close: a cancelled task cannot await the release, and
                    # an unreleased connection would leak.
                    response.close()
            reason = "the event stream ended"
        except (aiodocker.DockerError, aiohttp.ClientError, OSError, ValueError) as exc:
            reason = f"{type(exc).__name__}: {exc}"
        log.warning("docker event stream lost", reason=reason, retry_in=reconnect_delay)
        bus.publish(DockerStreamState(connected=False, reason=reason))
        await anyio.sleep(reconnect_delay)
