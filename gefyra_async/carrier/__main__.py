"""``python3 -m gefyra_async.carrier``: the carrier agent."""

from gefyra_async.carrier.agent import main

main()
