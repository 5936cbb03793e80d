"""``python3 -m gefyra_async.stowaway``: the stowaway agent."""

from gefyra_async.stowaway.agent import run

run()
