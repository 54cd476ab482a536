"""OpenPGP public keys, through python-gnupg and Debian's `gpg` program: check one, encrypt to it.

Only public keys ever come here: a key block that holds a secret key is
refused before gpg sees it, and checked again after. Every call runs gpg in
a fresh private home (a temporary folder, 0700) that is removed when the
call ends, so no keyring builds up on the server and one call never sees
another's keys. gpg is told not to start its agent or reach the network.

Nothing here touches the database: the caller stores the key block that
`check_public_key` gives back (a minimal export of the one key).
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import gnupg

from dropbox.errors import DropboxError

# Far more than any minimal public key needs (an RSA-4096 key with a few user
# ids is about 3 KiB armoured); a key with thousands of signatures is refused.
MAX_KEY_BYTES = 64 * 1024
# No agent (public-key work needs none), no key servers, no trust database
# questions: the caller decides which key to trust by registering it.
GPG_OPTIONS = ["--no-autostart", "--no-auto-key-retrieve", "--trust-model", "always"]
_SECRET_MARKERS = ("BEGIN PGP PRIVATE KEY BLOCK", "BEGIN PGP SECRET KEY BLOCK")


class KeyRefused(DropboxError):
    """A key that cannot be registered or used; the message says why, in plain words."""


class GpgMissing(DropboxError):
    """The gpg program is not installed."""


@dataclass(frozen=True)
class PublicKey:
    """A checked public key: its fingerprint, user ids, expiry and the armoured key block."""

    fingerprint: str
    user_ids: tuple[str, ...]
    expires: datetime | None
    armored: str


def _gpg_binary() -> str:
    found = shutil.which("gpg")
    if found is None:
        raise GpgMissing("the gpg program is not installed (Debian: apt-get install gpg)")
    return found


@contextlib.contextmanager
def fresh_gpg() -> Iterator[gnupg.GPG]:
    """A gpg in a new private home (0700), removed when the block ends."""
    home = tempfile.mkdtemp(prefix="dropbox-gnupg-")
    try:
        gpg = gnupg.GPG(gpgbinary=_gpg_binary(), gnupghome=home, options=list(GPG_OPTIONS))
        gpg.encoding = "utf-8"
        yield gpg
    finally:
        shutil.rmtree(home, ignore_errors=True)


def _expiry(value: str) -> datetime | None:
    if not value:
        return None
    return datetime.fromtimestamp(int(value), UTC).replace(tzinfo=None)


def _import_one(gpg: gnupg.GPG, text: str) -> dict[str, Any]:
    """Import a key block that must hold exactly one public key; that key's listing."""
    if any(marker in text for marker in _SECRET_MARKERS):
        raise KeyRefused(
            "that is a secret key: export and send only the public key "
            "(gpg --armor --export YOUR-ADDRESS)"
        )
    result = gpg.import_keys(text)
    if gpg.list_keys(secret=True):
        raise KeyRefused("that key block holds a secret key: send only the public key")
    keys = gpg.list_keys()
    if not result.fingerprints or not keys:
        raise KeyRefused(
            "that is not an OpenPGP public key: paste the whole armoured block, from "
            "-----BEGIN PGP PUBLIC KEY BLOCK----- to its END line"
        )
    if len(keys) != 1:
        raise KeyRefused(f"that block holds {len(keys)} keys: send only yours")
    key: dict[str, Any] = keys[0]
    return key


def check_public_key(text: str) -> PublicKey:
    """Check a public key an officer wants mail encrypted to; KeyRefused says what is wrong.

    Refused: anything that is not exactly one public key, a secret key, a
    revoked or expired key, and a key that cannot encrypt (for example a
    signing-only key, or one whose encryption subkeys are all expired or revoked).
    """
    if len(text.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise KeyRefused(
            f"that key is too large (more than {MAX_KEY_BYTES // 1024} KiB): export it with "
            "gpg --armor --export-options export-minimal --export YOUR-ADDRESS"
        )
    if "\x00" in text:
        raise KeyRefused("that is not an OpenPGP public key: paste the armoured text")
    with fresh_gpg() as gpg:
        key = _import_one(gpg, text)
        validity = key.get("trust", "")
        if validity == "r":
            raise KeyRefused("that key has been revoked: send your current key")
        if validity == "e":
            raise KeyRefused(
                "that key has expired: extend its expiry date (or make a new key) and send it again"
            )
        # gpg lists the usable capabilities of the whole key in capitals: "E" means a
        # valid, unexpired, unrevoked (sub)key can encrypt.
        if "E" not in key.get("cap", ""):
            raise KeyRefused(
                "that key cannot encrypt (it may be for signing only, or its encryption "
                "subkey expired or was revoked): add an encryption subkey and send it again"
            )
        fingerprint = str(key["fingerprint"])
        armored = str(gpg.export_keys(fingerprint, armor=True, minimal=True))
        if "BEGIN PGP PUBLIC KEY BLOCK" not in armored:
            raise KeyRefused("that key could not be read back: send it again")
        return PublicKey(
            fingerprint=fingerprint,
            user_ids=tuple(str(u) for u in key.get("uids", [])),
            expires=_expiry(str(key.get("expires", ""))),
            armored=armored,
        )


def encrypt(armored_key: str, fingerprint: str, data: bytes) -> str:
    """`data` encrypted to the registered key (ASCII armour); KeyRefused if gpg cannot.

    The key is checked again first, since it may have expired since it was
    registered. Never falls back to anything unencrypted: the caller gets an error.
    """
    with fresh_gpg() as gpg:
        key = _import_one(gpg, armored_key)
        if key.get("fingerprint") != fingerprint:
            raise KeyRefused("the stored key does not match its fingerprint")
        if key.get("trust") in ("r", "e") or "E" not in key.get("cap", ""):
            raise KeyRefused(
                "the registered OpenPGP key can no longer encrypt (expired or revoked): "
                "register a current key on the account page"
            )
        result = gpg.encrypt(data, [fingerprint], armor=True, always_trust=True)
        if not result.ok:
            raise KeyRefused(f"gpg could not encrypt to the registered key ({result.status})")
        return str(result)
