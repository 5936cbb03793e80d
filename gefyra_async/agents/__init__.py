"""Process entry points inside the project's images: stowaway and cargo agents."""

from __future__ import annotations

import signal
from collections.abc import Awaitable, Callable

import anyio
import anyio.abc
import structlog

log = structlog.get_logger(__name__)


async def until_terminated(main: Callable[[], Awaitable[None]]) -> None:
    """Run MAIN until it returns or the process gets SIGTERM/SIGINT, then end cleanly.

    An agent is PID 1 of its container, and PID 1 ignores signals it has no handler
    for: without this, `kubectl delete pod` or `docker stop` would wait for the grace
    period and SIGKILL, and no connection would be closed in an orderly way (peers
    would notice only by their timeouts).
    """
    async with anyio.create_task_group() as tg:

        async def watch(*, task_status: anyio.abc.TaskStatus[None]) -> None:
            with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                task_status.started()
                async for signum in signals:
                    log.info("terminating", signal=signal.Signals(signum).name)
                    tg.cancel_scope.cancel()
                    return

        await tg.start(watch)  # handlers in place before MAIN starts
        await main()
        tg.cancel_scope.cancel()
