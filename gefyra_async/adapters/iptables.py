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


async def rules_with_comment(table: str, chain: str, comment: str) -> list[list[str]]:
    """The rules of TABLE/CHAIN tagged ``-m comment --comment COMMENT`` (as -D arguments)."""
    import shlex

    result = await anyio.run_process(["iptables", "-w", "-t", table, "-S", chain], check=False)
    if result.returncode != 0:
        raise IptablesError(f"iptables -t {table} -S {chain}: {result.stderr.decode().strip()}")
    found = []
    for line in result.stdout.decode().splitlines():
        words = shlex.split(line)
        if words[:2] == ["-A", chain] and comment in words:
            found.append(words[2:])
    return found
