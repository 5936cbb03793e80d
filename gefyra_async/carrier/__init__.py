"""Carrier: the interceptor placed into each bridged pod as an ephemeral container.

Redirects the bridged ports to its listeners and routes connections or requests to
stowaway or to the original app (``proxy.py``), as stowaway's control connection tells
it (``agent.py``). Runs as ``python3 -m gefyra_async.carrier``. Does not import stowaway
or cargo.
"""
