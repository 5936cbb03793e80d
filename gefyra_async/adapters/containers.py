"""Docker containers and networks as gefyra-async uses them (aiodocker inside)."""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import aiodocker
from aiodocker.exceptions import DockerError


def docker_client() -> aiodocker.Docker:
    """A client of the local Docker engine (DOCKER_HOST or the default socket)."""
    return aiodocker.Docker()


@dataclass(frozen=True)
class ContainerInfo:
    id: str
    name: str
    running: bool
    pid: int  # 0 when not running
    labels: dict[str, str]
    networks: dict[str, str]  # network name → IPv4 address
    created: float = 0.0  # seconds since the epoch
    image: str = ""  # the image reference it was created from


def _info(data: dict[str, Any]) -> ContainerInfo:
    state = data.get("State") or {}
    nets = (data.get("NetworkSettings") or {}).get("Networks") or {}
    return ContainerInfo(
        id=data["Id"],
        name=data.get("Name", "").lstrip("/"),
        running=bool(state.get("Running")),
        pid=int(state.get("Pid") or 0),
        labels=(data.get("Config") or {}).get("Labels") or {},
        networks={name: n.get("IPAddress", "") for name, n in nets.items()},
        created=_epoch(data.get("Created")),
        image=str((data.get("Config") or {}).get("Image") or data.get("Image") or ""),
    )


def _epoch(stamp: Any) -> float:
    """Docker's ``Created`` (RFC 3339 with nanoseconds in inspect, seconds in lists)."""
    if isinstance(stamp, int | float):
        return float(stamp)
    try:
        return datetime.fromisoformat(str(stamp)).timestamp()
    except ValueError:
        return 0.0


async def inspect(docker: aiodocker.Docker, ref: str) -> ContainerInfo | None:
    try:
        container = await docker.containers.get(ref)
    except DockerError as exc:
        if exc.status == 404:
            return None
        raise
    return _info(container._container)


async def with_label(
    docker: aiodocker.Docker, label: str, *, running_only: bool = True
) -> list[ContainerInfo]:
    filters = json.dumps({"label": [label]})
    listed = await docker.containers.list(all=not running_only, filters=filters)
    found = []
    for c in listed:
        info = await inspect(docker, c.id)
        if info is not None:
            found.append(info)
    return found


async def network(docker: aiodocker.Docker, name: str) -> dict[str, Any] | None:
    try:
        net = await docker.networks.get(name)
        data: dict[str, Any] = await net.show()
    except DockerError as exc:
        if exc.status == 404:
            return None
        raise
    return data


def network_gateway(data: dict[str, Any]) -> str | None:
    """The network's IPv4 gateway: the Docker host's address on it."""
    for config in (data.get("IPAM") or {}).get("Config") or []:
        gateway = config.get("Gateway")
        if gateway and ":" not in gateway:
            return str(gateway)
    return None


def network_subnet(data: dict[str, Any]) -> str | None:
    for config in (data.get("IPAM") or {}).get("Config") or []:
        subnet = config.get("Subnet")
        if subnet and ":" not in subnet:
            return str(subnet)
    return None


class ContainerError(RuntimeError):
    """A Docker request about a container, network or image failed; says which and why."""


# Where connection networks take their subnets: Docker's own pools start at 172.17/16,
# and the cluster side uses 10.x; a /24 per connection from here rarely collides.
SUBNET_POOL = "172.30.0.0/16"


async def _taken_subnets(docker: aiodocker.Docker) -> list[ipaddress.IPv4Network]:
    taken = []
    for net in await docker.networks.list():
        for config in (net.get("IPAM") or {}).get("Config") or []:
            subnet = config.get("Subnet")
            if subnet and ":" not in subnet:
                taken.append(ipaddress.IPv4Network(subnet))
    return taken


async def create_network(docker: aiodocker.Docker, name: str, labels: dict[str, str]) -> str:
    """Create a bridge network on a free /24 of SUBNET_POOL; return its subnet.

    The subnet is chosen here (not by Docker) so that cargo can have a fixed address.
    """
    taken = await _taken_subnets(docker)
    for subnet in ipaddress.IPv4Network(SUBNET_POOL).subnets(new_prefix=24):
        if any(subnet.overlaps(t) for t in taken):
            continue
        try:
            await docker.networks.create(
                {
                    "Name": name,
                    "Driver": "bridge",
                    "Labels": labels,
                    "CheckDuplicate": True,
                    "IPAM": {"Config": [{"Subnet": str(subnet)}]},
                }
            )
        except DockerError as exc:
            if "overlap" in exc.message:
                continue  # taken meanwhile by someone else
            raise ContainerError(
                f"creating the Docker network {name} failed: {exc.message}"
            ) from exc
        return str(subnet)
    raise ContainerError(f"no free /24 left in {SUBNET_POOL} for the Docker network {name}")


async def remove_network(docker: aiodocker.Docker, name: str) -> bool:
    try:
        net = await docker.networks.get(name)
        await net.delete()
    except DockerError as exc:
        if exc.status == 404:
            return False
        raise ContainerError(f"removing the Docker network {name} failed: {exc.message}") from exc
    return True


async def create_and_start(docker: aiodocker.Docker, name: str, config: dict[str, Any]) -> str:
    """Create and start a container; a clear error when the name is taken or the image
    is missing. A container that was created but failed to start is removed again."""
    try:
        container = await docker.containers.create(config, name=name)
    except DockerError as exc:
        if exc.status == 409:
            raise ContainerError(
                f"a container named {name!r} already exists; choose another name or remove it"
            ) from None
        if exc.status == 404:
            raise ContainerError(
                f"the image {config.get('Image')!r} is not available to Docker; "
                "build or pull it first"
            ) from None
        raise ContainerError(f"creating container {name} failed: {exc.message}") from exc
    try:
        await container.start()
    except DockerError as exc:
        await container.delete(force=True)
        raise ContainerError(f"starting container {name} failed: {exc.message}") from exc
    return str(container.id)


async def remove_container(docker: aiodocker.Docker, ref: str) -> bool:
    try:
        container = await docker.containers.get(ref)
        await container.delete(force=True, v=True)
    except DockerError as exc:
        if exc.status == 404:
            return False
        if exc.status == 409:  # removal already in progress (auto-remove)
            return True
        raise ContainerError(f"removing container {ref} failed: {exc.message}") from exc
    return True


async def exec_in(docker: aiodocker.Docker, ref: str, cmd: list[str]) -> tuple[int, str]:
    """Run CMD in a running container; return its exit code and output."""
    try:
        container = await docker.containers.get(ref)
    except DockerError as exc:
        raise ContainerError(f"container {ref} is not available: {exc.message}") from None
    execution = await container.exec(cmd, stdout=True, stderr=True)
    chunks: list[bytes] = []
    async with execution.start(detach=False) as stream:
        while (message := await stream.read_out()) is not None:
            chunks.append(message.data)
    result = await execution.inspect()
    return int(result.get("ExitCode") or 0), b"".join(chunks).decode(errors="replace")


async def wait_container(docker: aiodocker.Docker, ref: str) -> int:
    container = await docker.containers.get(ref)
    result = await container.wait()
    return int(result.get("StatusCode", 1))


async def follow_logs(docker: aiodocker.Docker, ref: str) -> Any:
    """An async iterator over the container's output lines, until it stops."""
    container = await docker.containers.get(ref)
    return container.log(stdout=True, stderr=True, follow=True)


async def addresses_on_network(docker: aiodocker.Docker, name: str) -> dict[str, str]:
    """Container name → IPv4 address of every container attached to network NAME."""
    data = await network(docker, name)
    found: dict[str, str] = {}
    for entry in ((data or {}).get("Containers") or {}).values():
        address = str(entry.get("IPv4Address") or "").split("/")[0]
        if entry.get("Name") and address:
            found[str(entry["Name"])] = address
    return found
