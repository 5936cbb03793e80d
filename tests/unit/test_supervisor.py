"""The supervisor: failed actors restart with backoff; finished ones stay finished."""

from __future__ import annotations

from dataclasses import dataclass, field

import anyio
import pytest

from gefyra_async.core.actor import Backoff, Supervisor
from gefyra_async.core.bus import EventBus
from gefyra_async.core.events import ActorFailed

pytestmark = pytest.mark.anyio


@dataclass
class Flaky:
    """Fails ``failures`` times, then finishes."""

    name: str
    failures: int
    runs: int = 0

    async def run(self, bus: EventBus) -> None:
        self.runs += 1
        if self.runs <= self.failures:
            raise RuntimeError(f"boom {self.runs}")


@dataclass
class FakeTime:
    """A clock that only moves when the supervisor sleeps: no real time passes."""

    now: float = 0.0
    sleeps: list[float] = field(default_factory=list)

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await anyio.lowlevel.checkpoint()


async def test_failed_actor_restarts_with_exponential_backoff() -> None:
    bus, time = EventBus(), FakeTime()
    flaky = Flaky("flaky", failures=4)
    sup = Supervisor(
        bus, [flaky], Backoff(initial=0.5, maximum=3.0), sleep=time.sleep, clock=time.clock
    )
    async with bus.subscribe(ActorFailed) as failures:
        await sup.run()
        reported = [failures.receive_nowait() for _ in range(4)]

    assert flaky.runs == 5
    assert time.sleeps == [0.5, 1.0, 2.0, 3.0]  # doubled, capped at the maximum
    assert sup.status["flaky"].state == "finished"
    assert sup.status["flaky"].restarts == 4
    assert sup.status["flaky"].last_error == "RuntimeError: boom 4"
    assert [(e.actor, e.restarts, e.retry_in) for e in reported if isinstance(e, ActorFailed)] == [
        ("flaky", 1, 0.5),
        ("flaky", 2, 1.0),
        ("flaky", 3, 2.0),
        ("flaky", 4, 3.0),
    ]


async def test_long_healthy_run_resets_the_backoff() -> None:
    time = FakeTime()

    @dataclass
    class FailsAfterRunningLong:
        name: str = "long"
        runs: int = 0

        async def run(self, bus: EventBus) -> None:
            self.runs += 1
            if self.runs == 1:
                raise RuntimeError("early")
            if self.runs == 2:
                time.now += 100  # ran healthy for a long while, then failed
                raise RuntimeError("late")

    sup = Supervisor(
        EventBus(),
        [FailsAfterRunningLong()],
        Backoff(initial=1.0, reset_after=30.0),
        sleep=time.sleep,
        clock=time.clock,
    )
    await sup.run()
    assert time.sleeps == [1.0, 1.0]  # the second failure started from the initial delay again


async def test_one_failing_actor_does_not_disturb_the_others() -> None:
    time = FakeTime()
    steady_ticks: list[int] = []

    @dataclass
    class Steady:
        name: str = "steady"

        async def run(self, bus: EventBus) -> None:
            for i in range(3):
                steady_ticks.append(i)
                await anyio.lowlevel.checkpoint()

    flaky = Flaky("flaky", failures=2)
    sup = Supervisor(EventBus(), [Steady(), flaky], sleep=time.sleep, clock=time.clock)
    await sup.run()
    assert steady_ticks == [0, 1, 2]
    assert sup.status["steady"].restarts == 0
    assert flaky.runs == 3


async def test_cancellation_is_a_shutdown_not_a_failure() -> None:
    time = FakeTime()
    started = anyio.Event()

    @dataclass
    class Forever:
        name: str = "forever"

        async def run(self, bus: EventBus) -> None:
            started.set()
            await anyio.sleep_forever()

    sup = Supervisor(EventBus(), [Forever()], sleep=time.sleep, clock=time.clock)
    async with anyio.create_task_group() as tg:
        tg.start_soon(sup.run)
        await started.wait()
        tg.cancel_scope.cancel()
    assert sup.status["forever"].restarts == 0
    assert time.sleeps == []


def test_actor_names_must_be_unique() -> None:
    with pytest.raises(ValueError, match="unique"):
        Supervisor(EventBus(), [Flaky("same", 0), Flaky("same", 0)])


def test_backoff_delays() -> None:
    backoff = Backoff(initial=0.2, maximum=1.0, factor=3.0)
    assert [backoff.delay(n) for n in range(1, 5)] == pytest.approx([0.2, 0.6, 1.0, 1.0])
