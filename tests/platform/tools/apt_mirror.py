"""Print the first apt source of this machine that serves Debian SUITE's main component.

Reads /etc/apt/sources.list and /etc/apt/sources.list.d/ (one-line ``*.list`` and deb822
``*.sources`` files), in apt's order; exits 1 when none does. Used by the platform's
debootstrap, so the base image comes from the mirror the machine is set up for.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

APT = Path("/etc/apt")


def _one_line(text: str) -> Iterator[tuple[str, list[str], list[str]]]:
    for raw in text.splitlines():
        words = raw.split("#", 1)[0].split()
        if len(words) >= 3 and words[0] == "deb":
            if words[1].startswith("["):  # options: deb [arch=amd64 signed-by=...] URI ...
                while words and not words[0].endswith("]"):
                    words.pop(0)
                words = ["deb", *words[1:]]
            if len(words) >= 3:
                yield words[1], [words[2]], words[3:]


def _deb822(text: str) -> Iterator[tuple[str, list[str], list[str]]]:
    for stanza in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line.startswith("#") or ":" not in line:
                continue
            key, _, value = line.partition(":")
            fields[key.strip().lower()] = value.strip()
        if "deb" not in fields.get("types", "").split():
            continue
        if fields.get("enabled", "yes").lower() == "no":
            continue
        for uri in fields.get("uris", "").split():
            yield uri, fields.get("suites", "").split(), fields.get("components", "").split()


def sources() -> Iterator[tuple[str, list[str], list[str]]]:
    files = [APT / "sources.list", *sorted((APT / "sources.list.d").glob("*"))]
    for path in files:
        if not path.is_file():
            continue
        text = path.read_text(errors="replace")
        if path.name.endswith(".list"):
            yield from _one_line(text)
        elif path.name.endswith(".sources"):
            yield from _deb822(text)


def main() -> int:
    suite = sys.argv[1]
    for uri, suites, components in sources():
        if suite in suites and "main" in components:
            print(uri.rstrip("/"))
            return 0
    return 1


if __name__ == "__main__":
    sys.exit(main())
