"""Key pairs for offices, officers and sources; wrapping of secret keys; fingerprints."""

from __future__ import annotations

import base64
import hashlib
import secrets
import struct

import nacl.exceptions
from nacl.public import PrivateKey, PublicKey, SealedBox
from nacl.secret import Aead

from crypto.errors import DecryptionError
from crypto.kdf import SALT_BYTES, KdfCost, derive_key

__all__ = [
    "PrivateKey",
    "PublicKey",
    "fingerprint",
    "generate_keypair",
    "open_sealed_secret_key",
    "seal_secret_key",
    "unwrap_secret_key",
    "wrap_secret_key",
]

_WRAP_VERSION = 1
# version, iterations, memory in bytes, salt; then the AEAD box (nonce + ciphertext), which
# authenticates this header as associated data.
_WRAP_HEADER = struct.Struct(f">BIQ{SALT_BYTES}s")


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
