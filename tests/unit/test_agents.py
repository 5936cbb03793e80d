"""Agents end cleanly on SIGTERM (they are PID 1 of their containers)."""

from __future__ import annotations

import signal
import subprocess
import sys

PROGRAM = """
import anyio
from gefyra_async.actors.process import until_terminated

async def forever() -> None:
    print("started", flush=True)
    try:
        await anyio.sleep_forever()
    finally:
        print("cleaned up", flush=True)

anyio.run(until_terminated, forever)
"""


def test_sigterm_cancels_the_agent_and_it_exits_zero() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", PROGRAM], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "started"
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "cleaned up" in out
    assert "terminating" in out + err


FORKING = """
import os, signal, time
import anyio
from gefyra_async.actors.process import until_terminated

async def forks_a_helper_and_stops_it() -> None:
    pid = os.fork()  # as pyroute2 does to work in another network namespace
    if pid == 0:
        time.sleep(30)
        os._exit(0)
    await anyio.sleep(0.3)
    os.kill(pid, signal.SIGTERM)
    _, status = os.waitpid(pid, 0)
    await anyio.sleep(0.5)  # a stray wake-up would have cancelled us by now
    print("helper ended", os.waitstatus_to_exitcode(status), flush=True)

anyio.run(until_terminated, forks_a_helper_and_stops_it)
"""


def test_a_forked_helper_getting_sigterm_does_not_end_the_agent() -> None:
    done = subprocess.run(
        [sys.executable, "-c", FORKING], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "terminating" not in done.stdout + done.stderr
    assert "helper ended" in done.stdout
