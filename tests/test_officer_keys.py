"""Specification of officer keys derived on the officer's machine (crypto/keys.py).

Argon2id(passphrase, the officer's salt) gives an authentication key, which the
case server checks against a stored verifier, and a wrapping key, which never
leaves the machine and opens the officer's wrapped secret key.
"""

from __future__ import annotations

import hashlib
import json
import struct
import time
import unicodedata
from pathlib import Path
from typing import Any

import nacl.pwhash.argon2id as argon2id
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crypto.errors import DecryptionError
from crypto.kdf import MAX_ITERATIONS, MAX_MEMORY_BYTES, PRODUCTION_COST, SALT_BYTES, KdfCost
from crypto.keys import (
    WRAP_HEADER_BYTES,
    auth_key_verifier,
    check_auth_key,
    derive_officer_keys,
    fake_salt,
    generate_keypair,
    unwrap_secret_key,
    unwrap_with_wrapping_key,
    wrap_header,
    wrap_parameters,
    wrap_secret_key,
    wrap_with_wrapping_key,
)
from tests.conftest import CHEAP_COST

# Layout of a header: version (1), iterations (4), memory in bytes (8), salt (16).
_HEADER = struct.Struct(f">BIQ{SALT_BYTES}s")
_VECTORS = json.loads(
    (Path(__file__).parent / "vectors" / "officer-keys.json").read_text(encoding="utf-8")
)

SALT = bytes(range(SALT_BYTES))
PASSPHRASE = "correct horse battery staple"
_KEYS = derive_officer_keys(PASSPHRASE, SALT, CHEAP_COST)
_SECRET = generate_keypair()
_WRAPPED = wrap_with_wrapping_key(_SECRET, _KEYS.wrapping_key, SALT, CHEAP_COST)


def with_header(wrapped: bytes, version: int, iterations: int, memory: int, salt: bytes) -> bytes:
    """The same wrap with its header rewritten (what a server could do)."""
    return _HEADER.pack(version, iterations, memory, salt) + wrapped[_HEADER.size :]


# --- derivation ------------------------------------------------------------------------------


def test_the_same_passphrase_salt_and_cost_always_give_the_same_keys() -> None:
    again = derive_officer_keys(PASSPHRASE, SALT, CHEAP_COST)
    assert again == _KEYS
    assert len(again.auth_key) == len(again.wrapping_key) == 32


def test_the_auth_key_and_the_wrapping_key_differ() -> None:
    assert _KEYS.auth_key != _KEYS.wrapping_key


def test_each_key_is_blake2b_of_the_argon2id_master_under_its_own_personalisation() -> None:
    # Recomputed here from libsodium and hashlib alone: the keys are two PRF outputs of one
    # master under different personalisations, so the auth key tells nothing of the other.
    master = argon2id.kdf(
        32,
        PASSPHRASE.encode(),
        SALT,
        opslimit=CHEAP_COST.iterations,
        memlimit=CHEAP_COST.memory_bytes,
    )
    auth = hashlib.blake2b(master, digest_size=32, person=b"dropbox-ofc-auth").digest()
    wrapping = hashlib.blake2b(master, digest_size=32, person=b"dropbox-ofc-wrap").digest()
    assert (_KEYS.auth_key, _KEYS.wrapping_key) == (auth, wrapping)
    assert master not in (auth, wrapping)


@pytest.mark.parametrize(
    ("passphrase", "salt", "cost"),
    [
        ("correct horse battery stapl", SALT, CHEAP_COST),
        ("Correct horse battery staple", SALT, CHEAP_COST),
        (PASSPHRASE, bytes(reversed(SALT)), CHEAP_COST),
        (PASSPHRASE, SALT, KdfCost(CHEAP_COST.iterations + 1, CHEAP_COST.memory_bytes)),
        (PASSPHRASE, SALT, KdfCost(CHEAP_COST.iterations, CHEAP_COST.memory_bytes * 2)),
    ],
    ids=["passphrase", "case", "salt", "iterations", "memory"],
)
def test_a_different_passphrase_salt_or_cost_gives_different_keys(
    passphrase: str, salt: bytes, cost: KdfCost
) -> None:
    other = derive_officer_keys(passphrase, salt, cost)
    assert other.auth_key != _KEYS.auth_key
    assert other.wrapping_key != _KEYS.wrapping_key


def test_a_passphrase_typed_with_decomposed_accents_gives_the_same_keys() -> None:
    composed = "pässwörd ñ"
    decomposed = unicodedata.normalize("NFD", composed)
    assert composed != decomposed
    assert derive_officer_keys(decomposed, SALT, CHEAP_COST) == derive_officer_keys(
        composed, SALT, CHEAP_COST
    )


def test_a_salt_of_the_wrong_length_is_refused() -> None:
    for salt in (b"", SALT[:-1], SALT + b"\0"):
        with pytest.raises(ValueError, match="salt"):
            derive_officer_keys(PASSPHRASE, salt, CHEAP_COST)


def test_the_keys_do_not_show_in_the_repr() -> None:
    text = repr(_KEYS)
    assert _KEYS.auth_key.hex() not in text
    assert repr(_KEYS.auth_key) not in text
    assert repr(_KEYS.wrapping_key) not in text


# --- wrapping under the wrapping key ---------------------------------------------------------


def test_wrap_then_unwrap_gives_back_the_same_secret_key() -> None:
    unwrapped = unwrap_with_wrapping_key(_WRAPPED, _KEYS.wrapping_key)
    assert bytes(unwrapped) == bytes(_SECRET)
    assert bytes(_SECRET) not in _WRAPPED


def test_the_wrap_starts_with_its_header_and_gives_back_its_cost_and_salt() -> None:
    assert _WRAPPED[:WRAP_HEADER_BYTES] == wrap_header(CHEAP_COST, SALT)
    assert wrap_parameters(_WRAPPED, minimum=CHEAP_COST) == (CHEAP_COST, SALT)
    # The header alone is enough: that is what the server hands out before sign-in.
    assert wrap_parameters(_WRAPPED[:WRAP_HEADER_BYTES], minimum=CHEAP_COST) == (CHEAP_COST, SALT)


def test_the_whole_sign_in_path_recovers_the_key_from_the_header_and_the_passphrase() -> None:
    cost, salt = wrap_parameters(_WRAPPED[:WRAP_HEADER_BYTES], minimum=CHEAP_COST)
    keys = derive_officer_keys(PASSPHRASE, salt, cost)
    assert check_auth_key(auth_key_verifier(_KEYS.auth_key), keys.auth_key)
    assert bytes(unwrap_with_wrapping_key(_WRAPPED, keys.wrapping_key)) == bytes(_SECRET)


def test_each_wrap_uses_a_fresh_nonce() -> None:
    again = wrap_with_wrapping_key(_SECRET, _KEYS.wrapping_key, SALT, CHEAP_COST)
    assert again != _WRAPPED
    assert again[:WRAP_HEADER_BYTES] == _WRAPPED[:WRAP_HEADER_BYTES]


def test_a_wrong_wrapping_key_is_refused() -> None:
    other = derive_officer_keys("another passphrase", SALT, CHEAP_COST)
    for key in (other.wrapping_key, _KEYS.auth_key, bytes(32), b"", _KEYS.wrapping_key[:-1]):
        with pytest.raises(DecryptionError):
            unwrap_with_wrapping_key(_WRAPPED, key)


def test_flipping_any_bit_of_a_wrap_is_refused() -> None:
    accepted = []
    for position in range(len(_WRAPPED)):
        for bit in range(8):
            tampered = bytearray(_WRAPPED)
            tampered[position] ^= 1 << bit
            try:
                unwrap_with_wrapping_key(bytes(tampered), _KEYS.wrapping_key)
            except DecryptionError:
                continue
            accepted.append((position, bit))
    assert accepted == []


@pytest.mark.parametrize(
    ("iterations", "memory", "salt"),
    [
        (CHEAP_COST.iterations + 1, CHEAP_COST.memory_bytes, SALT),
        (CHEAP_COST.iterations, CHEAP_COST.memory_bytes + 1, SALT),  # same KiB count
        (CHEAP_COST.iterations, CHEAP_COST.memory_bytes * 2, SALT),
        (CHEAP_COST.iterations, CHEAP_COST.memory_bytes, bytes(SALT_BYTES)),
    ],
    ids=["iterations", "memory-low-bits", "memory", "salt"],
)
def test_a_header_with_a_changed_cost_or_salt_is_refused_at_unwrap(
    iterations: int, memory: int, salt: bytes
) -> None:
    tampered = with_header(_WRAPPED, 2, iterations, memory, salt)
    with pytest.raises(DecryptionError):
        unwrap_with_wrapping_key(tampered, _KEYS.wrapping_key)


def test_keys_derived_from_a_header_the_server_changed_do_not_unwrap_the_real_wrap() -> None:
    # The server hands out another salt or a cheaper cost before sign-in, but serves the
    # real wrap after: the wrapping key derived from the lie does not open it.
    for cost, salt in (
        (CHEAP_COST, bytes(SALT_BYTES)),
        (KdfCost(CHEAP_COST.iterations + 1, CHEAP_COST.memory_bytes), SALT),
    ):
        read_cost, read_salt = wrap_parameters(wrap_header(cost, salt), minimum=CHEAP_COST)
        keys = derive_officer_keys(PASSPHRASE, read_salt, read_cost)
        with pytest.raises(DecryptionError):
            unwrap_with_wrapping_key(_WRAPPED, keys.wrapping_key)


def test_a_truncated_or_extended_wrap_is_refused() -> None:
    for length in range(len(_WRAPPED)):
        with pytest.raises(DecryptionError):
            unwrap_with_wrapping_key(_WRAPPED[:length], _KEYS.wrapping_key)
    with pytest.raises(DecryptionError):
        unwrap_with_wrapping_key(_WRAPPED + b"\x00", _KEYS.wrapping_key)


def test_the_passphrase_wrap_and_the_wrapping_key_wrap_never_take_each_other() -> None:
    old_style = wrap_secret_key(_SECRET, PASSPHRASE, CHEAP_COST)
    assert old_style[0] == 1 and _WRAPPED[0] == 2
    with pytest.raises(DecryptionError):
        unwrap_with_wrapping_key(old_style, _KEYS.wrapping_key)
    with pytest.raises(DecryptionError):
        wrap_parameters(old_style, minimum=CHEAP_COST)
    with pytest.raises(DecryptionError):
        unwrap_secret_key(_WRAPPED, PASSPHRASE)
    # The passphrase wrap keeps working as before.
    assert bytes(unwrap_secret_key(old_style, PASSPHRASE)) == bytes(_SECRET)


def test_an_unknown_wrap_version_is_refused() -> None:
    for version in (0, 1, 3, 255):
        tampered = bytes([version]) + _WRAPPED[1:]
        with pytest.raises(DecryptionError):
            unwrap_with_wrapping_key(tampered, _KEYS.wrapping_key)
        with pytest.raises(DecryptionError):
            wrap_parameters(tampered, minimum=CHEAP_COST)


def test_wrapping_refuses_a_wrapping_key_or_salt_of_the_wrong_length() -> None:
    with pytest.raises(ValueError, match="wrapping key"):
        wrap_with_wrapping_key(_SECRET, _KEYS.wrapping_key[:-1], SALT, CHEAP_COST)
    with pytest.raises(ValueError, match="salt"):
        wrap_with_wrapping_key(_SECRET, _KEYS.wrapping_key, SALT[:-1], CHEAP_COST)


# --- the cost a server hands out ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("iterations", "memory"),
    [
        (MAX_ITERATIONS + 1, CHEAP_COST.memory_bytes),
        (2**32 - 1, CHEAP_COST.memory_bytes),
        (CHEAP_COST.iterations, MAX_MEMORY_BYTES + 1),
        (CHEAP_COST.iterations, 2**64 - 1),
        (0, CHEAP_COST.memory_bytes),
        (CHEAP_COST.iterations, argon2id.MEMLIMIT_MIN - 1),
    ],
    ids=["iterations", "max-iterations", "memory", "max-memory", "no-iterations", "tiny"],
)
def test_a_cost_outside_the_bounds_is_refused_before_any_derivation(
    iterations: int, memory: int
) -> None:
    header = _HEADER.pack(2, iterations, memory, SALT)
    started = time.monotonic()
    with pytest.raises(DecryptionError):
        wrap_parameters(header, minimum=CHEAP_COST)
    with pytest.raises(DecryptionError):
        unwrap_with_wrapping_key(header + _WRAPPED[WRAP_HEADER_BYTES:], _KEYS.wrapping_key)
    # Refused on reading the header: not one Argon2id pass at 4 GiB fits in this time.
    assert time.monotonic() - started < 0.5


def test_a_cost_below_the_clients_minimum_is_refused() -> None:
    # By default the floor is the production cost: a server cannot make a client derive
    # an auth key cheap enough to make guessing the passphrase from it cheap.
    with pytest.raises(DecryptionError):
        wrap_parameters(_WRAPPED)
    for cost in (
        KdfCost(PRODUCTION_COST.iterations - 1, PRODUCTION_COST.memory_bytes),
        KdfCost(PRODUCTION_COST.iterations, PRODUCTION_COST.memory_bytes - 1024),
        KdfCost(MAX_ITERATIONS, CHEAP_COST.memory_bytes),
    ):
        with pytest.raises(DecryptionError):
            wrap_parameters(wrap_header(cost, SALT))
    for cost in (PRODUCTION_COST, KdfCost(MAX_ITERATIONS, MAX_MEMORY_BYTES)):
        assert wrap_parameters(wrap_header(cost, SALT)) == (cost, SALT)


# --- the verifier the case server stores -----------------------------------------------------


def test_the_verifier_accepts_the_right_auth_key_only() -> None:
    verifier = auth_key_verifier(_KEYS.auth_key)
    assert check_auth_key(verifier, _KEYS.auth_key)
    other = derive_officer_keys("correct horse battery stapl", SALT, CHEAP_COST)
    flipped = bytes([_KEYS.auth_key[0] ^ 1]) + _KEYS.auth_key[1:]
    for wrong in (other.auth_key, _KEYS.wrapping_key, flipped, bytes(32), b"", _KEYS.auth_key[:-1]):
        assert not check_auth_key(verifier, wrong)


def test_the_verifier_is_not_the_auth_key_and_is_deterministic() -> None:
    verifier = auth_key_verifier(_KEYS.auth_key)
    assert verifier == auth_key_verifier(_KEYS.auth_key)
    assert _KEYS.auth_key not in verifier
    assert verifier[0] == 1 and len(verifier) == 33


def test_a_damaged_verifier_accepts_nothing() -> None:
    verifier = auth_key_verifier(_KEYS.auth_key)
    for damaged in (b"", verifier[:-1], verifier + b"\0", bytes([2]) + verifier[1:]):
        assert not check_auth_key(damaged, _KEYS.auth_key)


def test_a_verifier_of_an_auth_key_of_the_wrong_length_is_refused() -> None:
    with pytest.raises(ValueError, match="auth key"):
        auth_key_verifier(_KEYS.auth_key[:-1])


# --- fake salts for usernames that do not exist ------------------------------------------------

_SERVER_SECRET = bytes(range(32))


def test_a_fake_salt_is_stable_per_username() -> None:
    first = fake_salt(_SERVER_SECRET, "alice")
    assert first == fake_salt(_SERVER_SECRET, "alice")
    assert len(first) == SALT_BYTES


def test_fake_salts_differ_between_usernames_and_server_secrets() -> None:
    names = ["alice", "alicf", "bob", "oio-officer", "eco-officer", "a" * 64]
    salts = {fake_salt(_SERVER_SECRET, name) for name in names}
    assert len(salts) == len(names)
    assert fake_salt(bytes(reversed(_SERVER_SECRET)), "alice") != fake_salt(_SERVER_SECRET, "alice")


def test_a_fake_header_reads_like_a_real_one() -> None:
    fake = wrap_header(PRODUCTION_COST, fake_salt(_SERVER_SECRET, "nobody"))
    real = wrap_with_wrapping_key(_SECRET, bytes(32), SALT, PRODUCTION_COST)[:WRAP_HEADER_BYTES]
    assert len(fake) == len(real) == WRAP_HEADER_BYTES
    assert fake[: WRAP_HEADER_BYTES - SALT_BYTES] == real[: WRAP_HEADER_BYTES - SALT_BYTES]
    assert wrap_parameters(fake) == (PRODUCTION_COST, fake_salt(_SERVER_SECRET, "nobody"))


def test_a_server_secret_that_is_too_short_or_too_long_is_refused() -> None:
    for secret in (b"", bytes(15), bytes(65)):
        with pytest.raises(ValueError, match="server secret"):
            fake_salt(secret, "alice")


# --- fixed vectors ---------------------------------------------------------------------------


@pytest.mark.parametrize("vector", _VECTORS["officers"], ids=lambda v: v["salt"][:8])
def test_the_derivation_and_format_match_the_fixed_vectors(vector: dict[str, Any]) -> None:
    cost = KdfCost(vector["iterations"], vector["memory_bytes"])
    salt = bytes.fromhex(vector["salt"])
    keys = derive_officer_keys(vector["passphrase"], salt, cost)
    assert keys.auth_key.hex() == vector["auth_key"]
    assert keys.wrapping_key.hex() == vector["wrapping_key"]
    assert auth_key_verifier(keys.auth_key).hex() == vector["verifier"]
    wrapped = bytes.fromhex(vector["wrapped"])
    assert wrap_parameters(wrapped, minimum=cost) == (cost, salt)
    assert bytes(unwrap_with_wrapping_key(wrapped, keys.wrapping_key)).hex() == vector["secret_key"]


@pytest.mark.parametrize("vector", _VECTORS["fake_salts"], ids=lambda v: v["username"])
def test_fake_salts_match_the_fixed_vectors(vector: dict[str, str]) -> None:
    salt = fake_salt(bytes.fromhex(vector["server_secret"]), vector["username"])
    assert salt.hex() == vector["fake_salt"]


# --- fuzzing ---------------------------------------------------------------------------------

_near_headers = st.builds(
    lambda version, iterations, memory, salt, tail: (
        _HEADER.pack(version, iterations, memory, salt) + tail
    ),
    st.sampled_from([1, 2, 2, 2, 3]),
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**64 - 1),
    st.binary(min_size=SALT_BYTES, max_size=SALT_BYTES),
    st.binary(max_size=120),
)


@settings(max_examples=300, deadline=None)
@given(blob=st.one_of(st.binary(max_size=200), _near_headers))
def test_unwrapping_anything_raises_only_decryption_error(blob: bytes) -> None:
    # No derivation runs at unwrap, so any recorded cost is safe to try here.
    with pytest.raises(DecryptionError):
        unwrap_with_wrapping_key(blob, _KEYS.wrapping_key)


@settings(max_examples=300, deadline=None)
@given(blob=st.one_of(st.binary(max_size=200), _near_headers))
def test_reading_the_parameters_of_anything_gives_a_bounded_cost_or_decryption_error(
    blob: bytes,
) -> None:
    try:
        cost, salt = wrap_parameters(blob, minimum=CHEAP_COST)
    except DecryptionError:
        return
    assert blob[0] == 2 and len(salt) == SALT_BYTES
    assert CHEAP_COST.iterations <= cost.iterations <= MAX_ITERATIONS
    assert CHEAP_COST.memory_bytes <= cost.memory_bytes <= MAX_MEMORY_BYTES


@settings(max_examples=150, deadline=None)
@given(verifier=st.binary(max_size=80), auth_key=st.binary(max_size=80))
def test_checking_any_verifier_against_any_auth_key_only_answers_yes_or_no(
    verifier: bytes, auth_key: bytes
) -> None:
    assert check_auth_key(verifier, auth_key) is False
