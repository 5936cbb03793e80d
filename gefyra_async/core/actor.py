"""Actors and the supervisor that keeps them running.

An actor is a long-lived coroutine that reacts to the bus and to the outside world. The
supervisor runs every actor in one task group, and when one raises, logs it, publishes
``ActorFailed`` and starts it again after an exponential backoff. An actor that returns
normally has finished its work and is not restarted. Cancellation (shutdown) is never
treated as a failure.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import anyio
import structlog

from gefyra_async.core.bus import EventBus
from gefyra_async.core.events import ActorFailed

log = structlog.get_logger(__name__)


class Actor(Protocol):
    """Anything with a name and an async ``run(bus)``."""

    @property
    def name(self) -> str: ...

    async def run(self, bus: EventBus) -> None: ...


@dataclass(frozen=True)
class Backoff:
    """Exponential restart delay: ``initial * factor**(n-1)``, capped at ``maximum``.

    A run that lasted at least ``reset_after`` seconds counts as healthy: the next
    failure starts again from ``initial``.
    """

    initial: float = 0.2
    maximum: float = 10.0
    factor: float = 2.0
    reset_after: float = 30.0

    def delay(self, failures: int) -> float:
        return float(min(self.maximum, self.initial * self.factor ** max(0, failures - 1)))


@dataclass
class ActorStatus:
    name: str
    state: str = "starting"  # running | backing-off | finished
    restarts: int = 0
    last_error: str = ""


class Supervisor:
    """Runs actors and restarts the ones that fail, with backoff."""

    def __init__(
        self,
        bus: EventBus,
        actors: Sequence[Actor],
        backoff: Backoff | None = None,
        *,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        names = [a.name for a in actors]
        if len(set(names)) != len(names):
            raise ValueError(f"actor names must be unique: {names}")
        self.bus = bus
        self.actors = list(actors)
        self.backoff = backoff or Backoff()
        self._sleep = sleep
        self._clock = clock
        self.status = {a.name: ActorStatus(a.name) for a in actors}

    async def run(self) -> None:
        """Run until every actor has finished, or until cancelled."""
        async with anyio.create_task_group() as tg:
            for actor in self.actors:
                tg.start_soon(self._keep, actor, name=f"actor:{actor.name}")

    async def _keep(self, actor: Actor) -> None:
        status = self.status[actor.name]
        failures = 0
        while True:
            started = self._clock()
            status.state = "running"
            try:
                await actor.run(self.bus)
            except Exception as exc:  # every failure of an actor is restarted
                if self._clock() - started >= self.backoff.reset_after:
                    failures = 0
                failures += 1
                delay = self.backoff.delay(failures)
                status.state = "backing-off"
                status.restarts += 1
                status.last_error = f"{type(exc).__name__}: {exc}"
                log.warning(
                    "actor failed, restarting",
                    actor=actor.name,
                    error=status.last_error,
                    restarts=status.restarts,
                    retry_in=delay,
                    exc_info=exc,
                )
                self.bus.publish(
                    ActorFailed(
                        actor=actor.name,
                        error=status.last_error,
                        restarts=status.restarts,
                        retry_in=delay,
                    )
                )
                await self._sleep(delay)
            else:
                status.state = "finished"
                log.debug("actor finished", actor=actor.name)
                return
