"""Office and officer keys as X-Wing (crypto/keys.py): key chains, wraps, grants, fingerprints.

Every secret key that is wrapped, sealed or written down is a key chain: the
untagged 32 bytes of an X25519 key (version 1, every key made before
X-Wing, so those wraps still open) or version 2, tagged by key type, which
can carry an office's old X25519 key behind its X-Wing key. A grant to an
X-Wing officer key is sealed under an X-Wing shared secret (HKDF-SHA256,
ChaCha20-Poly1305, as a version 2 key-block entry); fingerprints of X-Wing
keys cover all 1,216 bytes and start with XWING.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.bindings import crypto_aead_chacha20poly1305_ietf_decrypt
from nacl.public import PrivateKey, SealedBox
from nacl.secret import Aead

from crypto import envelope, xwing
from crypto.errors import DecryptionError
from crypto.kdf import KdfCost, derive_key
from crypto.keys import (
    KeyChain,
    XWingSecretKey,
    decode_key_chain,
    derive_officer_keys,
    encode_key_chain,
    fingerprint,
    generate_hybrid_key,
    generate_keypair,
    is_sealed_secret_key,
    open_sealed_secret_key,
    public_key_from_bytes,
    seal_secret_key,
    unwrap_secret_key,
    unwrap_with_wrapping_key,
    wrap_header,
    wrap_secret_key,
    wrap_with_wrapping_key,
)
from dropbox.config import fingerprint_digest

CHEAP = KdfCost(iterations=1, memory_bytes=8 * 1024)
OFFICER = generate_hybrid_key()
# An office in transition: its new X-Wing key, then the X25519 key it had.
OLD_OFFICE = generate_keypair()
OFFICE = KeyChain((XWingSecretKey.generate(), OLD_OFFICE))


def same(a: KeyChain, b: KeyChain) -> bool:
    return [type(k) for k in a.keys] == [type(k) for k in b.keys] and bytes(a) == bytes(b)


# --- key chains ------------------------------------------------------------------------------


def test_a_chain_of_one_x25519_key_is_its_32_bytes_as_before() -> None:
    key = generate_keypair()
    assert encode_key_chain(key) == bytes(key)
    assert same(decode_key_chain(bytes(key)), KeyChain((key,)))


def test_a_version_2_chain_names_each_key_type_and_round_trips() -> None:
    encoded = encode_key_chain(OFFICE)
    assert encoded[:2] == bytes([2, 2])
    assert encoded[2] == 2 and encoded[3:35] == bytes(OFFICE.current)  # X-Wing seed
    assert encoded[35] == 1 and encoded[36:68] == bytes(OLD_OFFICE)  # X25519 key
    assert same(decode_key_chain(encoded), OFFICE)
    assert len(encode_key_chain(OFFICER)) == 35


@pytest.mark.parametrize(
    "damaged",
    [
        pytest.param(lambda c: c[:-1], id="cut short"),
        pytest.param(lambda c: c + b"\0", id="one byte more"),
        pytest.param(lambda c: bytes([3]) + c[1:], id="unknown version"),
        pytest.param(lambda c: c[:1] + bytes([3]) + c[2:], id="count says three"),
        pytest.param(lambda c: c[:1] + bytes([0]) + c[2:], id="count says none"),
        pytest.param(lambda c: c[:2] + bytes([9]) + c[3:], id="unknown key type"),
        pytest.param(lambda c: b"", id="empty"),
    ],
)
def test_a_damaged_chain_is_refused(damaged: object) -> None:
    with pytest.raises(DecryptionError):
        decode_key_chain(damaged(encode_key_chain(OFFICE)))  # type: ignore[operator]


# --- wraps: under a passphrase (recovery files) and an officer's wrapping key -----------------


def test_an_x_wing_chain_wraps_and_unwraps_under_a_passphrase() -> None:
    wrapped = wrap_secret_key(OFFICE, "a passphrase", CHEAP)
    assert same(unwrap_secret_key(wrapped, "a passphrase"), OFFICE)
    with pytest.raises(DecryptionError):
        unwrap_secret_key(wrapped, "another passphrase")


def test_a_wrap_made_before_x_wing_still_unwraps_to_its_x25519_key() -> None:
    """Built as the code before X-Wing built it: the AEAD over the bare 32-byte key."""
    key = generate_keypair()
    salt = secrets.token_bytes(16)
    header = wrap_header(CHEAP, salt)
    wrapping = derive_officer_keys("an officer passphrase", salt, CHEAP).wrapping_key
    old_wrap = header + bytes(Aead(wrapping).encrypt(bytes(key), header))
    opened = unwrap_with_wrapping_key(old_wrap, wrapping)
    assert len(opened.keys) == 1 and isinstance(opened.current, PrivateKey)
    assert bytes(opened.current) == bytes(key)
    # And a recovery wrap (version 1 header) of then.
    import struct

    rsalt = secrets.token_bytes(16)
    rheader = struct.pack(">BIQ16s", 1, CHEAP.iterations, CHEAP.memory_bytes, rsalt)
    rkey = derive_key(b"recovery words", rsalt, CHEAP)
    rwrap = rheader + bytes(Aead(rkey).encrypt(bytes(key), rheader))
    assert bytes(unwrap_secret_key(rwrap, "recovery words").current) == bytes(key)


def test_an_officer_x_wing_key_wraps_under_the_wrapping_key() -> None:
    salt = secrets.token_bytes(16)
    wrapping = derive_officer_keys("an officer passphrase", salt, CHEAP).wrapping_key
    wrapped = wrap_with_wrapping_key(OFFICER, wrapping, salt, CHEAP)
    opened = unwrap_with_wrapping_key(wrapped, wrapping)
    assert isinstance(opened.current, XWingSecretKey) and same(opened, OFFICER)
    flipped = bytearray(wrapped)
    flipped[-5] ^= 1
    with pytest.raises(DecryptionError):
        unwrap_with_wrapping_key(bytes(flipped), wrapping)


# --- grants: an office's chain sealed to an officer's key ------------------------------------


def test_a_grant_to_an_x_wing_officer_carries_the_whole_chain() -> None:
    sealed = seal_secret_key(OFFICE, OFFICER.public_key)
    assert sealed[0] == 2 and len(sealed) == 1 + xwing.CIPHERTEXT_BYTES + 68 + 16
    assert is_sealed_secret_key(sealed)
    opened = open_sealed_secret_key(sealed, OFFICER)
    assert same(opened, OFFICE)
    # Both keys open: an item sealed to the old key and one sealed to the new.
    for recipient in (OLD_OFFICE.public_key, OFFICE.public_key):
        block, body = envelope.encrypt_bytes(b"evidence", [recipient], b"ctx")
        assert envelope.decrypt_bytes(block, body, opened, b"ctx")[1] == b"evidence"


def test_a_grant_under_the_x_wing_key_is_not_made_with_x25519_alone() -> None:
    """Breaking the X25519 half alone does not open a grant: ML-KEM is in every derivation."""
    sealed = seal_secret_key(OFFICE, OFFICER.public_key)
    # An attacker who knew the officer's X25519 secret but not the ML-KEM key would
    # need ss_M; a different ML-KEM ciphertext gives an unrelated secret (implicit
    # rejection), so changing only the ML-KEM part of the ciphertext breaks the grant.
    changed = bytearray(sealed)
    changed[1 + 100] ^= 1
    with pytest.raises(DecryptionError):
        open_sealed_secret_key(bytes(changed), OFFICER)


@pytest.mark.parametrize("position", [0, 1, 600, 1 + 1087, 1 + 1088, 1 + 1119, 1 + 1120, -1])
def test_a_grant_with_any_byte_changed_does_not_open(position: int) -> None:
    sealed = bytearray(seal_secret_key(OFFICE, OFFICER.public_key))
    sealed[position] ^= 0x40
    with pytest.raises(DecryptionError):
        open_sealed_secret_key(bytes(sealed), OFFICER)


def test_a_grant_does_not_open_for_another_officer_or_cut_short() -> None:
    sealed = seal_secret_key(OFFICE, OFFICER.public_key)
    with pytest.raises(DecryptionError):
        open_sealed_secret_key(sealed, generate_hybrid_key())
    with pytest.raises(DecryptionError):
        open_sealed_secret_key(sealed, generate_keypair())
    for cut in (1, 500, len(sealed) - 1):
        with pytest.raises(DecryptionError):
            open_sealed_secret_key(sealed[:cut], OFFICER)


def test_a_grant_made_before_x_wing_still_opens() -> None:
    officer, office = generate_keypair(), generate_keypair()
    old_grant = bytes(SealedBox(officer.public_key).encrypt(bytes(office)))
    assert is_sealed_secret_key(old_grant) and len(old_grant) == 80
    opened = open_sealed_secret_key(old_grant, officer)
    assert bytes(opened.current) == bytes(office)


@pytest.mark.parametrize("size", [0, 1, 78, 81, 1120, 1200])
def test_what_is_no_grant_has_no_grant_shape(size: int) -> None:
    assert not is_sealed_secret_key(bytes([2]) + bytes(size))


# --- fingerprints ------------------------------------------------------------------------------


def test_an_x_wing_fingerprint_starts_with_xwing_and_covers_the_whole_key() -> None:
    public = OFFICER.public_key
    text = fingerprint(public)
    assert text.startswith("XWING ") and len(text.split()) == 9
    raw = bytes(public)
    expected = hashlib.blake2b(raw, digest_size=20, person=b"dropbox-fpr-xw").digest()
    assert text.replace(" ", "")[5:] == base64.b32encode(expected).decode()
    # A change in the ML-KEM part or in the X25519 part changes it.
    other = generate_hybrid_key().public_key
    for start, end in ((0, 1184), (1184, 1216)):
        mixed = raw[:start] + bytes(other)[start:end] + raw[end:]
        assert fingerprint(public_key_from_bytes(mixed)) != text


def test_the_fingerprint_of_one_kind_never_matches_a_key_of_the_other() -> None:
    hybrid = fingerprint(OFFICER.public_key)
    groups = hybrid.split(" ", 1)[1]  # the same 8 groups without the word
    assert fingerprint_digest(hybrid) != fingerprint_digest(groups)
    assert fingerprint_digest(hybrid) is not None and fingerprint_digest(groups) is not None
    classical = fingerprint(generate_keypair().public_key)
    assert not classical.startswith("XWING") and len(classical.split()) == 8


def test_public_keys_are_told_apart_by_length() -> None:
    assert isinstance(public_key_from_bytes(bytes(OFFICER.public_key)), xwing.XWingPublicKey)
    assert public_key_from_bytes(bytes(OLD_OFFICE.public_key)) == OLD_OFFICE.public_key
    for size in (0, 31, 33, 1215, 1217):
        with pytest.raises(ValueError):
            public_key_from_bytes(bytes(size))


# --- fuzzing: arbitrary bytes are refused with the one error, never anything else -------------

_SALT = bytes(16)
_WRAPPING = derive_officer_keys("an officer passphrase", _SALT, CHEAP).wrapping_key
_XWING_GRANT = seal_secret_key(OFFICE, OFFICER.public_key)


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=300))
def test_arbitrary_bytes_are_no_key_chain(data: bytes) -> None:
    try:
        chain = decode_key_chain(data)
    except DecryptionError:
        return
    assert encode_key_chain(chain) == data  # what opens is exactly a valid encoding


@settings(max_examples=100, deadline=None)
@given(data=st.binary(max_size=1400), officer_kind=st.sampled_from(["X-Wing", "X25519"]))
def test_arbitrary_bytes_never_open_as_a_grant(data: bytes, officer_kind: str) -> None:
    officer = OFFICER if officer_kind == "X-Wing" else KeyChain((OLD_OFFICE,))
    with pytest.raises(DecryptionError):
        open_sealed_secret_key(data, officer)


@settings(max_examples=100, deadline=None)
@given(position=st.integers(0, len(_XWING_GRANT) - 1), mask=st.integers(1, 255))
def test_a_grant_with_any_byte_changed_by_any_mask_does_not_open(position: int, mask: int) -> None:
    changed = bytearray(_XWING_GRANT)
    changed[position] ^= mask
    with pytest.raises(DecryptionError):
        open_sealed_secret_key(bytes(changed), OFFICER)


@settings(max_examples=100, deadline=None)
@given(data=st.binary(max_size=200))
def test_arbitrary_bytes_never_unwrap(data: bytes) -> None:
    with pytest.raises(DecryptionError):
        unwrap_with_wrapping_key(wrap_header(CHEAP, _SALT) + data, _WRAPPING)


# --- a fixed grant, opened by the code and by a reader written from docs/format.md ------------

GRANT_VECTOR = json.loads(
    (Path(__file__).parent / "vectors" / "keys" / "grant-xwing.json").read_text()
)


def spec_open_grant(sealed: bytes, officer: XWingSecretKey) -> bytes:
    """docs/format.md's X-Wing grant, opened with the draft's X-Wing and RFC 5869 by hand."""
    assert sealed[0] == 0x02
    ciphertext = sealed[1:1121]
    shared = officer.decapsulate(ciphertext)  # X-Wing itself: checked against the draft's vectors
    salt = ciphertext + bytes(officer.public_key)
    prk = hmac.new(salt, shared, "sha256").digest()  # HKDF-Extract
    key = hmac.new(prk, b"dropbox sealed secret key 2 X-Wing" + b"\x01", "sha256").digest()
    return crypto_aead_chacha20poly1305_ietf_decrypt(
        sealed[1121:], b"dropbox sealed secret key\x02", bytes(12), key
    )


def test_the_fixed_grant_opens_by_the_code_and_by_the_spec() -> None:
    officer = XWingSecretKey(bytes.fromhex(GRANT_VECTOR["officer_xwing_seed"]))
    sealed = bytes.fromhex(GRANT_VECTOR["sealed"])
    chain = bytes.fromhex(GRANT_VECTOR["chain"])
    assert spec_open_grant(sealed, officer) == chain
    opened = open_sealed_secret_key(sealed, KeyChain((officer,)))
    assert encode_key_chain(opened) == chain
    # The chain as the page lays it out: version 2, two keys, X-Wing seed then X25519 key.
    assert chain[:3] == bytes([2, 2, 2]) and chain[35] == 1
    assert isinstance(opened.current, XWingSecretKey) and isinstance(opened.keys[1], PrivateKey)
