"""Adapters: the only modules that talk to the outside world (Docker, Kubernetes,
WireGuard, netlink, DNS). Everything above them sees typed values and events.
"""
