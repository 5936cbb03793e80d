"""Cargo: the local side's gateway container on a connection's Docker network.

WireGuard client end, DNS forwarder, route manager of the app containers, and the
reporter of their addresses to stowaway. Runs as ``python3 -m gefyra_async.cargo``
(``agent.py``; with a subcommand, one of its helpers). Does not import stowaway or carrier.
"""
