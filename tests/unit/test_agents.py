"""Agents end cleanly on SIGTERM (they are PID 1 of their containers)."""

from __future__ import annotations

import signal
import subprocess
import sys

PROGRAM = """
import anyio
from gefyra_async.agents import until_terminated

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
