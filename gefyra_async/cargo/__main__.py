"""``python3 -m gefyra_async.cargo``: the cargo agent."""

from gefyra_async.cargo.agent import main

main()
