"""Kubernetes-style status conditions: transition times change only on a real change."""

from __future__ import annotations

import datetime
from typing import Any


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def set_condition(
    conditions: list[dict[str, Any]] | None,
    type_: str,
    status: bool,
    reason: str,
    message: str,
    generation: int | None = None,
) -> list[dict[str, Any]]:
    """A new list with condition TYPE set; ``lastTransitionTime`` kept unless status flips."""
    text = "True" if status else "False"
    old = next((c for c in conditions or [] if c.get("type") == type_), None)
    changed_at = old["lastTransitionTime"] if old and old.get("status") == text else now_rfc3339()
    new = {
        "type": type_,
        "status": text,
        "reason": reason,
        "message": message,
        "lastTransitionTime": changed_at,
    }
    if generation is not None:
        new["observedGeneration"] = generation
    return [c for c in conditions or [] if c.get("type") != type_] + [new]


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any] | None:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == type_:
            return dict(c)
    return None
