"""X25519 against the RFC 7748 test vectors, and the key encodings."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from gefyra_async.adapters.wgkeys import (
    KeyPair,
    decode_key,
    encode_key,
    key_from_hex,
    key_to_hex,
    x25519,
)

# RFC 7748 section 5.2 and 6.1.
VECTORS = [
    (
        "a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4",
        "e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c",
        "c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552",
    ),
    (
        "4b66e9d4d1b4673c5ad22691957d6af5c11b6421e0ea01d42ca4169e7918ba0d",
        "e5210f12786811d3f4b7959d0538ae2c31dbe7106fc03c3efc4cd549c715a493",
        "95cbde9476e8907d7aade45cb4b873f88b595a68799fa152e6f8f7647aac7957",
    ),
]
ALICE_PRIVATE = "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"
ALICE_PUBLIC = "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
BOB_PRIVATE = "5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb"
BOB_PUBLIC = "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f"
SHARED = "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742"


@pytest.mark.parametrize(("scalar", "u", "out"), VECTORS)
def test_rfc7748_function_vectors(scalar: str, u: str, out: str) -> None:
    assert x25519(bytes.fromhex(scalar), bytes.fromhex(u)).hex() == out


def test_rfc7748_key_agreement() -> None:
    alice = KeyPair.from_private(encode_key(bytes.fromhex(ALICE_PRIVATE)))
    bob = KeyPair.from_private(encode_key(bytes.fromhex(BOB_PRIVATE)))
    assert key_to_hex(alice.public) == ALICE_PUBLIC
    assert key_to_hex(bob.public) == BOB_PUBLIC
    assert x25519(bytes.fromhex(ALICE_PRIVATE), bytes.fromhex(BOB_PUBLIC)).hex() == SHARED
    assert x25519(bytes.fromhex(BOB_PRIVATE), bytes.fromhex(ALICE_PUBLIC)).hex() == SHARED


@pytest.mark.skipif(shutil.which("wg") is None, reason="wireguard-tools is not installed")
def test_public_key_matches_wireguard_tools() -> None:
    pair = KeyPair.generate()
    wg = subprocess.run(
        ["wg", "pubkey"], input=pair.private, capture_output=True, text=True, check=True
    )
    assert wg.stdout.strip() == pair.public


def test_generated_keys_differ_and_repr_hides_the_private_key() -> None:
    a, b = KeyPair.generate(), KeyPair.generate()
    assert a.private != b.private
    assert a.public != b.public
    assert a.private not in repr(a)
    assert a.public in repr(a)


def test_hex_and_base64_round_trip() -> None:
    pair = KeyPair.generate()
    assert key_from_hex(key_to_hex(pair.public)) == pair.public


@pytest.mark.parametrize(
    ("text", "message"),
    [("not base64!", "not a base64 WireGuard key"), ("AAAA", "32 bytes")],
)
def test_bad_keys_are_refused_with_a_reason(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        decode_key(text)
