"""WireGuard keys: X25519 (RFC 7748) in pure Python, so a client makes its key pair
itself and only the public key ever leaves the machine.

WireGuard keys are 32 bytes; the API and custom resources carry them base64-encoded,
the UAPI control channel hex-encoded. This implementation is not constant-time; it
runs once per connection on the developer's own machine, where a timing observer
would already have the key file.
"""

from __future__ import annotations

import base64
import binascii
import secrets
from dataclasses import dataclass

_P = 2**255 - 19
_A24 = 121665
_BASE_POINT = (9).to_bytes(32, "little")


def _clamp(scalar: bytes) -> int:
    b = bytearray(scalar)
    b[0] &= 248
    b[31] &= 127
    b[31] |= 64
    return int.from_bytes(b, "little")


def x25519(scalar: bytes, u_point: bytes) -> bytes:
    """The X25519 function of RFC 7748 section 5 (Montgomery ladder)."""
    if len(scalar) != 32 or len(u_point) != 32:
        raise ValueError("X25519 takes 32-byte scalars and points")
    k = _clamp(scalar)
    u = bytearray(u_point)
    u[31] &= 127
    x1 = int.from_bytes(u, "little")
    x2, z2, x3, z3 = 1, 0, x1, 1
    swap = 0
    for t in reversed(range(255)):
        bit = (k >> t) & 1
        swap ^= bit
        if swap:
            x2, x3, z2, z3 = x3, x2, z3, z2
        swap = bit
        a, b = (x2 + z2) % _P, (x2 - z2) % _P
        aa, bb = a * a % _P, b * b % _P
        e = (aa - bb) % _P
        c, d = (x3 + z3) % _P, (x3 - z3) % _P
        da, cb = d * a % _P, c * b % _P
        x3 = (da + cb) ** 2 % _P
        z3 = x1 * (da - cb) ** 2 % _P
        x2 = aa * bb % _P
        z2 = e * (aa + _A24 * e) % _P
    if swap:
        x2, z2 = x3, z3
    return (x2 * pow(z2, _P - 2, _P) % _P).to_bytes(32, "little")


def decode_key(text: str) -> bytes:
    """A base64 WireGuard key as its 32 bytes; ValueError names what is wrong."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{text!r} is not a base64 WireGuard key") from None
    if len(raw) != 32:
        raise ValueError(f"a WireGuard key is 32 bytes, {text!r} has {len(raw)}")
    return raw


def encode_key(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def key_to_hex(text: str) -> str:
    """base64 (API) → hex (UAPI)."""
    return decode_key(text).hex()


def key_from_hex(hex_text: str) -> str:
    """hex (UAPI) → base64 (API)."""
    return encode_key(bytes.fromhex(hex_text))


@dataclass(frozen=True, repr=False)
class KeyPair:
    """A WireGuard key pair, base64-encoded. ``repr`` never shows the private key."""

    private: str
    public: str

    @classmethod
    def generate(cls) -> KeyPair:
        private = bytearray(secrets.token_bytes(32))
        private[0] &= 248
        private[31] = (private[31] & 127) | 64
        return cls.from_private(encode_key(bytes(private)))

    @classmethod
    def from_private(cls, private: str) -> KeyPair:
        return cls(private=private, public=encode_key(x25519(decode_key(private), _BASE_POINT)))

    def __repr__(self) -> str:
        return f"KeyPair(public={self.public!r})"
