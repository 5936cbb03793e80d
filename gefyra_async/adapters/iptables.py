"""Idempotent iptables rules (the iptables command; tables and chains as given)."""

from __future__ import annotations

from collections.abc import Sequence

import anyio


class IptablesError(RuntimeError):
    pass


async def _run(args: Sequence[str]) -> tuple[int, str]:
    result = await anyio.run_process(["iptables", "-w", *args], check=False)
    return result.returncode, result.stderr.decode(errors="replace").strip()


async def ensure_rule(table: str, chain: str, rule: Sequence[str], *, first: bool = False) -> bool:
    """Add RULE to TABLE/CHAIN unless it is there; return True when it was added."""
    code, _ = await _run(["-t", table, "-C", chain, *rule])
    if code == 0:
        return False
    op = ["-I", chain, "1"] if first else ["-A", chain]
    code, err = await _run(["-t", table, *op, *rule])
    if code != 0:
        raise IptablesError(f"iptables -t {table} {' '.join(op)} {' '.join(rule)}: {err}")
    return True


async def delete_rule(table: str, chain: str, rule: Sequence[str]) -> bool:
    """Remove every copy of RULE; return True when one was there."""
    removed = False
    while (await _run(["-t", table, "-C", chain, *rule]))[0] == 0:
        code, err = await _run(["-t", table, "-D", chain, *rule])
        if code != 0:
            raise IptablesError(f"iptables -t {table} -D {chain} {' '.join(rule)}: {err}")
        removed = True
    return removed
