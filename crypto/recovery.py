"""The offline recovery file of an office key, protected by a generated passphrase.

Losing every officer's passphrase must not lose the reports: at key
generation the office's secret key is also wrapped under a long generated
passphrase and written to a file that is kept offline.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass

from nacl.public import PrivateKey, PublicKey

from crypto import codenames
from crypto.errors import DecryptionError
from crypto.kdf import KdfCost
from crypto.keys import fingerprint, unwrap_secret_key, wrap_secret_key

FORMAT = "dropbox-office-recovery-v1"
_PASSPHRASE_WORDS = 10  # about 125 bits from the curated English list


class RecoveryFileError(ValueError):
    """The file is not a recovery file this version can read."""


@dataclass(frozen=True)
class RecoveryFile:
    """The parsed contents of a recovery file (the secret key still wrapped)."""

    office: str
    public_key: PublicKey
    wrapped_secret_key: bytes


def generate_passphrase() -> str:
    """A long passphrase of English words, to be written down once and kept offline.

    The words are the codenames' curated list (crypto/codenames.py): nothing
    a person would mind writing down or reading aloud.
    """
    return " ".join(codenames.random_words(_PASSPHRASE_WORDS, "en"))


def dump(office: str, secret_key: PrivateKey, passphrase: str, cost: KdfCost) -> bytes:
    """Serialise a recovery file for `office`."""
    document = {
        "format": FORMAT,
        "office": office,
        "public_key": base64.b64encode(bytes(secret_key.public_key)).decode("ascii"),
        "fingerprint": fingerprint(secret_key.public_key),
        "wrapped_secret_key": base64.b64encode(
            wrap_secret_key(secret_key, passphrase, cost)
        ).decode("ascii"),
    }
    return (json.dumps(document, indent=2) + "\n").encode("utf-8")


def load(data: bytes) -> RecoveryFile:
    """Parse a recovery file; raise RecoveryFileError if it is not one."""
    try:
        document = json.loads(data.decode("utf-8"))
        if document.get("format") != FORMAT:
            raise RecoveryFileError("not a dropbox recovery file (unknown format)")
        return RecoveryFile(
            office=str(document["office"]),
            public_key=PublicKey(base64.b64decode(document["public_key"], validate=True)),
            wrapped_secret_key=base64.b64decode(document["wrapped_secret_key"], validate=True),
        )
    except RecoveryFileError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise RecoveryFileError("not a dropbox recovery file (damaged or incomplete)") from exc


def open_secret_key(recovery: RecoveryFile, passphrase: str) -> PrivateKey:
    """Unwrap the office secret key; a wrong passphrase raises DecryptionError."""
    secret_key = unwrap_secret_key(recovery.wrapped_secret_key, passphrase)
    if bytes(secret_key.public_key) != bytes(recovery.public_key):
        raise DecryptionError()
    return secret_key
