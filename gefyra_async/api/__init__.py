"""The async API of gefyra-async; the CLI is built on it, and tests can use it directly.

async with open_context() as ctx:
    async with connected(ctx, "default") as conn:
        container = await run(ctx, conn, RunSpec(image="...", name="app"))
        request = BridgeRequest("deploy/web", ["8080:8080"], local="app")
        async with bridged(ctx, request):
            ...  # the cluster's requests to web:8080 are answered by "app"
"""

from gefyra_async.api.bridges import (
    BridgeRequest,
    bridge,
    bridged,
    header_rule,
    list_bridges,
    path_rule,
    unbridge,
)
from gefyra_async.api.connection import Connection, connected, down, list_connections, up
from gefyra_async.api.context import Context, UserError, open_context
from gefyra_async.api.runner import RunningContainer, RunSpec, run, running

__all__ = [
    "BridgeRequest",
    "Connection",
    "Context",
    "RunSpec",
    "RunningContainer",
    "UserError",
    "bridge",
    "bridged",
    "connected",
    "down",
    "header_rule",
    "list_bridges",
    "list_connections",
    "open_context",
    "path_rule",
    "run",
    "running",
    "unbridge",
    "up",
]
