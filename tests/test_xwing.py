"""X-Wing (crypto/xwing.py) against the draft's published test vectors, and its refusals.

The vectors (tests/vectors/xwing/, origin in its README.md) give, for each
seed, the public key, and for each encapsulation seed the ciphertext and the
shared secret. Every value is checked: key generation from the seed,
decapsulation of the published ciphertext, and encapsulation. pyca/
cryptography offers no derandomised ML-KEM encapsulation, so encapsulation is
checked with the ML-KEM half fed in (the published ML-KEM ciphertext and the
secret it decapsulates to) and the X25519 half, the layout and the combiner
computed by the code from the published eseed.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.mlkem import MLKEM768PrivateKey

from crypto import xwing
from crypto.xwing import XWingPublicKey, XWingSecretKey

VECTORS_DIR = Path(__file__).resolve().parent / "vectors" / "xwing"
VECTORS = json.loads((VECTORS_DIR / "test-vectors.json").read_text())


def test_the_vector_file_is_the_published_one() -> None:
    digest = hashlib.sha256((VECTORS_DIR / "test-vectors.json").read_bytes()).hexdigest()
    assert digest in (VECTORS_DIR / "README.md").read_text()
    assert len(VECTORS) == 3


@pytest.mark.parametrize("vector", VECTORS, ids=[f"vector-{i}" for i in range(len(VECTORS))])
def test_key_generation_from_the_seed_gives_the_published_keys(vector: dict[str, str]) -> None:
    secret = XWingSecretKey(bytes.fromhex(vector["seed"]))
    assert bytes(secret).hex() == vector["sk"]
    assert bytes(secret.public_key).hex() == vector["pk"]


@pytest.mark.parametrize("vector", VECTORS, ids=[f"vector-{i}" for i in range(len(VECTORS))])
def test_decapsulation_of_the_published_ciphertext_gives_the_published_secret(
    vector: dict[str, str],
) -> None:
    secret = XWingSecretKey(bytes.fromhex(vector["sk"]))
    assert secret.decapsulate(bytes.fromhex(vector["ct"])).hex() == vector["ss"]


@pytest.mark.parametrize("vector", VECTORS, ids=[f"vector-{i}" for i in range(len(VECTORS))])
def test_encapsulation_from_the_eseed_gives_the_published_ciphertext_and_secret(
    vector: dict[str, str],
) -> None:
    public = XWingPublicKey(bytes.fromhex(vector["pk"]))
    eseed, ct = bytes.fromhex(vector["eseed"]), bytes.fromhex(vector["ct"])
    ct_m = ct[:1088]
    # The ML-KEM half: the published ML-KEM ciphertext, and the secret the
    # vector's ML-KEM key (SHAKE256(seed)[0:64]) decapsulates it to.
    expanded = hashlib.shake_256(bytes.fromhex(vector["seed"])).digest(96)
    ss_m = MLKEM768PrivateKey.from_seed_bytes(expanded[:64]).decapsulate(ct_m)
    ss, ciphertext = public._encapsulate_with(lambda: (ss_m, ct_m), eseed[32:64])
    assert ciphertext.hex() == vector["ct"]
    assert ss.hex() == vector["ss"]


def test_a_fresh_encapsulation_decapsulates_to_the_same_secret() -> None:
    secret = XWingSecretKey.generate()
    ss, ct = secret.public_key.encapsulate()
    assert len(ss) == xwing.SHARED_SECRET_BYTES and len(ct) == xwing.CIPHERTEXT_BYTES
    assert secret.decapsulate(ct) == ss
    ss2, ct2 = secret.public_key.encapsulate()
    assert (ss2, ct2) != (ss, ct)
    assert XWingSecretKey(bytes(secret)).public_key == secret.public_key


@pytest.mark.parametrize("position", [0, 500, 1087, 1088, 1119])
def test_a_changed_ciphertext_gives_another_shared_secret(position: int) -> None:
    """Implicit rejection: no error, but a secret unrelated to the sender's."""
    vector = VECTORS[0]
    secret = XWingSecretKey(bytes.fromhex(vector["sk"]))
    changed = bytearray.fromhex(vector["ct"])
    changed[position] ^= 0x01
    other = secret.decapsulate(bytes(changed))
    assert len(other) == 32
    assert other.hex() != vector["ss"]


def test_another_key_gives_another_shared_secret() -> None:
    vector = VECTORS[0]
    stranger = XWingSecretKey(bytes.fromhex(VECTORS[1]["sk"]))
    assert stranger.decapsulate(bytes.fromhex(vector["ct"])).hex() != vector["ss"]


@pytest.mark.parametrize("length", [0, 31, 33, 64])
def test_a_secret_key_of_another_length_is_refused(length: int) -> None:
    with pytest.raises(ValueError, match=f"X-Wing secret key is 32 bytes long, not {length}"):
        XWingSecretKey(bytes(length))


@pytest.mark.parametrize("length", [0, 32, 1184, 1215, 1217])
def test_a_public_key_of_another_length_is_refused(length: int) -> None:
    with pytest.raises(ValueError, match=f"X-Wing public key is 1216 bytes long, not {length}"):
        XWingPublicKey(bytes(length))


@pytest.mark.parametrize("length", [0, 32, 1088, 1119, 1121])
def test_a_ciphertext_of_another_length_is_refused(length: int) -> None:
    secret = XWingSecretKey(bytes.fromhex(VECTORS[0]["sk"]))
    with pytest.raises(ValueError, match=f"X-Wing ciphertext is 1120 bytes long, not {length}"):
        secret.decapsulate(bytes(length))


def test_a_public_key_that_fails_the_ml_kem_check_is_refused() -> None:
    """FIPS 203's encapsulation key check, which the draft requires: a coefficient of q or more."""
    bad = bytearray.fromhex(VECTORS[0]["pk"])
    bad[0], bad[1] = 0xFF, 0x0F  # the first 12-bit coefficient becomes 4095 >= 3329
    with pytest.raises(ValueError, match="ML-KEM-768 part is not valid"):
        XWingPublicKey(bytes(bad))


def test_a_low_order_x25519_share_is_taken_as_the_draft_takes_it() -> None:
    """An all-zero X25519 result is not an error in the draft: the secret rests on ML-KEM."""
    vector = VECTORS[0]
    secret = XWingSecretKey(bytes.fromhex(vector["sk"]))
    ct = bytes.fromhex(vector["ct"])[:1088] + bytes(32)  # u = 0, a point of low order
    expanded = hashlib.shake_256(bytes(secret)).digest(96)
    ss_m = MLKEM768PrivateKey.from_seed_bytes(expanded[:64]).decapsulate(ct[:1088])
    pk_x = bytes(secret.public_key)[1184:]
    expected = hashlib.sha3_256(ss_m + bytes(32) + bytes(32) + pk_x + b"\\.//^\\").digest()
    assert secret.decapsulate(ct) == expected
