"""HTTP match rules and the bits of HTTP/1.1 carrier needs to route each request.

Pure logic, no I/O: parse a request or response head, decide how its body is framed,
and decide whether a request matches a bridge's rules (all of them: AND).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

KINDS = ("header", "path")
MATCHES = ("exact", "prefix", "regex")

Headers = list[tuple[bytes, bytes]]  # (lower-cased name, value), in order


class HttpParseError(ValueError):
    """A head that is not HTTP/1.x."""


@dataclass(frozen=True)
class Rule:
    kind: str  # header or path
    match: str  # exact, prefix or regex
    value: str
    name: str = ""  # the header's name (header rules)
    _regex: re.Pattern[str] | None = field(default=None, compare=False, repr=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Rule:
        kind, match = data.get("kind"), data.get("match", "exact")
        value, name = data.get("value"), str(data.get("name") or "")
        if kind not in KINDS:
            raise ValueError(f"rule kind {kind!r} is not header or path")
        if match not in MATCHES:
            raise ValueError(f"rule match {match!r} is not exact, prefix or regex")
        if not isinstance(value, str):
            raise ValueError("a rule needs a string value")
        if kind == "header" and not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", name):
            raise ValueError(f"header rule needs a valid header name, not {name!r}")
        regex = None
        if match == "regex":
            try:
                regex = re.compile(value)
            except re.error as exc:
                raise ValueError(f"invalid regex {value!r}: {exc}") from None
        return cls(kind, match, value, name.lower() if kind == "header" else "", regex)

    def to_dict(self) -> dict[str, str]:
        data = {"kind": self.kind, "match": self.match, "value": self.value}
        if self.kind == "header":
            data["name"] = self.name
        return data

    def test(self, text: str) -> bool:
        if self.match == "exact":
            return text == self.value
        if self.match == "prefix":
            return text.startswith(self.value)
        assert self._regex is not None
        return self._regex.search(text) is not None

    def matches(self, path: str, headers: Headers) -> bool:
        if self.kind == "path":
            return self.test(path)
        key = self.name.encode()
        return any(n == key and self.test(v.decode("latin-1")) for n, v in headers)


def rules_match(rules: Iterable[Rule], target: str, headers: Headers) -> bool:
    """All RULES hold for the request (path = TARGET without its query string)."""
    path = target.split("?", 1)[0]
    return all(rule.matches(path, headers) for rule in rules)


def is_kube_probe(headers: Headers) -> bool:
    return any(n == b"user-agent" and v.startswith(b"kube-probe/") for n, v in headers)


@dataclass
class Head:
    first: tuple[
        str, str, str
    ]  # request: method, target, version; response: version, status, reason
    headers: Headers
    raw: bytes

    def get(self, name: bytes) -> bytes | None:
        for n, v in self.headers:
            if n == name:
                return v
        return None

    def tokens(self, name: bytes) -> set[bytes]:
        return {t.strip().lower() for n, v in self.headers if n == name for t in v.split(b",")}


def parse_head(raw: bytes) -> Head:
    """A request or response head (up to and including the blank line)."""
    lines = raw.split(b"\r\n")
    parts = lines[0].decode("latin-1").split(" ", 2)
    if len(parts) < 2:
        raise HttpParseError(f"not an HTTP start line: {lines[0][:80]!r}")
    first = (parts[0], parts[1], parts[2] if len(parts) > 2 else "")
    headers: Headers = []
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(b":")
        if not sep or not name or name != name.strip():
            raise HttpParseError(f"bad header line {line[:80]!r}")
        headers.append((name.lower(), value.strip()))
    return Head(first, headers, raw)


def request_version(head: Head) -> str:
    return head.first[2]


def body_length(head: Head) -> int | None:
    """Content-Length, or None when chunked (-1 means no length given)."""
    if b"chunked" in head.tokens(b"transfer-encoding"):
        return None
    value = head.get(b"content-length")
    if value is None:
        return -1
    try:
        length = int(value)
    except ValueError:
        raise HttpParseError(f"bad Content-Length {value!r}") from None
    if length < 0:
        raise HttpParseError("negative Content-Length")
    return length


def request_framing(head: Head) -> int | None:
    """Bytes of request body (0 for none), or None for chunked."""
    length = body_length(head)
    return 0 if length == -1 else length


def response_framing(request_method: str, status: int, head: Head) -> int | None:
    """Bytes of response body; None = chunked; -1 = until the server closes."""
    if request_method == "HEAD" or 100 <= status < 200 or status in (204, 304):
        return 0
    return body_length(head)


def keep_alive(version: str, head: Head) -> bool:
    tokens = head.tokens(b"connection")
    if b"close" in tokens:
        return False
    return version == "HTTP/1.1" or b"keep-alive" in tokens


def with_forwarded_for(raw: bytes, client: str) -> bytes:
    """The request head RAW with CLIENT appended to ``X-Forwarded-For`` (added if missing)."""
    lines = raw[:-4].split(b"\r\n")
    for i, line in enumerate(lines[1:], 1):
        name, sep, value = line.partition(b":")
        if sep and name.strip().lower() == b"x-forwarded-for":
            lines[i] = name + b": " + value.strip() + b", " + client.encode()
            break
    else:
        lines.append(b"X-Forwarded-For: " + client.encode())
    return b"\r\n".join(lines) + b"\r\n\r\n"


def looks_like_request(data: bytes) -> bool:
    method = data.split(b" ", 1)[0]
    return method in {
        b"GET", b"POST", b"PUT", b"DELETE", b"HEAD", b"OPTIONS", b"PATCH", b"CONNECT", b"TRACE",
    }  # fmt: skip


def compile_rules(data: Sequence[dict[str, Any]]) -> tuple[Rule, ...]:
    return tuple(Rule.from_dict(d) for d in data)
