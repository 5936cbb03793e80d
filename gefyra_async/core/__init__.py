"""The core every gefyra-async process is built from: events, the bus, actors and their
supervisor, settings and logging. It imports nothing from the outside world (no Docker,
Kubernetes, netlink, DNS or WireGuard libraries): adapters do that.
"""
