"""The Docker event source against the real engine: container events with their labels,
and the stream's state."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiodocker
import anyio
import anyio.abc
import pytest

from gefyra_async.adapters.docker_engine import DockerUnavailableError, docker_events, open_docker
from gefyra_async.core.bus import EventBus
from gefyra_async.core.events import ContainerEvent, DockerStreamState
from tests.e2e.platform import Platform, unique_name


async def test_container_events_arrive_with_name_and_labels(
    docker: aiodocker.Docker, platform: Platform
) -> None:
    bus = EventBus()
    name = unique_name("events")
    async with (
        bus.subscribe(ContainerEvent, DockerStreamState) as events,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(lambda: docker_events(docker, bus, filters={"label": ["ga-e2e=events"]}))
        with anyio.fail_after(10):
            first = await events.receive()
        assert first == DockerStreamState(connected=True)

        container = await docker.containers.run(
            {"Image": platform.base_image, "Cmd": ["true"], "Labels": {"ga-e2e": "events"}},
            name=name,
        )
        seen: list[ContainerEvent] = []
        with anyio.fail_after(20):
            while not any(e.action == "die" for e in seen):
                event = await events.receive()
                if isinstance(event, ContainerEvent) and event.name == name:
                    seen.append(event)
        await container.delete(force=True)
        tg.cancel_scope.cancel()

    actions = [e.action for e in seen]
    assert actions[:2] == ["create", "start"]
    assert "die" in actions
    assert all(e.labels.get("ga-e2e") == "events" for e in seen)
    assert all(e.container_id == container.id for e in seen)


DOCKER_SOCKET = "/var/run/docker.sock"


@asynccontextmanager
async def socket_relay(path: Path) -> AsyncIterator[None]:
    """A unix socket at PATH relaying to the Docker socket; leaving cuts every connection."""
    await anyio.Path(path).unlink(missing_ok=True)
    listener = await anyio.create_unix_listener(path)

    async def pump(src: anyio.abc.ByteStream, dst: anyio.abc.ByteStream) -> None:
        try:
            async for chunk in src:
                await dst.send(chunk)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass
        await dst.aclose()

    async def relay(client: anyio.abc.SocketStream) -> None:
        async with (
            client,
            await anyio.connect_unix(DOCKER_SOCKET) as engine,
            anyio.create_task_group() as tg,
        ):
            tg.start_soon(pump, client, engine)
            tg.start_soon(pump, engine, client)

    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, relay)
        try:
            yield
        finally:
            tg.cancel_scope.cancel()
    await anyio.Path(path).unlink(missing_ok=True)


async def test_a_cut_event_stream_reconnects_and_delivers_what_happened_meanwhile(
    docker: aiodocker.Docker, platform: Platform, tmp_path: Path
) -> None:
    """The stream is cut before any event arrived; a container created while it is down
    is still reported once the stream is back (it resumes from the time it connected)."""
    sock = tmp_path / "docker.sock"
    bus = EventBus()
    name = unique_name("gap")
    label = f"ga-e2e=gap-{os.getpid()}"
    async with (
        aiodocker.Docker(url=f"unix://{sock}") as relayed,
        bus.subscribe(ContainerEvent, DockerStreamState) as events,
        anyio.create_task_group() as tg,
    ):
        async with socket_relay(sock):
            tg.start_soon(
                lambda: docker_events(relayed, bus, filters={"label": [label]}, reconnect_delay=0.2)
            )
            with anyio.fail_after(10):
                assert await events.receive() == DockerStreamState(connected=True)
            await anyio.sleep(1.1)  # the gap starts in a later second than the connection
        with anyio.fail_after(10):
            lost = await events.receive()
        assert isinstance(lost, DockerStreamState)
        assert not lost.connected

        key, value = label.split("=")
        container = await docker.containers.create_or_replace(
            name, {"Image": platform.base_image, "Cmd": ["true"], "Labels": {key: value}}
        )
        try:
            async with socket_relay(sock):
                seen: list[ContainerEvent] = []
                with anyio.fail_after(20):
                    while not seen:
                        event = await events.receive()
                        if isinstance(event, ContainerEvent) and event.name == name:
                            seen.append(event)
                tg.cancel_scope.cancel()
        finally:
            await container.delete(force=True)
    assert seen[0].action == "create"
    assert seen[0].container_id == container.id


async def test_unreachable_docker_is_a_clear_error(tmp_path: pytest.TempPathFactory) -> None:
    with pytest.raises(DockerUnavailableError, match="Docker is not reachable at unix://"):
        await open_docker(f"unix://{tmp_path}/no-docker.sock")
