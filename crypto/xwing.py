"""X-Wing, the hybrid post-quantum KEM: ML-KEM-768 and X25519 joined by SHA3-256.

Exactly draft-connolly-cfrg-xwing-kem (the version whose test vectors are in
tests/vectors/xwing/): the 32-byte decapsulation key is a seed that SHAKE256
expands into the ML-KEM-768 seed ``d || z`` and the X25519 secret key; the
shared secret is ``SHA3-256(ss_M || ss_X || ct_X || pk_X || XWingLabel)``.
ML-KEM-768 and X25519 come from pyca/cryptography; nothing here is a new
construction. An attacker must break both ML-KEM-768 and X25519 to learn a
shared secret.

Sizes: decapsulation key 32, encapsulation key 1216 (ML-KEM 1184, X25519 32),
ciphertext 1120 (ML-KEM 1088, X25519 32), shared secret 32. A key or a
ciphertext of any other length is refused with ValueError naming the length.
A well-formed ciphertext that was changed is not refused: ML-KEM rejects it
implicitly, and decapsulation gives an unrelated shared secret.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable

from cryptography.hazmat.primitives.asymmetric.mlkem import MLKEM768PrivateKey, MLKEM768PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

__all__ = [
    "CIPHERTEXT_BYTES",
    "PUBLIC_KEY_BYTES",
    "SECRET_KEY_BYTES",
    "SHARED_SECRET_BYTES",
    "XWingPublicKey",
    "XWingSecretKey",
]

SECRET_KEY_BYTES = 32
PUBLIC_KEY_BYTES = 1216
CIPHERTEXT_BYTES = 1120
SHARED_SECRET_BYTES = 32
_MLKEM_PUBLIC_BYTES = 1184
_MLKEM_CIPHERTEXT_BYTES = 1088
_X25519_BYTES = 32
# The draft's label: the ASCII of the two lines "\./" and "/^\", hex 5c2e2f2f5e5c.
_LABEL = b"\\./" + b"/^\\"
_X25519_BASE = bytes([9]) + bytes(31)


def _x25519(scalar: bytes, point: bytes) -> bytes:
    """X25519(k, u) of RFC 7748, all-zero output included, as the draft uses it.

    pyca/cryptography refuses an all-zero result (a low-order point) with
    ValueError and for no other reason on a 32-byte point; the draft takes
    that result as it is, so it is returned here. The hybrid then rests on
    ML-KEM alone, which is X-Wing's design.
    """
    try:
        return X25519PrivateKey.from_private_bytes(scalar).exchange(
            X25519PublicKey.from_public_bytes(point)
        )
    except ValueError:
        return bytes(_X25519_BYTES)


def _combiner(ss_m: bytes, ss_x: bytes, ct_x: bytes, pk_x: bytes) -> bytes:
    return hashlib.sha3_256(ss_m + ss_x + ct_x + pk_x + _LABEL).digest()


def _check_length(what: str, data: bytes, expected: int) -> bytes:
    data = bytes(data)
    if len(data) != expected:
        raise ValueError(f"an X-Wing {what} is {expected} bytes long, not {len(data)}")
    return data


class XWingPublicKey:
    """An X-Wing encapsulation key (1216 bytes); its ML-KEM part passes FIPS 203's check."""

    def __init__(self, data: bytes) -> None:
        data = _check_length("public key", data, PUBLIC_KEY_BYTES)
        try:
            # FIPS 203 section 7.2's encapsulation key check (every coefficient below q),
            # which the draft requires before encapsulation.
            self._mlkem = MLKEM768PublicKey.from_public_bytes(data[:_MLKEM_PUBLIC_BYTES])
        except ValueError as exc:
            raise ValueError("this X-Wing public key's ML-KEM-768 part is not valid") from exc
        self._bytes = data

    @property
    def x25519_part(self) -> bytes:
        return self._bytes[_MLKEM_PUBLIC_BYTES:]

    def __bytes__(self) -> bytes:
        return self._bytes

    def __eq__(self, other: object) -> bool:
        return isinstance(other, XWingPublicKey) and other._bytes == self._bytes

    def __hash__(self) -> int:
        return hash(self._bytes)

    def encapsulate(self) -> tuple[bytes, bytes]:
        """A fresh (shared secret, ciphertext) for this key: the draft's Encapsulate."""
        return self._encapsulate_with(self._mlkem.encapsulate, secrets.token_bytes(_X25519_BYTES))

    def _encapsulate_with(
        self, mlkem_encapsulate: Callable[[], tuple[bytes, bytes]], ek_x: bytes
    ) -> tuple[bytes, bytes]:
        """Encapsulate with a given ML-KEM encapsulation and X25519 ephemeral secret.

        The draft's EncapsulateDerand with its two halves passed in: the
        tests check the X25519 half, the ordering and the combiner against
        the published vectors this way (pyca/cryptography has no
        derandomised ML-KEM encapsulation).
        """
        pk_x = self.x25519_part
        ct_x = _x25519(ek_x, _X25519_BASE)
        ss_x = _x25519(ek_x, pk_x)
        ss_m, ct_m = mlkem_encapsulate()
        return _combiner(ss_m, ss_x, ct_x, pk_x), ct_m + ct_x


class XWingSecretKey:
    """An X-Wing decapsulation key: its 32-byte seed, kept with the keys it expands to."""

    def __init__(self, seed: bytes) -> None:
        seed = _check_length("secret key", seed, SECRET_KEY_BYTES)
        expanded = hashlib.shake_256(seed).digest(96)
        # KeyGen_internal(d, z) with d = expanded[0:32], z = expanded[32:64]:
        # cryptography's 64-byte seed is exactly d || z (FIPS 203's seed format).
        self._mlkem = MLKEM768PrivateKey.from_seed_bytes(expanded[:64])
        self._sk_x = expanded[64:96]
        pk_x = _x25519(self._sk_x, _X25519_BASE)
        self._seed = seed
        self.public_key = XWingPublicKey(self._mlkem.public_key().public_bytes_raw() + pk_x)

    @classmethod
    def generate(cls) -> XWingSecretKey:
        """A new random key pair: the draft's GenerateKeyPair."""
        return cls(secrets.token_bytes(SECRET_KEY_BYTES))

    def __bytes__(self) -> bytes:
        """The 32-byte decapsulation key (the seed), the only form that is stored."""
        return self._seed

    def __eq__(self, other: object) -> bool:
        """The same seed, compared in constant time (a secret key is no dictionary key)."""
        return isinstance(other, XWingSecretKey) and hmac.compare_digest(other._seed, self._seed)

    __hash__ = None  # type: ignore[assignment]

    def decapsulate(self, ciphertext: bytes) -> bytes:
        """The shared secret of `ciphertext`; a changed ciphertext gives an unrelated one."""
        ciphertext = _check_length("ciphertext", ciphertext, CIPHERTEXT_BYTES)
        ct_m, ct_x = ciphertext[:_MLKEM_CIPHERTEXT_BYTES], ciphertext[_MLKEM_CIPHERTEXT_BYTES:]
        ss_m = self._mlkem.decapsulate(ct_m)
        ss_x = _x25519(self._sk_x, ct_x)
        return _combiner(ss_m, ss_x, ct_x, self.public_key.x25519_part)
