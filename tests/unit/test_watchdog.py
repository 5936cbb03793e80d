"""stowaway's watchdog: how long a client has been silent, and whom it removes."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from gefyra_async.core.settings import Settings
from gefyra_async.core.store import Store
from gefyra_async.stowaway.watchdog import Watchdog


def client(uid: str, address: str | None) -> dict[str, Any]:
    return {"metadata": {"uid": uid}, "status": {"tunnelAddress": address} if address else {}}


def test_silence_counts_from_the_last_word_or_from_first_sight() -> None:
    control: Any = SimpleNamespace(cargo_heard={})
    dog = Watchdog(Settings(), api=None, control=control, clients=Store("clients"))
    # First seen at 50, nothing heard yet: silent since 50.
    assert dog.silent_for(client("a", "10.250.0.2"), 50.0) == 0.0
    assert dog.silent_for(client("a", "10.250.0.2"), 80.0) == 30.0
    # Its cargo speaks at 100: silent since then.
    control.cargo_heard["10.250.0.2"] = 100.0
    assert dog.silent_for(client("a", "10.250.0.2"), 130.0) == 30.0
    # No tunnel address yet: silent since first seen.
    assert dog.silent_for(client("c", None), 300.0) == 0.0
    assert dog.silent_for(client("c", None), 301.5) == 1.5
    # A word heard before this client existed (a reused address) does not count against it.
    control.cargo_heard["10.250.0.4"] = 10.0
    assert dog.silent_for(client("d", "10.250.0.4"), 400.0) == 0.0
