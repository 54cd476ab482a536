"""A source's keys from a codename, key chains, wraps and recovery files: fixed vectors.

The formats are in docs/format.md, "Codenames and source keys" and "Secret keys,
wraps, grants and recovery files".

The vectors in tests/vectors/keys/ (made by make_key_vectors.py there) are
checked three ways, as tests/test_format_vectors.py checks the envelopes:

(a) the project's code (crypto/keys.py, crypto/recovery.py) opens each good
    vector to its keys and refuses each damaged one;
(b) `spec_*`, a reader and writer written from docs/format.md alone (hashlib,
    hmac, unicodedata, libsodium's primitives through nacl.bindings, and
    pyca/cryptography's Argon2id and ML-KEM-768; nothing from crypto/), does the
    same, and writes each wrap again byte for byte from its stored salt and nonce;
(c) the generator, run again, writes the very same files: every input is
    fixed, the salts and nonces included.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import importlib.util
import json
import re
import struct
import unicodedata
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.mlkem import MLKEM768PrivateKey
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id
from nacl.bindings import (
    crypto_aead_xchacha20poly1305_ietf_decrypt,
    crypto_aead_xchacha20poly1305_ietf_encrypt,
    crypto_scalarmult_base,
)
from nacl.exceptions import CryptoError

from crypto import codenames, recovery
from crypto.errors import DecryptionError
from crypto.kdf import KdfCost, derive_key
from crypto.keys import (
    KeyChain,
    XWingSecretKey,
    decode_key_chain,
    derive_officer_keys,
    encode_key_chain,
    fingerprint,
    unwrap_secret_key,
    unwrap_with_wrapping_key,
    wrap_parameters,
)

VECTOR_DIR = Path(__file__).parent / "vectors" / "keys"
GENERATOR = VECTOR_DIR / "make_key_vectors.py"
SPEC = Path(__file__).parent.parent / "docs" / "format.md"
Vector = dict[str, Any]
NAMES = (
    "source-keys.json",
    "chain-v2-xwing-x25519.json",
    "chain-v1-x25519.json",
    "officer-wrap-xwing.json",
    "passphrase-wrap.json",
    "recovery-v2.json",
)


def load(name: str) -> Vector:
    vector: Vector = json.loads((VECTOR_DIR / name).read_text(encoding="utf-8"))
    return vector


SOURCE_KEYS = load("source-keys.json")
CHAIN_V2 = load("chain-v2-xwing-x25519.json")
CHAIN_V1 = load("chain-v1-x25519.json")
OFFICER_WRAP = load("officer-wrap-xwing.json")
PASSPHRASE_WRAP = load("passphrase-wrap.json")
RECOVERY = load("recovery-v2.json")


def damage_ids(vector: Vector) -> list[str]:
    return [case["damage"] for case in vector["damaged"]]


def damaged_bytes(vector: Vector) -> list[bytes]:
    return [bytes.fromhex(case["bytes"]) for case in vector["damaged"]]


# --- (b) a reader and writer written from docs/format.md alone -------------------------------


class SpecRefusal(Exception):
    """The spec reader refuses its input."""


S_CHAIN_V2 = 0x02
S_KEY_X25519, S_KEY_XWING = 0x01, 0x02
S_MAX_KEYS = 8
S_PASSPHRASE_WRAP, S_OFFICER_WRAP = 0x01, 0x02
S_HEADER = struct.Struct(">BIQ16s")  # u8 version, u32 passes, u64 memory, salt (16)
S_NONCE_BYTES = 24
S_TAG_BYTES = 16
S_WRAPPING_PERSON = b"dropbox-ofc-wrap"
S_RECOVERY_V1, S_RECOVERY_V2 = "dropbox-office-recovery-v1", "dropbox-office-recovery-v2"


def spec_decode_chain(data: bytes) -> list[tuple[int, bytes]]:
    """A chain as (key type, 32 secret bytes) pairs, current key first."""
    if len(data) == 32:
        return [(S_KEY_X25519, data)]
    if len(data) < 2 or data[0] != S_CHAIN_V2:
        raise SpecRefusal("not a chain")
    count = data[1]
    if not 1 <= count <= S_MAX_KEYS or len(data) != 2 + 33 * count:
        raise SpecRefusal("bad count or length")
    keys = []
    for i in range(count):
        kind, secret = data[2 + 33 * i], data[3 + 33 * i : 2 + 33 * (i + 1)]
        if kind not in (S_KEY_X25519, S_KEY_XWING):
            raise SpecRefusal("unknown key type")
        keys.append((kind, secret))
    return keys


def spec_encode_chain(keys: list[tuple[int, bytes]]) -> bytes:
    if keys and len(keys) == 1 and keys[0][0] == S_KEY_X25519:
        return keys[0][1]
    return bytes([S_CHAIN_V2, len(keys)]) + b"".join(bytes([k]) + s for k, s in keys)


def spec_public_key(kind: int, secret: bytes) -> bytes:
    """X25519: the base-point multiple. X-Wing: the draft's expandDecapsulationKey."""
    if kind == S_KEY_X25519:
        return crypto_scalarmult_base(secret)
    expanded = hashlib.shake_256(secret).digest(96)
    mlkem = MLKEM768PrivateKey.from_seed_bytes(expanded[:64])
    return mlkem.public_key().public_bytes_raw() + crypto_scalarmult_base(expanded[64:])


def spec_fingerprint(public_key: bytes) -> str:
    xwing = len(public_key) == 1216
    person = b"dropbox-fpr-xw" if xwing else b"dropbox-fpr"
    text = base64.b32encode(hashlib.blake2b(public_key, digest_size=20, person=person).digest())
    groups = " ".join(text[i : i + 4].decode("ascii") for i in range(0, 32, 4))
    return f"XWING {groups}" if xwing else groups


def spec_argon2id(secret: bytes, salt: bytes, passes: int, memory: int) -> bytes:
    """Argon2id version 0x13, one lane, memory // 1024 KiB, 32 bytes (RFC 9106)."""
    return Argon2id(
        salt=salt, length=32, iterations=passes, lanes=1, memory_cost=memory // 1024
    ).derive(secret)


def spec_wrapping_key(passphrase: str, salt: bytes, passes: int, memory: int) -> bytes:
    master = spec_argon2id(
        unicodedata.normalize("NFC", passphrase).encode("utf-8"), salt, passes, memory
    )
    return hashlib.blake2b(master, digest_size=32, person=S_WRAPPING_PERSON).digest()


def spec_unwrap(wrap: bytes, version: int, passphrase: str) -> bytes:
    """The chain in a wrap of `version` (1: passphrase wrap, 2: officer's wrap)."""
    if len(wrap) < S_HEADER.size + S_NONCE_BYTES + S_TAG_BYTES:
        raise SpecRefusal("too short")
    header = wrap[: S_HEADER.size]
    found, passes, memory, salt = S_HEADER.unpack(header)
    if found != version:
        raise SpecRefusal("wrong wrap version")
    if version == S_PASSPHRASE_WRAP:
        key = spec_argon2id(passphrase.encode("utf-8"), salt, passes, memory)
    else:
        key = spec_wrapping_key(passphrase, salt, passes, memory)
    nonce = wrap[S_HEADER.size : S_HEADER.size + S_NONCE_BYTES]
    try:
        return crypto_aead_xchacha20poly1305_ietf_decrypt(
            wrap[S_HEADER.size + S_NONCE_BYTES :], header, nonce, key
        )
    except CryptoError as exc:
        raise SpecRefusal("does not open") from exc


def spec_wrap(chain: bytes, version: int, key: bytes, vector: Vector) -> bytes:
    header = S_HEADER.pack(
        version, vector["passes"], vector["memory"], bytes.fromhex(vector["salt"])
    )
    nonce = bytes.fromhex(vector["nonce"])
    return header + nonce + crypto_aead_xchacha20poly1305_ietf_encrypt(chain, header, nonce, key)


def spec_open_recovery(document: bytes, passphrase: str) -> list[tuple[int, bytes]]:
    """The chain of a recovery file, after the checks the page says a reader MUST make."""
    try:
        data = json.loads(document)
        found = data["format"]
        public_key = base64.b64decode(data["public_key"], validate=True)
        wrapped = base64.b64decode(data["wrapped_secret_key"], validate=True)
        str(data["office"])
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise SpecRefusal("not a recovery file") from exc
    if found not in (S_RECOVERY_V1, S_RECOVERY_V2):
        raise SpecRefusal("unknown format")
    if len(public_key) not in ((32,) if found == S_RECOVERY_V1 else (32, 1216)):
        raise SpecRefusal("not a public key")
    keys = spec_decode_chain(spec_unwrap(wrapped, S_PASSPHRASE_WRAP, passphrase))
    if spec_public_key(*keys[0]) != public_key:
        raise SpecRefusal("the chain is not the file's key")
    if found == S_RECOVERY_V1 and keys != [(S_KEY_X25519, keys[0][1])]:
        raise SpecRefusal("a version 1 file holds one X25519 key")
    return keys


S_LOOKUP_PERSON = b"dropbox-lookup"
S_SOURCE_X25519_PERSON = b"dropbox-srckey"
S_SOURCE_XWING_PERSON = b"dropbox-srcxwing"


def spec_normalise_codename(typed: str) -> str:
    """NFKC; case folded; NFKD without combining marks; words split at separators, one space."""
    text = unicodedata.normalize("NFKD", unicodedata.normalize("NFKC", typed).casefold())
    folded = "".join(c for c in text if not unicodedata.combining(c))
    return " ".join(w for w in re.split(r"[\s\-_.,;:/]+", folded) if w)


def spec_source_keys(typed: str, salt: bytes, passes: int, memory: int) -> dict[str, bytes]:
    """What a codename derives: one Argon2id output, three BLAKE2b derivations of it."""
    normalised = spec_normalise_codename(typed)
    master = spec_argon2id(normalised.encode("utf-8"), salt, passes, memory)

    def blake(person: bytes) -> bytes:
        return hashlib.blake2b(master, digest_size=32, person=person).digest()

    # libsodium's crypto_box_seed_keypair: the secret key is SHA-512 of the seed, cut to 32.
    x25519_secret = hashlib.sha512(blake(S_SOURCE_X25519_PERSON)).digest()[:32]
    xwing_seed = blake(S_SOURCE_XWING_PERSON)
    return {
        "normalised": normalised.encode("utf-8"),
        "master": master,
        "lookup_id": blake(S_LOOKUP_PERSON),
        "x25519_secret_key": x25519_secret,
        "x25519_public_key": crypto_scalarmult_base(x25519_secret),
        "xwing_secret_key": xwing_seed,
        "xwing_public_key": spec_public_key(S_KEY_XWING, xwing_seed),
    }


# --- the code's side ----------------------------------------------------------------------------


def code_open_officer_wrap(wrap: bytes, vector: Vector) -> KeyChain:
    """As the reviewer app does at sign-in: cost and salt from the header, then the wrapping key."""
    cost, salt = wrap_parameters(wrap, minimum=KdfCost(vector["passes"], vector["memory"]))
    secrets = derive_officer_keys(vector["passphrase"], salt, cost)
    return unwrap_with_wrapping_key(wrap, secrets.wrapping_key)


def code_open_recovery(document: bytes, passphrase: str) -> KeyChain:
    return recovery.open_secret_key(recovery.load(document), passphrase)


def as_pairs(chain: KeyChain) -> list[tuple[int, bytes]]:
    return [
        (S_KEY_XWING if isinstance(k, XWingSecretKey) else S_KEY_X25519, bytes(k))
        for k in chain.keys
    ]


# --- (a) and (b): the chains ------------------------------------------------------------------


# --- (a) and (b): a source's keys from a codename ---------------------------------------------


def test_the_codename_derives_the_fixed_source_keys_by_the_code_and_by_the_spec() -> None:
    vector = SOURCE_KEYS
    salt = bytes.fromhex(vector["instance_salt"])
    cost = KdfCost(vector["passes"], vector["memory"])
    derived = codenames.derive(vector["codename"], salt, cost)
    code = {
        "normalised": codenames.normalise(vector["codename"]).encode("utf-8"),
        "master": derive_key(codenames.normalise(vector["codename"]).encode("utf-8"), salt, cost),
        "lookup_id": derived.lookup_id,
        "x25519_secret_key": bytes(derived.secret_key),
        "x25519_public_key": bytes(derived.secret_key.public_key),
        "xwing_secret_key": bytes(derived.hybrid_key),
        "xwing_public_key": bytes(derived.hybrid_key.public_key),
    }
    spec = spec_source_keys(vector["codename"], salt, vector["passes"], vector["memory"])
    expected = {
        name: vector[name].encode("utf-8") if name == "normalised" else bytes.fromhex(vector[name])
        for name in code
    }
    assert code == expected
    assert spec == expected
    assert len(expected["xwing_public_key"]) == 1216
    # Three values from one output, none equal to another or to the output itself.
    seeds = [expected[n] for n in ("master", "lookup_id", "x25519_secret_key", "xwing_secret_key")]
    assert len(set(seeds)) == 4


def test_the_source_key_derivation_the_spec_gives_matches_the_code_for_other_codenames() -> None:
    """The spec's normalisation and derivation against the code's, on codenames typed oddly."""
    cost = KdfCost(2, 64 * 1024)
    salt = bytes(range(16))
    for typed in ("Élan vital/rosé  ŒUVRE", "abc def ghj", codenames.generate("fr")):
        derived = codenames.derive(typed, salt, cost)
        spec = spec_source_keys(typed, salt, cost.iterations, cost.memory_bytes)
        assert spec["normalised"] == codenames.normalise(typed).encode("utf-8")
        assert spec["lookup_id"] == derived.lookup_id
        assert spec["x25519_public_key"] == bytes(derived.secret_key.public_key)
        assert spec["xwing_public_key"] == bytes(derived.hybrid_key.public_key)


@pytest.mark.parametrize("vector", [CHAIN_V2, CHAIN_V1], ids=["v2", "v1"])
def test_a_fixed_chain_reads_the_same_by_the_code_and_by_the_spec(vector: Vector) -> None:
    data = bytes.fromhex(vector["chain"])
    expected = [
        ({"X25519": S_KEY_X25519, "X-Wing": S_KEY_XWING}[k["type"]], bytes.fromhex(k["secret_key"]))
        for k in vector["keys"]
    ]
    assert spec_decode_chain(data) == expected
    assert spec_encode_chain(expected) == data
    chain = decode_key_chain(data)
    assert as_pairs(chain) == expected
    assert encode_key_chain(chain) == data
    for key, pair, entry in zip(chain.keys, expected, vector["keys"], strict=True):
        public = bytes.fromhex(entry["public_key"])
        assert bytes(key.public_key) == public == spec_public_key(*pair)
        assert fingerprint(key.public_key) == entry["fingerprint"] == spec_fingerprint(public)


def test_the_fixed_chains_are_laid_out_as_the_page_draws_them() -> None:
    v2 = bytes.fromhex(CHAIN_V2["chain"])
    assert len(v2) == 2 + 33 * 2 and v2[:3] == bytes([2, 2, 2]) and v2[35] == 1
    assert [k["type"] for k in CHAIN_V2["keys"]] == ["X-Wing", "X25519"]
    assert len(bytes.fromhex(CHAIN_V2["keys"][0]["public_key"])) == 1216
    assert CHAIN_V2["keys"][0]["fingerprint"].startswith("XWING ")
    assert bytes.fromhex(CHAIN_V1["chain"]) == bytes.fromhex(CHAIN_V1["keys"][0]["secret_key"])


DAMAGED_CHAINS = [
    pytest.param(data, id=f"{name}: {what}")
    for name, vector in (("v2", CHAIN_V2), ("v1", CHAIN_V1))
    for what, data in zip(damage_ids(vector), damaged_bytes(vector), strict=True)
]


@pytest.mark.parametrize("data", DAMAGED_CHAINS)
def test_a_damaged_fixed_chain_is_refused_by_the_code_and_by_the_spec(data: bytes) -> None:
    with pytest.raises(DecryptionError):
        decode_key_chain(data)
    with pytest.raises(SpecRefusal):
        spec_decode_chain(data)


# --- the wraps --------------------------------------------------------------------------------


def test_the_officer_wrap_opens_by_the_code_and_by_the_spec() -> None:
    wrap = bytes.fromhex(OFFICER_WRAP["wrap"])
    chain = bytes.fromhex(OFFICER_WRAP["chain"])
    assert len(wrap) == 104 and len(chain) == 35 and wrap[0] == S_OFFICER_WRAP
    assert spec_unwrap(wrap, S_OFFICER_WRAP, OFFICER_WRAP["passphrase"]) == chain
    opened = code_open_officer_wrap(wrap, OFFICER_WRAP)
    assert encode_key_chain(opened) == chain
    assert bytes(opened.public_key).hex() == OFFICER_WRAP["public_key"]
    assert spec_public_key(*spec_decode_chain(chain)[0]).hex() == OFFICER_WRAP["public_key"]


def test_the_officer_wrapping_key_is_derived_from_the_nfc_passphrase() -> None:
    salt = bytes.fromhex(OFFICER_WRAP["salt"])
    args = (salt, OFFICER_WRAP["passes"], OFFICER_WRAP["memory"])
    passphrase = OFFICER_WRAP["passphrase"]
    assert unicodedata.normalize("NFC", passphrase) != passphrase  # the vector tests NFC
    assert spec_wrapping_key(passphrase, *args).hex() == OFFICER_WRAP["wrapping_key"]
    cost = KdfCost(OFFICER_WRAP["passes"], OFFICER_WRAP["memory"])
    assert (
        derive_officer_keys(passphrase, salt, cost).wrapping_key.hex()
        == OFFICER_WRAP["wrapping_key"]
    )


def test_the_passphrase_wrap_opens_by_the_code_and_by_the_spec() -> None:
    wrap = bytes.fromhex(PASSPHRASE_WRAP["wrap"])
    chain = bytes.fromhex(PASSPHRASE_WRAP["chain"])
    assert len(wrap) == 29 + 24 + 68 + 16 and wrap[0] == S_PASSPHRASE_WRAP
    assert spec_unwrap(wrap, S_PASSPHRASE_WRAP, PASSPHRASE_WRAP["passphrase"]) == chain
    assert encode_key_chain(unwrap_secret_key(wrap, PASSPHRASE_WRAP["passphrase"])) == chain


def test_the_spec_writer_makes_each_wrap_byte_for_byte() -> None:
    """From the stored salt and nonce, the page's construction gives the code's very bytes."""
    key = spec_wrapping_key(
        OFFICER_WRAP["passphrase"],
        bytes.fromhex(OFFICER_WRAP["salt"]),
        OFFICER_WRAP["passes"],
        OFFICER_WRAP["memory"],
    )
    officer = spec_wrap(bytes.fromhex(OFFICER_WRAP["chain"]), S_OFFICER_WRAP, key, OFFICER_WRAP)
    assert officer.hex() == OFFICER_WRAP["wrap"]
    key = spec_argon2id(
        PASSPHRASE_WRAP["passphrase"].encode("utf-8"),
        bytes.fromhex(PASSPHRASE_WRAP["salt"]),
        PASSPHRASE_WRAP["passes"],
        PASSPHRASE_WRAP["memory"],
    )
    wrap = spec_wrap(
        bytes.fromhex(PASSPHRASE_WRAP["chain"]), S_PASSPHRASE_WRAP, key, PASSPHRASE_WRAP
    )
    assert wrap.hex() == PASSPHRASE_WRAP["wrap"]


@pytest.mark.parametrize("data", damaged_bytes(OFFICER_WRAP), ids=damage_ids(OFFICER_WRAP))
def test_a_damaged_officer_wrap_is_refused_by_the_code_and_by_the_spec(data: bytes) -> None:
    with pytest.raises(DecryptionError):
        code_open_officer_wrap(data, OFFICER_WRAP)
    with pytest.raises(DecryptionError):
        unwrap_with_wrapping_key(data, bytes.fromhex(OFFICER_WRAP["wrapping_key"]))
    with pytest.raises(SpecRefusal):
        spec_unwrap(data, S_OFFICER_WRAP, OFFICER_WRAP["passphrase"])


@pytest.mark.parametrize("data", damaged_bytes(PASSPHRASE_WRAP), ids=damage_ids(PASSPHRASE_WRAP))
def test_a_damaged_passphrase_wrap_is_refused_by_the_code_and_by_the_spec(data: bytes) -> None:
    with pytest.raises(DecryptionError):
        unwrap_secret_key(data, PASSPHRASE_WRAP["passphrase"])
    with pytest.raises(SpecRefusal):
        spec_unwrap(data, S_PASSPHRASE_WRAP, PASSPHRASE_WRAP["passphrase"])


def test_a_wrap_does_not_open_under_another_passphrase() -> None:
    officer = bytes.fromhex(OFFICER_WRAP["wrap"])
    wrong = dict(OFFICER_WRAP, passphrase=unicodedata.normalize("NFD", "correct horse battery"))
    with pytest.raises(DecryptionError):
        code_open_officer_wrap(officer, wrong)
    with pytest.raises(SpecRefusal):
        spec_unwrap(officer, S_OFFICER_WRAP, wrong["passphrase"])
    wrap = bytes.fromhex(PASSPHRASE_WRAP["wrap"])
    with pytest.raises(DecryptionError):
        unwrap_secret_key(wrap, PASSPHRASE_WRAP["passphrase"] + " ")
    with pytest.raises(SpecRefusal):
        spec_unwrap(wrap, S_PASSPHRASE_WRAP, PASSPHRASE_WRAP["passphrase"] + " ")


# --- the recovery file -----------------------------------------------------------------------


def test_the_recovery_file_opens_by_the_code_and_by_the_spec() -> None:
    document = RECOVERY["file"].encode("utf-8")
    chain = bytes.fromhex(RECOVERY["chain"])
    keys = spec_open_recovery(document, RECOVERY["passphrase"])
    assert spec_encode_chain(keys) == chain
    opened = code_open_recovery(document, RECOVERY["passphrase"])
    assert encode_key_chain(opened) == chain
    fields = json.loads(document)
    assert fields["format"] == S_RECOVERY_V2 and fields["office"] == "ECO"
    assert fields["key_type"] == "X-Wing"
    public = [spec_public_key(*key) for key in keys]
    assert base64.b64decode(fields["public_key"]) == public[0] == bytes(opened.public_key)
    assert fields["fingerprint"] == spec_fingerprint(public[0])
    assert fields["previous_fingerprints"] == [spec_fingerprint(public[1])]
    assert set(fields) == {
        "format",
        "office",
        "key_type",
        "public_key",
        "fingerprint",
        "previous_fingerprints",
        "wrapped_secret_key",
    }


def test_the_recovery_file_does_not_open_under_another_passphrase() -> None:
    document = RECOVERY["file"].encode("utf-8")
    with pytest.raises(DecryptionError):
        code_open_recovery(document, RECOVERY["passphrase"].upper())
    with pytest.raises(SpecRefusal):
        spec_open_recovery(document, RECOVERY["passphrase"].upper())


@pytest.mark.parametrize(
    "document",
    [case["file"].encode("utf-8") for case in RECOVERY["damaged"]],
    ids=damage_ids(RECOVERY),
)
def test_a_damaged_recovery_file_is_refused_by_the_code_and_by_the_spec(document: bytes) -> None:
    with pytest.raises((recovery.RecoveryFileError, DecryptionError)):
        code_open_recovery(document, RECOVERY["passphrase"])
    with pytest.raises(SpecRefusal):
        spec_open_recovery(document, RECOVERY["passphrase"])


# --- (c) the generator ------------------------------------------------------------------------


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_key_vectors", GENERATOR)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_generator_writes_the_very_same_files() -> None:
    """So a change to how the code encodes a chain, a wrap or a recovery file fails here."""
    module = generator()
    built = module.build_vectors()
    assert sorted(built) == sorted(NAMES)
    for name, vector in built.items():
        assert module.render(vector) == (VECTOR_DIR / name).read_text(encoding="utf-8"), name


def test_every_key_vector_is_named_in_the_format_spec() -> None:
    text = SPEC.read_text(encoding="utf-8")
    for name in (*NAMES, "make_key_vectors.py", "test_key_vectors.py"):
        assert name in text, name
