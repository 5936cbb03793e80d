"""Network namespaces of the tests' own, with veth links between them (iproute2)."""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager


def ip(*args: str) -> str:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise AssertionError(f"ip {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout


@contextmanager
def netns_pair(underlay: str = "10.251.7") -> Iterator[tuple[str, str]]:
    """Two namespaces joined by a veth: ``<underlay>.1/30`` in one, ``.2/30`` in the other."""
    tag = secrets.token_hex(3)
    a, b = f"ga-t-{tag}-a", f"ga-t-{tag}-b"
    ip("netns", "add", a)
    try:
        ip("netns", "add", b)
        try:
            ip(
                "link",
                "add",
                f"va{tag}",
                "netns",
                a,
                "type",
                "veth",
                "peer",
                f"vb{tag}",
                "netns",
                b,
            )
            for ns, dev, host in ((a, f"va{tag}", 1), (b, f"vb{tag}", 2)):
                ip("-n", ns, "addr", "add", f"{underlay}.{host}/30", "dev", dev)
                ip("-n", ns, "link", "set", dev, "up")
                ip("-n", ns, "link", "set", "lo", "up")
            yield a, b
        finally:
            ip("netns", "del", b)
    finally:
        ip("netns", "del", a)
