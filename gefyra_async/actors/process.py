"""What every agent process needs: ending cleanly on SIGTERM as the PID 1 of its container."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Awaitable, Callable
from types import FrameType

import anyio
import structlog

log = structlog.get_logger(__name__)


async def until_terminated(main: Callable[[], Awaitable[None]]) -> None:
    """Run MAIN until it returns or the process gets SIGTERM/SIGINT, then end cleanly.

    An agent is PID 1 of its container, and PID 1 ignores signals it has no handler
    for: without this, `kubectl delete pod` or `docker stop` would wait for the grace
    period and SIGKILL, and no connection would be closed in an orderly way (peers
    would notice only by their timeouts).

    Plain ``signal.signal`` handlers that check the pid, not the event loop's wakeup fd:
    pyroute2 forks a helper to work in another network namespace and stops it with
    SIGTERM. A forked child shares the loop's wakeup fd, so with a loop signal handler the
    helper's SIGTERM would end the agent (seen: cargo restarting whenever it set a
    container's route). Here a forked child that gets the signal just exits.
    """
    loop = asyncio.get_running_loop()
    agent_pid = os.getpid()
    stop = anyio.Event()
    received: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if os.getpid() != agent_pid:
            os._exit(128 + signum)  # a forked helper was told to stop, not the agent
        received.append(signum)
        loop.call_soon_threadsafe(stop.set)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        async with anyio.create_task_group() as tg:

            async def watch() -> None:
                await stop.wait()
                log.info("terminating", signal=signal.Signals(received[0]).name)
                tg.cancel_scope.cancel()

            tg.start_soon(watch)
            await main()
            tg.cancel_scope.cancel()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
