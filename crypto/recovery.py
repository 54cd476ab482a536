"""The offline recovery file of an office key, protected by a generated passphrase.

Losing every officer's passphrase must not lose the reports: at key
generation the office's secret key is also wrapped under a long generated
passphrase and written to a file that is kept offline.

Version 2 (every file written now) holds a key chain (crypto/keys.py): the
office's X-Wing key, and its old X25519 key while items sealed to that are
not all re-sealed. Version 1 files, one X25519 key each, still load.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass

from crypto import codenames
from crypto.errors import DecryptionError
from crypto.kdf import KdfCost
from crypto.keys import (
    KeyChain,
    Recipient,
    SecretKey,
    fingerprint,
    is_hybrid,
    public_key_from_bytes,
    unwrap_secret_key,
    wrap_secret_key,
)

FORMAT = "dropbox-office-recovery-v2"
FORMAT_V1 = "dropbox-office-recovery-v1"  # one X25519 key; read, never written
_PASSPHRASE_WORDS = 10  # about 125 bits from the curated English list


class RecoveryFileError(ValueError):
    """The file is not a recovery file this version can read."""


@dataclass(frozen=True)
class RecoveryFile:
    """The parsed contents of a recovery file (the secret key still wrapped)."""

    office: str
    public_key: Recipient  # the current key's
    wrapped_secret_key: bytes
    format: str = FORMAT


def generate_passphrase() -> str:
    """A long passphrase of English words, to be written down once and kept offline.

    The words are the codenames' curated list (crypto/codenames.py): nothing
    a person would mind writing down or reading aloud.
    """
    return " ".join(codenames.random_words(_PASSPHRASE_WORDS, "en"))


def dump(office: str, secret_key: SecretKey | KeyChain, passphrase: str, cost: KdfCost) -> bytes:
    """Serialise a recovery file for `office` (version 2: the whole key chain, wrapped)."""
    chain = KeyChain.of(secret_key)
    document = {
        "format": FORMAT,
        "office": office,
        "key_type": "X-Wing" if is_hybrid(chain) else "X25519",
        "public_key": base64.b64encode(bytes(chain.public_key)).decode("ascii"),
        "fingerprint": fingerprint(chain.public_key),
        "previous_fingerprints": [fingerprint(key.public_key) for key in chain.previous],
        "wrapped_secret_key": base64.b64encode(wrap_secret_key(chain, passphrase, cost)).decode(
            "ascii"
        ),
    }
    return (json.dumps(document, indent=2) + "\n").encode("utf-8")


def load(data: bytes) -> RecoveryFile:
    """Parse a recovery file; raise RecoveryFileError if it is not one."""
    try:
        document = json.loads(data.decode("utf-8"))
        found = document.get("format")
        if found not in (FORMAT, FORMAT_V1):
            raise RecoveryFileError("not a dropbox recovery file (unknown format)")
        public = base64.b64decode(document["public_key"], validate=True)
        if found == FORMAT_V1 and len(public) != 32:
            raise ValueError("a version 1 recovery file holds an X25519 key")
        return RecoveryFile(
            office=str(document["office"]),
            public_key=public_key_from_bytes(public),
            wrapped_secret_key=base64.b64decode(document["wrapped_secret_key"], validate=True),
            format=found,
        )
    except RecoveryFileError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise RecoveryFileError("not a dropbox recovery file (damaged or incomplete)") from exc


def open_secret_key(recovery: RecoveryFile, passphrase: str) -> KeyChain:
    """Unwrap the office's key chain; a wrong passphrase raises DecryptionError.

    The chain's current key must be the file's public key, and a version 1
    file must hold a single X25519 key.
    """
    chain = unwrap_secret_key(recovery.wrapped_secret_key, passphrase)
    if bytes(chain.public_key) != bytes(recovery.public_key):
        raise DecryptionError()
    if recovery.format == FORMAT_V1 and (len(chain.keys) != 1 or is_hybrid(chain)):
        raise DecryptionError()
    return chain
