"""Key pairs for offices, officers and sources; wrapping of secret keys; fingerprints.

An officer's passphrase is stretched on the officer's own machine into two
independent keys (:func:`derive_officer_keys`): an authentication key, which
the case server checks against a stored verifier, and a wrapping key, which
never leaves the machine and opens the officer's secret key
(:func:`unwrap_with_wrapping_key`). The older :func:`wrap_secret_key` wraps
under the passphrase itself: office recovery files (`crypto/recovery.py`) use it.

New office and officer keys are X-Wing (`crypto/xwing.py`), the hybrid
post-quantum KEM; X25519 keys made before stay readable. Every secret key
that is wrapped, sealed or written down is a :class:`KeyChain`, serialised
by :func:`encode_key_chain`: the 32 bytes of an X25519 secret key as before
(untagged, version 1), or a tagged version 2 that names each key's type and
can carry an office's old X25519 key beside its new X-Wing key, so that
items sealed to the old key still open (docs/format.md, "Secret keys").
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
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from nacl.bindings import (
    crypto_aead_chacha20poly1305_ietf_decrypt,
    crypto_aead_chacha20poly1305_ietf_encrypt,
)
from nacl.public import PrivateKey, PublicKey, SealedBox
from nacl.secret import Aead

from crypto import xwing
from crypto.errors import DecryptionError
from crypto.kdf import PRODUCTION_COST, SALT_BYTES, KdfCost, derive_key
from crypto.xwing import XWingPublicKey, XWingSecretKey

__all__ = [
    "AUTH_KEY_BYTES",
    "HYBRID_FINGERPRINT_PREFIX",
    "WRAP_HEADER_BYTES",
    "KeyChain",
    "OfficerSecrets",
    "PrivateKey",
    "PublicKey",
    "Recipient",
    "SecretKey",
    "XWingPublicKey",
    "XWingSecretKey",
    "auth_key_verifier",
    "check_auth_key",
    "decode_key_chain",
    "derive_officer_keys",
    "encode_key_chain",
    "fake_salt",
    "fingerprint",
    "generate_hybrid_key",
    "generate_keypair",
    "is_hybrid",
    "is_sealed_secret_key",
    "is_sealed_to_kind_of",
    "key_chain_bytes",
    "open_sealed_secret_key",
    "public_key_from_bytes",
    "seal_secret_key",
    "unwrap_secret_key",
    "unwrap_with_wrapping_key",
    "wrap_header",
    "wrap_parameters",
    "wrap_secret_key",
    "wrap_with_wrapping_key",
]

SecretKey = PrivateKey | XWingSecretKey
Recipient = PublicKey | XWingPublicKey

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


# --- key types and key chains ------------------------------------------------------------


def public_key_from_bytes(data: bytes) -> Recipient:
    """A public key from its bytes: 32 are an X25519 key, 1216 an X-Wing key; else ValueError.

    The two lengths never meet, so a stored public key needs no type beside it.
    """
    data = bytes(data)
    if len(data) == PublicKey.SIZE:
        return PublicKey(data)
    if len(data) == xwing.PUBLIC_KEY_BYTES:
        return XWingPublicKey(data)
    raise ValueError(f"a public key is {PublicKey.SIZE} or {xwing.PUBLIC_KEY_BYTES} bytes long")


def is_hybrid(key: Recipient | SecretKey | KeyChain) -> bool:
    """True for an X-Wing key (or a chain whose current key is one)."""
    if isinstance(key, KeyChain):
        key = key.current
    return isinstance(key, XWingPublicKey | XWingSecretKey)


@dataclass(frozen=True, eq=False)
class KeyChain:
    """A holder's secret keys: the current key first, then older keys it still reads with.

    An office whose key was made X-Wing keeps its old X25519 key here until
    every item sealed to it is re-sealed (`dropbox office reseal`). Seal to
    `public_key` (the current key's); `crypto.envelope` opens an entry for
    any key of the chain. Shown without keys.
    """

    keys: tuple[SecretKey, ...] = field(repr=False)

    def __post_init__(self) -> None:
        if not 1 <= len(self.keys) <= _MAX_CHAIN:
            raise ValueError(f"a key chain holds 1 to {_MAX_CHAIN} keys")

    @classmethod
    def of(cls, key: SecretKey | KeyChain) -> KeyChain:
        return key if isinstance(key, KeyChain) else cls((key,))

    @property
    def current(self) -> SecretKey:
        return self.keys[0]

    @property
    def public_key(self) -> Recipient:
        return self.keys[0].public_key

    @property
    def previous(self) -> tuple[SecretKey, ...]:
        return self.keys[1:]

    def __bytes__(self) -> bytes:
        """The chain as `encode_key_chain` writes it."""
        return encode_key_chain(self)

    def __repr__(self) -> str:
        kinds = ", ".join("X-Wing" if is_hybrid(k) else "X25519" for k in self.keys)
        return f"KeyChain({kinds})"


# Version 2 of a serialised key chain: 0x02, a count, then per key its type and 32 bytes.
# Version 1 is an X25519 secret key alone, 32 bytes, no tag (every key made before X-Wing).
_CHAIN_VERSION = 2
_KEY_X25519 = 1
_KEY_XWING = 2
_MAX_CHAIN = 8
_KEY_BYTES = 32


def encode_key_chain(chain: SecretKey | KeyChain) -> bytes:
    """A key chain as it is wrapped, sealed or written: docs/format.md, "Secret keys".

    A chain of one X25519 key stays the untagged 32 bytes of version 1, so a
    key wrapped before X-Wing is wrapped the same way again.
    """
    chain = KeyChain.of(chain)
    if len(chain.keys) == 1 and isinstance(chain.current, PrivateKey):
        return bytes(chain.current)
    out = bytearray([_CHAIN_VERSION, len(chain.keys)])
    for key in chain.keys:
        out += bytes([_KEY_XWING if isinstance(key, XWingSecretKey) else _KEY_X25519])
        out += bytes(key)
    return bytes(out)


def decode_key_chain(data: bytes) -> KeyChain:
    """Read `encode_key_chain`'s output (either version); DecryptionError if it is not one."""
    data = bytes(data)
    if len(data) == _KEY_BYTES:
        return KeyChain((PrivateKey(data),))
    if len(data) < 2 or data[0] != _CHAIN_VERSION:
        raise DecryptionError()
    count = data[1]
    if not 1 <= count <= _MAX_CHAIN or len(data) != 2 + count * (1 + _KEY_BYTES):
        raise DecryptionError()
    keys: list[SecretKey] = []
    for i in range(count):
        start = 2 + i * (1 + _KEY_BYTES)
        kind, raw = data[start], data[start + 1 : start + 1 + _KEY_BYTES]
        if kind == _KEY_X25519:
            keys.append(PrivateKey(raw))
        elif kind == _KEY_XWING:
            keys.append(XWingSecretKey(raw))
        else:
            raise DecryptionError()
    return KeyChain(tuple(keys))


def key_chain_bytes(count: int) -> int:
    """The length of an encoded version 2 chain of `count` keys."""
    return 2 + count * (1 + _KEY_BYTES)


def generate_hybrid_key() -> KeyChain:
    """A fresh key for an office or an officer: X-Wing, hybrid post-quantum, alone in its chain."""
    return KeyChain((XWingSecretKey.generate(),))


def generate_keypair() -> PrivateKey:
    """A fresh X25519 key pair (as every office and officer key was before X-Wing)."""
    return PrivateKey.generate()


def _open_chain(plaintext: bytes) -> KeyChain:
    try:
        return decode_key_chain(plaintext)
    except (nacl.exceptions.CryptoError, ValueError) as exc:
        raise DecryptionError() from exc


def wrap_secret_key(secret_key: SecretKey | KeyChain, passphrase: str, cost: KdfCost) -> bytes:
    """Encrypt a secret key under Argon2id(passphrase, fresh salt); the cost travels with it."""
    salt = secrets.token_bytes(SALT_BYTES)
    key = derive_key(passphrase.encode("utf-8"), salt, cost)
    header = _WRAP_HEADER.pack(_WRAP_VERSION, cost.iterations, cost.memory_bytes, salt)
    return header + bytes(Aead(key).encrypt(encode_key_chain(secret_key), header))


def unwrap_secret_key(wrapped: bytes, passphrase: str) -> KeyChain:
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
        plaintext = Aead(key).decrypt(box, header)
    except (nacl.exceptions.CryptoError, ValueError) as exc:
        raise DecryptionError() from exc
    return _open_chain(plaintext)


# A secret key sealed to an X-Wing key (a grant to a hybrid officer key): the marker, the
# X-Wing ciphertext, then the key chain under ChaCha20-Poly1305 with a key derived from the
# shared secret as a version 2 key-block entry derives its own (crypto/envelope.py), under
# its own HKDF info. A grant to an X25519 key is a libsodium sealed box, as before.
_SEALED_XWING = 2
_SEALED_XWING_INFO = b"dropbox sealed secret key 2 X-Wing"
_SEALED_XWING_AD = b"dropbox sealed secret key" + bytes([_SEALED_XWING])
_ZERO_NONCE = bytes(12)  # each derived key seals one key chain, once
_SEALBOX_OVERHEAD = 48  # crypto_box_seal: ephemeral public key and MAC
_AEAD_TAG = 16


def _sealing_key(shared_secret: bytes, ciphertext: bytes, recipient: XWingPublicKey) -> bytes:
    return HKDF(
        algorithm=SHA256(), length=32, salt=ciphertext + bytes(recipient), info=_SEALED_XWING_INFO
    ).derive(shared_secret)


def seal_secret_key(secret_key: SecretKey | KeyChain, recipient: Recipient) -> bytes:
    """Seal a secret key (an office's) so that only `recipient` (an officer) can open it."""
    payload = encode_key_chain(secret_key)
    if isinstance(recipient, XWingPublicKey):
        shared, ciphertext = recipient.encapsulate()
        key = _sealing_key(shared, ciphertext, recipient)
        sealed = crypto_aead_chacha20poly1305_ietf_encrypt(
            payload, _SEALED_XWING_AD, _ZERO_NONCE, key
        )
        return bytes([_SEALED_XWING]) + ciphertext + sealed
    return bytes(SealedBox(recipient).encrypt(payload))


def open_sealed_secret_key(sealed: bytes, recipient_key: SecretKey | KeyChain) -> KeyChain:
    """Open a secret key sealed by `seal_secret_key` with the current key of `recipient_key`."""
    own = KeyChain.of(recipient_key).current
    sealed = bytes(sealed)
    try:
        if isinstance(own, XWingSecretKey):
            if len(sealed) < 1 + xwing.CIPHERTEXT_BYTES or sealed[0] != _SEALED_XWING:
                raise DecryptionError()
            ciphertext = sealed[1 : 1 + xwing.CIPHERTEXT_BYTES]
            key = _sealing_key(own.decapsulate(ciphertext), ciphertext, own.public_key)
            plaintext = crypto_aead_chacha20poly1305_ietf_decrypt(
                sealed[1 + xwing.CIPHERTEXT_BYTES :], _SEALED_XWING_AD, _ZERO_NONCE, key
            )
        else:
            plaintext = SealedBox(own).decrypt(sealed)
    except (nacl.exceptions.CryptoError, ValueError) as exc:
        raise DecryptionError() from exc
    return _open_chain(plaintext)


def is_sealed_secret_key(sealed: bytes) -> bool:
    """Whether `sealed` has the shape of `seal_secret_key`'s output (it cannot be opened here)."""
    lengths = {_KEY_BYTES} | {key_chain_bytes(n) for n in range(1, _MAX_CHAIN + 1)}
    if len(sealed) - _SEALBOX_OVERHEAD in lengths:
        return True
    return (
        len(sealed) > 0
        and sealed[0] == _SEALED_XWING
        and len(sealed) - 1 - xwing.CIPHERTEXT_BYTES - _AEAD_TAG in lengths
    )


def is_sealed_to_kind_of(sealed: bytes, recipient: Recipient) -> bool:
    """Whether `sealed` has the shape `seal_secret_key` gives for a key of `recipient`'s type.

    A grant to an X-Wing key and a sealed box to an X25519 key never have the
    same length, so the case server can refuse a grant sealed to a key of the
    other type (such as an officer's former X25519 key) without opening it.
    """
    if not is_sealed_secret_key(sealed):
        return False
    as_xwing = len(sealed) > _SEALBOX_OVERHEAD + key_chain_bytes(_MAX_CHAIN)
    return as_xwing == isinstance(recipient, XWingPublicKey)


_FINGERPRINT_PERSON = {False: b"dropbox-fpr", True: b"dropbox-fpr-xw"}
# What an X-Wing key's fingerprint starts with, so that nobody comparing one with an
# X25519 key's fingerprint (8 groups, nothing before them) can take one for the other.
HYBRID_FINGERPRINT_PREFIX = "XWING"


def fingerprint(public_key: Recipient) -> str:
    """A short fingerprint two people can read aloud and compare: 8 groups of 4 characters.

    An X-Wing key's fingerprint covers all its 1,216 bytes (under another
    BLAKE2b personalisation) and starts with the word XWING.
    """
    hybrid = isinstance(public_key, XWingPublicKey)
    digest = hashlib.blake2b(
        bytes(public_key), digest_size=20, person=_FINGERPRINT_PERSON[hybrid]
    ).digest()
    text = base64.b32encode(digest).decode("ascii")
    groups = " ".join(text[i : i + 4] for i in range(0, len(text), 4))
    return f"{HYBRID_FINGERPRINT_PREFIX} {groups}" if hybrid else groups


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
    secret_key: SecretKey | KeyChain, wrapping_key: bytes, salt: bytes, cost: KdfCost
) -> bytes:
    """Encrypt an officer's secret key under the wrapping key derived from (salt, cost).

    The header (version, cost, salt) is the AEAD's associated data, so a
    server that hands out another cost or salt is caught at unwrap.
    """
    if len(wrapping_key) != _WRAPPING_KEY_BYTES:
        raise ValueError(f"a wrapping key is {_WRAPPING_KEY_BYTES} bytes")
    header = wrap_header(cost, salt)
    return header + bytes(Aead(wrapping_key).encrypt(encode_key_chain(secret_key), header))


def unwrap_with_wrapping_key(wrapped: bytes, wrapping_key: bytes) -> KeyChain:
    """Recover a key wrapped by `wrap_with_wrapping_key`; any fault raises DecryptionError."""
    header, _, _ = _read_officer_header(wrapped)
    if len(wrapping_key) != _WRAPPING_KEY_BYTES:
        raise DecryptionError()
    try:
        plaintext = Aead(wrapping_key).decrypt(bytes(wrapped[WRAP_HEADER_BYTES:]), header)
    except (nacl.exceptions.CryptoError, ValueError) as exc:
        raise DecryptionError() from exc
    return _open_chain(plaintext)


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
