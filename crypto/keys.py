"""Key pairs for offices, officers and sources; wrapping of secret keys; fingerprints.

An officer's passphrase is stretched on the officer's own machine into two
independent keys (:func:`derive_officer_keys`): an authentication key, which
the case server checks against a stored verifier, and a wrapping key, which
never leaves the machine and opens the officer's secret key
(:func:`unwrap_with_wrapping_key`). The older :func:`wrap_secret_key` wraps
under the passphrase itself: office recovery files (`crypto/recovery.py`) use it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import struct
import unicodedata
from dataclasses import dataclass, field

import nacl.exceptions
from nacl.public import PrivateKey, PublicKey, SealedBox
from nacl.secret import Aead

from crypto.errors import DecryptionError
from crypto.kdf import PRODUCTION_COST, SALT_BYTES, KdfCost, derive_key

__all__ = [
    "AUTH_KEY_BYTES",
    "WRAP_HEADER_BYTES",
    "OfficerSecrets",
    "PrivateKey",
    "PublicKey",
    "auth_key_verifier",
    "check_auth_key",
    "derive_officer_keys",
    "fake_salt",
    "fingerprint",
    "generate_keypair",
    "open_sealed_secret_key",
    "seal_secret_key",
    "unwrap_secret_key",
    "unwrap_with_wrapping_key",
    "wrap_header",
    "wrap_parameters",
    "wrap_secret_key",
    "wrap_with_wrapping_key",
]

_WRAP_VERSION = 1
# version, iterations, memory in bytes, salt; then the AEAD box (nonce + ciphertext), which
# authenticates this header as associated data.
_WRAP_HEADER = struct.Struct(f">BIQ{SALT_BYTES}s")
# The wrap under an officer's wrapping key has the same layout under its own version, so
# neither unwrap function ever takes the other's wrap.
_OFFICER_WRAP_VERSION = 2
WRAP_HEADER_BYTES = _WRAP_HEADER.size
AUTH_KEY_BYTES = 32
_WRAPPING_KEY_BYTES = Aead.KEY_SIZE
_VERIFIER_VERSION = 1
_MIN_SERVER_SECRET_BYTES = 16
# BLAKE2b personalisations (at most 16 bytes): one per derived value, so no two coincide.
_AUTH_PERSON = b"dropbox-ofc-auth"
_WRAPPING_PERSON = b"dropbox-ofc-wrap"
_VERIFIER_PERSON = b"dropbox-ofc-vrfy"
_FAKE_SALT_PERSON = b"dropbox-fakesalt"


def generate_keypair() -> PrivateKey:
    """Generate a fresh X25519 key pair."""
    return PrivateKey.generate()


def wrap_secret_key(secret_key: PrivateKey, passphrase: str, cost: KdfCost) -> bytes:
    """Encrypt a secret key under Argon2id(passphrase, fresh salt); the cost travels with it."""
    salt = secrets.token_bytes(SALT_BYTES)
    key = derive_key(passphrase.encode("utf-8"), salt, cost)
    header = _WRAP_HEADER.pack(_WRAP_VERSION, cost.iterations, cost.memory_bytes, salt)
    return header + bytes(Aead(key).encrypt(bytes(secret_key), header))


def unwrap_secret_key(wrapped: bytes, passphrase: str) -> PrivateKey:
    """Recover a key wrapped by `wrap_secret_key`; a wrong passphrase raises DecryptionError."""
    if len(wrapped) <= _WRAP_HEADER.size:
        raise DecryptionError()
    header, box = wrapped[: _WRAP_HEADER.size], wrapped[_WRAP_HEADER.size :]
    version, iterations, memory, salt = _WRAP_HEADER.unpack(header)
    if version != _WRAP_VERSION:
        raise DecryptionError()
    try:
        # A tampered cost (e.g. memory above the libsodium maximum) fails like any tampering.
        key = derive_key(passphrase.encode("utf-8"), salt, KdfCost(iterations, memory))
        return PrivateKey(Aead(key).decrypt(box, header))
    except (nacl.exceptions.CryptoError, ValueError) as exc:
        raise DecryptionError() from exc


def seal_secret_key(secret_key: PrivateKey, recipient: PublicKey) -> bytes:
    """Seal a secret key (an office's) so that only `recipient` (an officer) can open it."""
    return bytes(SealedBox(recipient).encrypt(bytes(secret_key)))


def open_sealed_secret_key(sealed: bytes, recipient_key: PrivateKey) -> PrivateKey:
    """Open a secret key sealed by `seal_secret_key`."""
    try:
        return PrivateKey(SealedBox(recipient_key).decrypt(sealed))
    except (nacl.exceptions.CryptoError, ValueError) as exc:
        raise DecryptionError() from exc


def fingerprint(public_key: PublicKey) -> str:
    """A short fingerprint two people can read aloud and compare: 8 groups of 4 characters."""
    digest = hashlib.blake2b(bytes(public_key), digest_size=20, person=b"dropbox-fpr").digest()
    text = base64.b32encode(digest).decode("ascii")
    return " ".join(text[i : i + 4] for i in range(0, len(text), 4))


# --- officers: keys derived on the officer's machine ------------------------------------------


@dataclass(frozen=True)
class OfficerSecrets:
    """What a passphrase yields on the officer's machine: two keys, neither telling the other."""

    # Kept out of repr so that a logged or printed value shows no key.
    auth_key: bytes = field(repr=False)
    wrapping_key: bytes = field(repr=False)


def _passphrase_bytes(passphrase: str) -> bytes:
    """The passphrase as Argon2id input."""
    # NFC first: the same text typed on another system, which may compose accents
    # differently, must give the same keys.
    return unicodedata.normalize("NFC", passphrase).encode("utf-8", "surrogatepass")


def derive_officer_keys(passphrase: str, salt: bytes, cost: KdfCost) -> OfficerSecrets:
    """One Argon2id run, then the authentication key and the wrapping key by BLAKE2b."""
    master = derive_key(_passphrase_bytes(passphrase), salt, cost)
    # Distinct personalisations make the two outputs independent pseudorandom functions of
    # the master: the case server, which sees the auth key, learns nothing of the other.
    return OfficerSecrets(
        auth_key=hashlib.blake2b(master, digest_size=AUTH_KEY_BYTES, person=_AUTH_PERSON).digest(),
        wrapping_key=hashlib.blake2b(
            master, digest_size=_WRAPPING_KEY_BYTES, person=_WRAPPING_PERSON
        ).digest(),
    )


def wrap_header(cost: KdfCost, salt: bytes) -> bytes:
    """The header of an officer's wrap: what the client needs before it can derive."""
    if len(salt) != SALT_BYTES:
        raise ValueError(f"salt must be {SALT_BYTES} bytes")
    return _WRAP_HEADER.pack(_OFFICER_WRAP_VERSION, cost.iterations, cost.memory_bytes, salt)


def _read_officer_header(wrapped: bytes) -> tuple[bytes, KdfCost, bytes]:
    """The header bytes, cost and salt at the start of `wrapped`; DecryptionError if unfit."""
    if len(wrapped) < WRAP_HEADER_BYTES:
        raise DecryptionError()
    header = bytes(wrapped[:WRAP_HEADER_BYTES])
    version, iterations, memory, salt = _WRAP_HEADER.unpack(header)
    if version != _OFFICER_WRAP_VERSION:
        raise DecryptionError()
    try:
        cost = KdfCost(iterations, memory)
    except ValueError as exc:
        raise DecryptionError() from exc
    return header, cost, salt


def wrap_parameters(wrapped: bytes, *, minimum: KdfCost = PRODUCTION_COST) -> tuple[KdfCost, bytes]:
    """The (cost, salt) in a wrap's header (the whole wrap, or just its header).

    The server hands this header out before sign-in, so it is checked before
    any derivation runs: KdfCost refuses more than 20 passes or 4 GiB, and a
    cost below `minimum` (the client's configured cost) is refused too, since
    an auth key derived at a trivial cost would let the server guess the
    passphrase cheaply.
    """
    _, cost, salt = _read_officer_header(wrapped)
    if cost.iterations < minimum.iterations or cost.memory_bytes < minimum.memory_bytes:
        raise DecryptionError()
    return cost, salt


def wrap_with_wrapping_key(
    secret_key: PrivateKey, wrapping_key: bytes, salt: bytes, cost: KdfCost
) -> bytes:
    """Encrypt an officer's secret key under the wrapping key derived from (salt, cost).

    The header (version, cost, salt) is the AEAD's associated data, so a
    server that hands out another cost or salt is caught at unwrap.
    """
    if len(wrapping_key) != _WRAPPING_KEY_BYTES:
        raise ValueError(f"a wrapping key is {_WRAPPING_KEY_BYTES} bytes")
    header = wrap_header(cost, salt)
    return header + bytes(Aead(wrapping_key).encrypt(bytes(secret_key), header))


def unwrap_with_wrapping_key(wrapped: bytes, wrapping_key: bytes) -> PrivateKey:
    """Recover a key wrapped by `wrap_with_wrapping_key`; any fault raises DecryptionError."""
    header, _, _ = _read_officer_header(wrapped)
    if len(wrapping_key) != _WRAPPING_KEY_BYTES:
        raise DecryptionError()
    try:
        return PrivateKey(Aead(wrapping_key).decrypt(bytes(wrapped[WRAP_HEADER_BYTES:]), header))
    except (nacl.exceptions.CryptoError, ValueError) as exc:
        raise DecryptionError() from exc


# The server stores a fast hash of the auth key, not a second Argon2id. The auth key is
# 256 bits of pseudorandom output of Argon2id(passphrase, salt) and BLAKE2b, so from a
# dump of verifiers and salts there are only two ways back: search 2**256 auth keys, or
# guess passphrases, each guess costing the full Argon2id the officer's machine paid. A
# slow hash here would add nothing but server load. Unkeyed, it needs no server secret;
# the per-officer random salt already keeps one guess from testing two officers.


def auth_key_verifier(auth_key: bytes) -> bytes:
    """What the case server stores for an officer instead of a passphrase hash."""
    if len(auth_key) != AUTH_KEY_BYTES:
        raise ValueError(f"an auth key is {AUTH_KEY_BYTES} bytes")
    digest = hashlib.blake2b(auth_key, digest_size=32, person=_VERIFIER_PERSON).digest()
    return bytes([_VERIFIER_VERSION]) + digest


def check_auth_key(verifier: bytes, auth_key: bytes) -> bool:
    """True if `auth_key` matches the stored verifier; compared in constant time."""
    if len(auth_key) != AUTH_KEY_BYTES:
        return False
    return hmac.compare_digest(auth_key_verifier(auth_key), verifier)


def fake_salt(server_secret: bytes, username: str) -> bytes:
    """A salt for a username that does not exist: stable, and unlinkable without the secret.

    Before sign-in the server answers every username with a wrap header; for an
    unknown one it sends `wrap_header(configured cost, fake_salt(...))`, so the
    answer looks like a real officer's and does not change between requests.
    `username` must be in the form the officer lookup uses.
    """
    if not _MIN_SERVER_SECRET_BYTES <= len(server_secret) <= hashlib.blake2b.MAX_KEY_SIZE:
        raise ValueError(
            f"the server secret must be {_MIN_SERVER_SECRET_BYTES} to "
            f"{hashlib.blake2b.MAX_KEY_SIZE} bytes"
        )
    return hashlib.blake2b(
        username.encode("utf-8", "surrogatepass"),
        key=server_secret,
        digest_size=SALT_BYTES,
        person=_FAKE_SALT_PERSON,
    ).digest()
