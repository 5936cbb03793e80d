"""The Docker event source against the real engine: container events with their labels,
and the stream's state."""

from __future__ import annotations

import aiodocker
import anyio
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


async def test_unreachable_docker_is_a_clear_error(tmp_path: pytest.TempPathFactory) -> None:
    with pytest.raises(DockerUnavailableError, match="Docker is not reachable at unix://"):
        await open_docker(f"unix://{tmp_path}/no-docker.sock")
