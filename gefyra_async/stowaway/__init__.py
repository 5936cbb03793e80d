"""Stowaway: the cluster side's agent, one pod in the cluster side's namespace.

WireGuard server end, the API transport's relay, the control server of carriers and
cargos, the pod-rewriter that makes Bridge objects true, and the watchdog of vanished
laptops; fed by watch stores of Clients, Bridges and Pods. Runs as
``python3 -m gefyra_async.stowaway`` (``agent.py``). Does not import cargo or carrier.
"""
