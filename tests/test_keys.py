"""Specification of key handling (crypto/keys.py): wrapping, sealing and fingerprints."""

from __future__ import annotations

import re
import struct

import nacl.pwhash.argon2id as argon2id
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crypto.errors import DecryptionError
from crypto.kdf import SALT_BYTES, KdfCost
from crypto.keys import (
    PrivateKey,
    PublicKey,
    fingerprint,
    generate_keypair,
    open_sealed_secret_key,
    seal_secret_key,
    unwrap_secret_key,
    wrap_secret_key,
)

# The cheapest cost Argon2id accepts: these tests are about the format, not the cost.
CHEAP = KdfCost(iterations=1, memory_bytes=8 * 1024)

# Layout of a wrap: version (1), iterations (4), memory in bytes (8), salt; then nonce + box.
_HEADER = struct.Struct(f">BIQ{SALT_BYTES}s")
_ITERATIONS_AT = slice(1, 5)
_MEMORY_AT = slice(5, 13)

_OFFICER = generate_keypair()
_OFFICE = generate_keypair()
_SEALED = seal_secret_key(_OFFICE, _OFFICER.public_key)


def same_key(a: PrivateKey, b: PrivateKey) -> bool:
    return bytes(a) == bytes(b)


def with_cost(wrapped: bytes, iterations: int, memory: int) -> bytes:
    """The same wrap with its recorded cost rewritten (what a tamperer could do)."""
    version, _, _, salt = _HEADER.unpack(wrapped[: _HEADER.size])
    return _HEADER.pack(version, iterations, memory, salt) + wrapped[_HEADER.size :]


# --- wrapping under a passphrase ------------------------------------------------------------


@pytest.mark.parametrize(
    "passphrase", ["correct horse battery staple", "", "pässwörd ñ 密码 🔑", "x" * 1000]
)
def test_wrap_then_unwrap_gives_back_the_same_secret_key(passphrase: str) -> None:
    key = generate_keypair()
    wrapped = wrap_secret_key(key, passphrase, CHEAP)
    assert same_key(unwrap_secret_key(wrapped, passphrase), key)


def test_the_wrap_does_not_contain_the_secret_key() -> None:
    key = generate_keypair()
    wrapped = wrap_secret_key(key, "passphrase", CHEAP)
    assert bytes(key) not in wrapped
    assert bytes(key)[:8] not in wrapped


def test_the_cost_travels_with_the_wrap() -> None:
    key = generate_keypair()
    dearer = KdfCost(iterations=2, memory_bytes=16 * 1024)
    wrapped = wrap_secret_key(key, "passphrase", dearer)
    # unwrap is not told the cost: it reads it from the wrap.
    assert same_key(unwrap_secret_key(wrapped, "passphrase"), key)


def test_each_wrap_uses_a_fresh_salt_and_nonce() -> None:
    key = generate_keypair()
    first = wrap_secret_key(key, "passphrase", CHEAP)
    second = wrap_secret_key(key, "passphrase", CHEAP)
    assert first != second
    assert (
        first[_HEADER.size - SALT_BYTES : _HEADER.size]
        != second[_HEADER.size - SALT_BYTES : _HEADER.size]
    )


@pytest.mark.parametrize(
    "wrong", ["correct horse battery stapl", "Correct horse battery staple", "", " " * 3]
)
def test_a_wrong_passphrase_is_refused(wrong: str) -> None:
    wrapped = wrap_secret_key(generate_keypair(), "correct horse battery staple", CHEAP)
    with pytest.raises(DecryptionError):
        unwrap_secret_key(wrapped, wrong)


def test_rewrapping_under_a_new_passphrase_retires_the_old_one() -> None:
    key = generate_keypair()
    old_wrap = wrap_secret_key(key, "old passphrase", CHEAP)
    new_wrap = wrap_secret_key(unwrap_secret_key(old_wrap, "old passphrase"), "new one", CHEAP)
    assert same_key(unwrap_secret_key(new_wrap, "new one"), key)
    with pytest.raises(DecryptionError):
        unwrap_secret_key(new_wrap, "old passphrase")
    with pytest.raises(DecryptionError):
        unwrap_secret_key(old_wrap, "new one")


def test_flipping_any_byte_of_the_salt_nonce_or_box_is_refused() -> None:
    wrapped = wrap_secret_key(generate_keypair(), "passphrase", CHEAP)
    # The cost fields are covered below: flipping their high bits asks for hours of work.
    positions = [0, *range(_MEMORY_AT.stop, len(wrapped))]
    accepted = []
    for position in positions:
        for mask in (0x01, 0x80):
            tampered = bytearray(wrapped)
            tampered[position] ^= mask
            try:
                unwrap_secret_key(bytes(tampered), "passphrase")
            except DecryptionError:
                continue
            accepted.append((position, mask))
    assert accepted == []


@pytest.mark.parametrize(
    ("iterations", "memory"),
    [
        (CHEAP.iterations + 1, CHEAP.memory_bytes),  # a different but valid cost
        (CHEAP.iterations, CHEAP.memory_bytes + 1),  # same KiB count: only the header differs
        (CHEAP.iterations, CHEAP.memory_bytes * 2),
        (0, CHEAP.memory_bytes),  # below the Argon2id minimum
        (CHEAP.iterations, 1024),  # below the Argon2id minimum
        (CHEAP.iterations, argon2id.MEMLIMIT_MAX + 1024),  # above what libsodium accepts
        (CHEAP.iterations, 2**64 - 1),
    ],
    ids=["iterations", "memory-low-bits", "memory", "no-iterations", "tiny", "huge", "max"],
)
def test_a_tampered_cost_is_refused_with_the_one_error_type(iterations: int, memory: int) -> None:
    wrapped = wrap_secret_key(generate_keypair(), "passphrase", CHEAP)
    with pytest.raises(DecryptionError):
        unwrap_secret_key(with_cost(wrapped, iterations, memory), "passphrase")


def test_a_truncated_or_extended_wrap_is_refused() -> None:
    wrapped = wrap_secret_key(generate_keypair(), "passphrase", CHEAP)
    for length in range(len(wrapped)):
        with pytest.raises(DecryptionError):
            unwrap_secret_key(wrapped[:length], "passphrase")
    with pytest.raises(DecryptionError):
        unwrap_secret_key(wrapped + b"\x00", "passphrase")


def test_an_unknown_wrap_version_is_refused() -> None:
    wrapped = wrap_secret_key(generate_keypair(), "passphrase", CHEAP)
    for version in (0, 2, 255):
        with pytest.raises(DecryptionError):
            unwrap_secret_key(bytes([version]) + wrapped[1:], "passphrase")


@settings(max_examples=150, deadline=None)
@given(garbage=st.binary(max_size=200))
def test_garbage_never_unwraps_and_raises_only_decryption_error(garbage: bytes) -> None:
    # Keep the recorded cost cheap so that garbage cannot ask for hours of Argon2id.
    if len(garbage) > _MEMORY_AT.stop:
        garbage = with_cost(garbage.ljust(_HEADER.size, b"\0"), 1, CHEAP.memory_bytes)
    with pytest.raises(DecryptionError):
        unwrap_secret_key(garbage, "passphrase")


# --- sealing an office key to an officer ----------------------------------------------------


def test_seal_then_open_gives_back_the_office_key() -> None:
    officer, office = generate_keypair(), generate_keypair()
    sealed = seal_secret_key(office, officer.public_key)
    assert bytes(office) not in sealed
    opened = open_sealed_secret_key(sealed, officer)
    assert same_key(opened, office)
    assert bytes(opened.public_key) == bytes(office.public_key)


def test_each_officer_opens_only_their_own_sealed_copy() -> None:
    office = generate_keypair()
    first, second = generate_keypair(), generate_keypair()
    for_first = seal_secret_key(office, first.public_key)
    for_second = seal_secret_key(office, second.public_key)
    assert same_key(open_sealed_secret_key(for_second, second), office)
    with pytest.raises(DecryptionError):
        open_sealed_secret_key(for_first, second)
    with pytest.raises(DecryptionError):
        open_sealed_secret_key(for_second, first)


def test_a_sealed_key_opened_with_the_wrong_officer_key_is_refused() -> None:
    with pytest.raises(DecryptionError):
        open_sealed_secret_key(_SEALED, generate_keypair())
    with pytest.raises(DecryptionError):
        open_sealed_secret_key(_SEALED, _OFFICE)  # the sealed key itself is not the officer's


def test_flipping_any_byte_of_a_sealed_key_is_refused() -> None:
    accepted = []
    for position in range(len(_SEALED)):
        tampered = bytearray(_SEALED)
        tampered[position] ^= 0x01
        try:
            open_sealed_secret_key(bytes(tampered), _OFFICER)
        except DecryptionError:
            continue
        accepted.append(position)
    assert accepted == []


@settings(max_examples=150, deadline=None)
@given(garbage=st.binary(max_size=200))
def test_garbage_never_opens_as_a_sealed_key(garbage: bytes) -> None:
    with pytest.raises(DecryptionError):
        open_sealed_secret_key(garbage, _OFFICER)


# --- fingerprints ---------------------------------------------------------------------------

FINGERPRINT = re.compile(r"^[A-Z2-7]{4}( [A-Z2-7]{4}){7}$")


def test_a_fingerprint_is_eight_groups_of_four_characters() -> None:
    text = fingerprint(generate_keypair().public_key)
    assert FINGERPRINT.match(text), text
    assert [len(group) for group in text.split(" ")] == [4] * 8


def test_a_fingerprint_is_deterministic() -> None:
    key = generate_keypair()
    copy = PublicKey(bytes(key.public_key))
    assert fingerprint(key.public_key) == fingerprint(key.public_key) == fingerprint(copy)
    # The secret key round-tripped through bytes gives the same public key and fingerprint.
    assert fingerprint(PrivateKey(bytes(key)).public_key) == fingerprint(key.public_key)


def test_fingerprints_differ_between_keys() -> None:
    prints = {fingerprint(generate_keypair().public_key) for _ in range(200)}
    assert len(prints) == 200


def test_a_one_bit_change_of_the_key_changes_the_fingerprint() -> None:
    raw = bytearray(bytes(generate_keypair().public_key))
    before = fingerprint(PublicKey(bytes(raw)))
    raw[-1] ^= 0x01
    assert fingerprint(PublicKey(bytes(raw))) != before
