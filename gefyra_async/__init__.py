"""gefyra-async: run a local container as if it were a pod of a Kubernetes cluster.

The package grows in layers (see docs/architecture.md): ``core`` (events, bus, actors,
settings), ``adapters`` (Docker, Kubernetes, WireGuard, netlink, DNS), ``actors``,
``api`` (the async API) and ``cli``. Lower layers never import higher ones.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("gefyra-async")
except PackageNotFoundError:  # pragma: no cover - running from a plain checkout
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
