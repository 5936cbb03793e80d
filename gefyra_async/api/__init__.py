"""The async API of gefyra-async; the CLI is built on it, and tests can use it directly.

async with open_context() as ctx:
    async with connected(ctx, "default") as conn:
        container = await run(ctx, conn, RunSpec(image="...", name="app"))
"""

from gefyra_async.api.connection import Connection, connected, down, list_connections, up
from gefyra_async.api.context import Context, UserError, open_context
from gefyra_async.api.runner import RunningContainer, RunSpec, run, running

__all__ = [
    "Connection",
    "Context",
    "RunSpec",
    "RunningContainer",
    "UserError",
    "connected",
    "down",
    "list_connections",
    "open_context",
    "run",
    "running",
    "up",
]
