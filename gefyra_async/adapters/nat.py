"""A whole iptables chain replaced in one step (iptables-restore --noflush).

Stowaway keeps its bridges' DNAT rules in one chain and rewrites the chain as a whole on
every change: atomic for the kernel (no moment with half the rules), and nothing stale
survives a change.
"""

from __future__ import annotations

from collections.abc import Sequence

import anyio

from gefyra_async.adapters.iptables import IptablesError, ensure_rule


async def replace_chain(
    table: str, chain: str, rules: Sequence[Sequence[str]], *, hook: tuple[str, Sequence[str]]
) -> None:
    """Make CHAIN of TABLE hold exactly RULES, and jump to it from HOOK (chain, match)."""
    lines = [f"*{table}", f":{chain} - [0:0]"]
    lines += [" ".join(["-A", chain, *rule]) for rule in rules]
    lines.append("COMMIT")
    result = await anyio.run_process(
        ["iptables-restore", "-w", "--noflush"],
        input=("\n".join(lines) + "\n").encode(),
        check=False,
    )
    if result.returncode != 0:
        raise IptablesError(
            f"iptables-restore of {table}/{chain} failed: {result.stderr.decode().strip()}"
        )
    parent, match = hook
    await ensure_rule(table, parent, [*match, "-j", chain])
