"""Write the key vectors in tests/vectors/keys/.

The formats are in docs/format.md, "Secret keys, wraps, grants and recovery files".

Run by hand, from the repository root, only when the format changes:

    .venv/bin/python tests/vectors/keys/make_key_vectors.py

Everything is made by the project's own code (crypto/keys.py, crypto/recovery.py,
crypto/codenames.py): a source's keys derived from a codename, key chains, an
officer's wrap under the wrapping key, a passphrase wrap, and a version 2
recovery file. Damaged variants are made from them: a byte flipped,
a version or type byte changed, a cut.

Every key is SHA-256 of "dropbox key vector: " and its role. The wraps draw a
salt and a nonce from the system's random source; both are stored in the
wrap itself, so here they are fixed too (SHA-256 of their role, cut to
length) and handed to the code in place of its random draws, for the one call
that makes each wrap. So every run writes the same bytes:
tests/test_key_vectors.py runs `build_vectors` and compares. grant-xwing.json
is not made here: X-Wing encapsulation takes its randomness inside the ML-KEM
library, which offers no way to fix it.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nacl.secret

import crypto.keys
from crypto import codenames, recovery
from crypto.kdf import KdfCost, derive_key
from crypto.keys import (
    KeyChain,
    PrivateKey,
    XWingSecretKey,
    derive_officer_keys,
    encode_key_chain,
    fingerprint,
    wrap_secret_key,
    wrap_with_wrapping_key,
)

OUT = Path(__file__).parent
# A low cost, so that the vectors open in milliseconds; the cost travels in each wrap.
COST = KdfCost(iterations=2, memory_bytes=64 * 1024)
OFFICE = "ECO"
# Decomposed: "e" then U+0301. The officer's derivation reads it as NFC "é".
OFFICER_PASSPHRASE = "correct horse battery cafe\u0301 staple"
RECOVERY_PASSPHRASE = "amber bridge cedar delta ember fable garnet harbor island jasper"
Vector = dict[str, Any]


def fixed(role: str, size: int = 32) -> bytes:
    """Fixed bytes for the vectors, named by their role."""
    return hashlib.sha256(b"dropbox key vector: " + role.encode("ascii")).digest()[:size]


def office_chain() -> KeyChain:
    """An upgraded office's chain: its X-Wing key, then the X25519 key it replaced."""
    return KeyChain((XWingSecretKey(fixed("office X-Wing")), PrivateKey(fixed("office X25519"))))


@contextlib.contextmanager
def drawn(salt: bytes | None, nonce: bytes) -> Iterator[None]:
    """For one wrap: the code's random salt (if it draws one) and AEAD nonce are these.

    Exactly these draws must happen, in this order, or the generator stops:
    a change in how the code draws its randomness is not silently written.
    """
    planned = [value for value in (salt, nonce) if value is not None]

    def take(size: int) -> bytes:
        if not planned or len(planned[0]) != size:
            raise RuntimeError(f"the code drew {size} random bytes the generator did not plan")
        return planned.pop(0)

    class Secrets:
        @staticmethod
        def token_bytes(size: int) -> bytes:
            return take(size)

    saved = crypto.keys.secrets, nacl.secret.random  # type: ignore[attr-defined]
    crypto.keys.secrets = Secrets  # type: ignore[assignment]
    nacl.secret.random = take  # type: ignore[attr-defined]
    try:
        yield
    finally:
        crypto.keys.secrets, nacl.secret.random = saved  # type: ignore[attr-defined]
    if planned:
        raise RuntimeError("the code drew fewer random bytes than the generator planned")


def flip(data: bytes, at: int, mask: int = 0x01) -> bytes:
    out = bytearray(data)
    out[at] ^= mask
    return bytes(out)


def put(data: bytes, at: int, value: int) -> bytes:
    out = bytearray(data)
    out[at] = value
    return bytes(out)


def damaged(cases: list[tuple[str, bytes]]) -> list[Vector]:
    return [{"damage": what, "bytes": data.hex()} for what, data in cases]


def key_entry(key: PrivateKey | XWingSecretKey) -> Vector:
    kind = "X-Wing" if isinstance(key, XWingSecretKey) else "X25519"
    return {
        "type": kind,
        "secret_key": bytes(key).hex(),
        "public_key": bytes(key.public_key).hex(),
        "fingerprint": fingerprint(key.public_key),
    }


def chain_v2() -> Vector:
    chain = office_chain()
    data = encode_key_chain(chain)
    return {
        "description": "A key chain of two keys in its version 2 encoding: an office's X-Wing key "
        "(current), then the X25519 key it replaced. Made by crypto.keys.encode_key_chain.",
        "keys": [key_entry(key) for key in chain.keys],
        "chain": data.hex(),
        "damaged": damaged(
            [
                ("version byte 0x03", put(data, 0, 0x03)),
                ("count 0", put(data, 1, 0)),
                ("count 3, two keys' length", put(data, 1, 3)),
                ("count 1, two keys' length", put(data, 1, 1)),
                ("first key of unknown type 0x03", put(data, 2, 0x03)),
                ("second key of type 0x00", put(data, 35, 0x00)),
                ("cut by one byte", data[:-1]),
                ("one byte too many", data + b"\x00"),
                ("count 9, nine keys' length", bytes([2, 9]) + (data[2:35] * 9)),
                ("empty", b""),
            ]
        ),
    }


def chain_v1() -> Vector:
    key = PrivateKey(fixed("lone X25519"))
    data = encode_key_chain(key)
    return {
        "description": "A lone X25519 key in its version 1 encoding: its 32 bytes, untagged, as "
        "every wrap and grant held a key before X-Wing. Made by crypto.keys.encode_key_chain.",
        "keys": [key_entry(key)],
        "chain": data.hex(),
        "damaged": damaged(
            [
                ("cut by one byte", data[:-1]),
                ("one byte too many", data + b"\x00"),
            ]
        ),
    }


def wrap_damage(wrap: bytes, other_version: int) -> list[Vector]:
    """The damaged forms of a wrap: header fields, the AEAD's nonce, ciphertext and tag, cuts."""
    return damaged(
        [
            (f"version byte {other_version:#04x} (the other wrap's)", put(wrap, 0, other_version)),
            ("passes 2 made 3", put(wrap, 4, wrap[4] + 1)),
            ("memory changed by 1 KiB", flip(wrap, 11, 0x04)),
            ("salt byte flipped", flip(wrap, 13)),
            ("nonce byte flipped", flip(wrap, 29 + 5)),
            ("ciphertext byte flipped", flip(wrap, 29 + 24 + 3)),
            ("tag byte flipped", flip(wrap, len(wrap) - 1, 0x80)),
            ("cut by one byte", wrap[:-1]),
            ("header only", wrap[:29]),
        ]
    )


def officer_wrap() -> Vector:
    chain = KeyChain((XWingSecretKey(fixed("officer X-Wing")),))
    salt, nonce = fixed("officer salt", 16), fixed("officer wrap nonce", 24)
    secrets = derive_officer_keys(OFFICER_PASSPHRASE, salt, COST)
    with drawn(None, nonce):
        wrap = wrap_with_wrapping_key(chain, secrets.wrapping_key, salt, COST)
    return {
        "description": "An officer's X-Wing key wrapped under the wrapping key derived from their "
        "passphrase (104 bytes). Made by crypto.keys.derive_officer_keys and "
        "wrap_with_wrapping_key, with the salt and nonce below in place of random ones.",
        "passphrase": OFFICER_PASSPHRASE,
        "passes": COST.iterations,
        "memory": COST.memory_bytes,
        "salt": salt.hex(),
        "nonce": nonce.hex(),
        "wrapping_key": secrets.wrapping_key.hex(),
        "chain": encode_key_chain(chain).hex(),
        "public_key": bytes(chain.public_key).hex(),
        "wrap": wrap.hex(),
        "damaged": wrap_damage(wrap, 0x01),
    }


def passphrase_wrap() -> Vector:
    chain = office_chain()
    salt, nonce = fixed("passphrase salt", 16), fixed("passphrase wrap nonce", 24)
    with drawn(salt, nonce):
        wrap = wrap_secret_key(chain, RECOVERY_PASSPHRASE, COST)
    return {
        "description": "An office's two-key chain wrapped under a passphrase, as recovery files "
        "hold it (137 bytes). Made by crypto.keys.wrap_secret_key, with the salt and nonce below "
        "in place of random ones.",
        "passphrase": RECOVERY_PASSPHRASE,
        "passes": COST.iterations,
        "memory": COST.memory_bytes,
        "salt": salt.hex(),
        "nonce": nonce.hex(),
        "chain": encode_key_chain(chain).hex(),
        "wrap": wrap.hex(),
        "damaged": wrap_damage(wrap, 0x02),
    }


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def edited(document: bytes, **changes: Any) -> bytes:
    """A recovery file with some fields changed (None removes one), in the code's layout."""
    data = json.loads(document)
    for name, value in changes.items():
        if value is None:
            del data[name]
        else:
            data[name] = value
    return (json.dumps(data, indent=2) + "\n").encode("utf-8")


def recovery_v2() -> Vector:
    chain = office_chain()
    salt, nonce = fixed("recovery salt", 16), fixed("recovery wrap nonce", 24)
    with drawn(salt, nonce):
        document = recovery.dump(OFFICE, chain, RECOVERY_PASSPHRASE, COST)
    wrapped = base64.b64decode(json.loads(document)["wrapped_secret_key"])
    other = XWingSecretKey(fixed("another office X-Wing"))
    current, old = bytes(chain.public_key), bytes(chain.keys[1].public_key)
    cases = [
        ("wrapped key: ciphertext byte flipped", {"wrapped_secret_key": b64(flip(wrapped, 60))}),
        ("wrapped key: version byte 0x02", {"wrapped_secret_key": b64(put(wrapped, 0, 2))}),
        ("wrapped key: cut by one byte", {"wrapped_secret_key": b64(wrapped[:-1])}),
        ("public key of the old X25519 key", {"public_key": b64(old)}),
        ("public key of another X-Wing key", {"public_key": b64(bytes(other.public_key))}),
        ("public key cut by one byte", {"public_key": b64(current[:-1])}),
        ("format v3", {"format": "dropbox-office-recovery-v3"}),
        ("format v1, an X-Wing key", {"format": "dropbox-office-recovery-v1"}),
        ("no wrapped key", {"wrapped_secret_key": None}),
    ]
    files = [(what, edited(document, **changes)) for what, changes in cases]
    files.append(("file cut short", document[:200]))
    return {
        "description": "A version 2 recovery file of an upgraded office (X-Wing key, then its old "
        "X25519 key), with its passphrase. Made by crypto.recovery.dump, with the salt and nonce "
        "below in place of random ones.",
        "passphrase": RECOVERY_PASSPHRASE,
        "salt": salt.hex(),
        "nonce": nonce.hex(),
        "chain": encode_key_chain(chain).hex(),
        "file": document.decode("utf-8"),
        "damaged": [{"damage": what, "file": data.decode("utf-8")} for what, data in files],
    }


# Typed as a source might: capitals, an accent, a hyphen, a tab and a double space. The
# derivation normalises it first (docs/format.md, "Codenames and source keys").
SOURCE_CODENAME = "Amber-BRIDGE  cédar\tdelta ember fable garnet harbor"


def source_keys() -> Vector:
    salt = fixed("instance salt", 16)
    derived = codenames.derive(SOURCE_CODENAME, salt, COST)
    normalised = codenames.normalise(SOURCE_CODENAME)
    master = derive_key(normalised.encode("utf-8"), salt, COST)
    return {
        "description": "A source's secrets derived from a codename: the lookup id, the X25519 key "
        "pair of reports made before hybrid source keys, and the X-Wing key pair of every report "
        "made since, all from one Argon2id output. Made by crypto.codenames.derive.",
        "codename": SOURCE_CODENAME,
        "normalised": normalised,
        "instance_salt": salt.hex(),
        "passes": COST.iterations,
        "memory": COST.memory_bytes,
        "master": master.hex(),
        "lookup_id": derived.lookup_id.hex(),
        "x25519_secret_key": bytes(derived.secret_key).hex(),
        "x25519_public_key": bytes(derived.secret_key.public_key).hex(),
        "xwing_secret_key": bytes(derived.hybrid_key).hex(),
        "xwing_public_key": bytes(derived.hybrid_key.public_key).hex(),
    }


def build_vectors() -> dict[str, Vector]:
    """Every vector this script writes, by file name."""
    return {
        "source-keys.json": source_keys(),
        "chain-v2-xwing-x25519.json": chain_v2(),
        "chain-v1-x25519.json": chain_v1(),
        "officer-wrap-xwing.json": officer_wrap(),
        "passphrase-wrap.json": passphrase_wrap(),
        "recovery-v2.json": recovery_v2(),
    }


def render(vector: Vector) -> str:
    return json.dumps(vector, indent=2, ensure_ascii=True) + "\n"


def main() -> int:
    for name, vector in build_vectors().items():
        (OUT / name).write_text(render(vector), encoding="utf-8")
        print(f"wrote {OUT / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
