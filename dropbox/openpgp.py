"""OpenPGP public keys, through python-gnupg and Debian's `gpg` program: check one, encrypt to it.

Both sides that take a key from a person use this module: the case server,
for the key an officer registers to have their notification mails
encrypted, and the reviewer app, for the investigator's key an export is
encrypted to. Each says a refusal in its own words, chosen by the refusal's
`kind`; the words here are the case server's.

Only public keys are ever kept: a private key (armoured, or binary whose
first packet is a secret key) is refused before gpg sees it, and checked
again after. Every call runs gpg in a fresh private home (0700) that is
removed when the call ends, so no keyring builds up and one call never sees
another's keys; the caller says where the home is made (the reviewer app:
/dev/shm, in memory). gpg is told not to start its agent or any other
daemon, nor to reach the network.

Nothing here touches the database or a web framework: the caller stores or
shows the `PublicKey` that `check_key` gives back (with a minimal export of
the one key).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import gnupg

from dropbox.errors import DropboxError

# The case server's limit: far more than any minimal public key needs (an RSA-4096 key
# with a few user ids is about 3 KiB armoured); a key with thousands of signatures is refused.
MAX_KEY_BYTES = 64 * 1024
GPG_PROGRAM = "gpg"
# No agent or other daemon (public-key work needs none), no key servers, no trust
# database questions: the caller decides which key to trust (registered, or confirmed).
GPG_OPTIONS = ["--no-autostart", "--no-auto-key-retrieve", "--trust-model", "always"]
# The private homes' names start with this and the process id (what a process leaves
# behind can then be told from what another one is working in).
HOME_PREFIX = "dropbox-gpg-"
_PRIVATE_MARKERS = (b"PRIVATE KEY BLOCK", b"SECRET KEY BLOCK")
_PRIVATE_TAGS = {5, 7}  # OpenPGP packets: secret key, secret subkey

# Why a key is refused: KeyRefused.kind.
EMPTY = "empty"
TOO_LARGE = "too large"
PRIVATE = "private"
NOT_A_KEY = "not a key"
SEVERAL = "several"
REVOKED = "revoked"
EXPIRED = "expired"
CANNOT_ENCRYPT = "cannot encrypt"
UNREADABLE = "unreadable"
MISMATCH = "mismatch"
FAILED = "failed"
# A key that was fine once and is no longer: revoked, expired, or its encryption subkey gone.
NO_LONGER_USABLE = frozenset({REVOKED, EXPIRED, CANNOT_ENCRYPT})


class KeyRefused(DropboxError):
    """A key that cannot be used: `kind` says why, the message in the case server's words.

    `count` is how many keys a block held (SEVERAL); `expires` when an
    expired key expired (EXPIRED, if the key says).
    """

    def __init__(
        self, kind: str, message: str, *, count: int = 0, expires: datetime | None = None
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.count = count
        self.expires = expires


class GpgMissing(DropboxError):
    """The gpg program is not installed."""


@dataclass(frozen=True)
class PublicKey:
    """A checked public key: fingerprint, user ids, creation and expiry (naive UTC), key block."""

    fingerprint: str
    user_ids: tuple[str, ...]
    created: datetime | None
    expires: datetime | None
    armored: str = field(repr=False)

    @property
    def grouped(self) -> str:
        """The fingerprint in groups of four, as GnuPG and Kleopatra show it."""
        return grouped(self.fingerprint)


def grouped(fingerprint: str) -> str:
    """A fingerprint in groups of four, as GnuPG and Kleopatra show it."""
    return " ".join(fingerprint[i : i + 4] for i in range(0, len(fingerprint), 4))


# --- gpg in a private home ------------------------------------------------------------------


@contextmanager
def private_directory(prefix: str, parent: Path | None = None) -> Iterator[Path]:
    """A fresh directory only this user can enter (0700), removed when the block ends.

    Made in `parent` (the system's temporary folder if None); its name starts
    with `prefix` and this process's id.
    """
    path = Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=parent))
    try:
        os.chmod(path, 0o700)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _gpg_program() -> str:
    found = shutil.which(GPG_PROGRAM)
    if found is None:
        raise GpgMissing("the gpg program is not installed (Debian: apt-get install gpg)")
    return found


@contextmanager
def fresh_gpg(parent: Path | None = None) -> Iterator[gnupg.GPG]:
    """python-gnupg over a new private home in `parent`, removed when the block ends."""
    program = _gpg_program()
    with private_directory(HOME_PREFIX, parent) as home:
        # An empty common.conf: GnuPG 2.4 would otherwise want keyboxd for a new home.
        (home / "common.conf").write_text("")
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "GNUPGHOME": str(home)}
        env["LANG"] = env["LC_ALL"] = "C.UTF-8"
        yield gnupg.GPG(
            gpgbinary=program,
            gnupghome=str(home),
            options=list(GPG_OPTIONS),
            env=env,
            encoding="utf-8",
        )


# --- checking a key ---------------------------------------------------------------------------


def looks_private(data: bytes) -> bool:
    """A private key block: armoured, or binary whose first packet is a secret key."""
    if any(marker in data for marker in _PRIVATE_MARKERS):
        return True
    if not data or not data[0] & 0x80:
        return False
    first = data[0]
    tag = first & 0x3F if first & 0x40 else (first >> 2) & 0x0F
    return tag in _PRIVATE_TAGS


def _moment(timestamp: str) -> datetime | None:
    if not timestamp.isdigit():
        return None
    return datetime.fromtimestamp(int(timestamp), UTC).replace(tzinfo=None)


def _import_one(gpg: gnupg.GPG, data: bytes, max_bytes: int) -> dict[str, Any]:
    """Import a key block that must hold exactly one public key; that key's listing."""
    if not data.strip():
        raise KeyRefused(EMPTY, "no key was given: paste the whole armoured public key block")
    if len(data) > max_bytes:
        raise KeyRefused(
            TOO_LARGE,
            f"that key is too large (more than {max_bytes // 1024} KiB): export it with "
            "gpg --armor --export-options export-minimal --export YOUR-ADDRESS",
        )
    if looks_private(data):
        raise KeyRefused(
            PRIVATE,
            "that is a secret key: export and send only the public key "
            "(gpg --armor --export YOUR-ADDRESS)",
        )
    imported = gpg.import_keys(data)
    if gpg.list_keys(secret=True):
        raise KeyRefused(PRIVATE, "that key block holds a secret key: send only the public key")
    keys = gpg.list_keys()
    if not imported.fingerprints or not keys:
        raise KeyRefused(
            NOT_A_KEY,
            "that is not an OpenPGP public key: paste the whole armoured block, from "
            "-----BEGIN PGP PUBLIC KEY BLOCK----- to its END line",
        )
    if len(keys) != 1:
        raise KeyRefused(
            SEVERAL, f"that block holds {len(keys)} keys: send only yours", count=len(keys)
        )
    key: dict[str, Any] = keys[0]
    return key


def _checked(gpg: gnupg.GPG, data: bytes, max_bytes: int) -> PublicKey:
    """Import `data` into the fresh home and check it is one public key that can encrypt now."""
    key = _import_one(gpg, data, max_bytes)
    validity = str(key.get("trust", ""))
    expires = _moment(str(key.get("expires", "")))
    if validity == "r":
        raise KeyRefused(REVOKED, "that key has been revoked: send your current key")
    if validity == "e" or (
        expires is not None and expires <= datetime.now(UTC).replace(tzinfo=None)
    ):
        raise KeyRefused(
            EXPIRED,
            "that key has expired: extend its expiry date (or make a new key) and send it again",
            expires=expires,
        )
    # gpg lists the usable capabilities of the whole key in capitals: "E" means a
    # valid, unexpired, unrevoked (sub)key can encrypt.
    if validity in ("d", "i", "n") or "E" not in str(key.get("cap", "")):
        raise KeyRefused(
            CANNOT_ENCRYPT,
            "that key cannot encrypt (it may be for signing only, or its encryption "
            "subkey expired or was revoked): add an encryption subkey and send it again",
        )
    fingerprint = str(key.get("fingerprint", "")).upper()
    armored = str(gpg.export_keys(fingerprint, armor=True, minimal=True))
    if "BEGIN PGP PUBLIC KEY BLOCK" not in armored:  # pragma: no cover - gpg exports what it holds
        raise KeyRefused(UNREADABLE, "that key could not be read back: send it again")
    return PublicKey(
        fingerprint=fingerprint,
        user_ids=tuple(str(uid) for uid in key.get("uids", [])),
        created=_moment(str(key.get("date", ""))),
        expires=expires,
        armored=armored,
    )


def check_key(
    data: bytes, *, max_bytes: int = MAX_KEY_BYTES, parent: Path | None = None
) -> PublicKey:
    """The key in `data` (armoured or binary), checked; KeyRefused says what is wrong.

    Refused: nothing, more than `max_bytes`, a private key, anything that is
    not exactly one public key, a revoked or expired key, and a key that
    cannot encrypt (for example a signing-only key, or one whose encryption
    subkeys are all expired or revoked). gpg's home is made in `parent`.
    """
    with fresh_gpg(parent) as gpg:
        return _checked(gpg, data, max_bytes)


def check_public_key(text: str) -> PublicKey:
    """The case server's check of the armoured key an officer registers (see `check_key`)."""
    if "\x00" in text:
        raise KeyRefused(NOT_A_KEY, "that is not an OpenPGP public key: paste the armoured text")
    return check_key(text.encode("utf-8", "surrogatepass"))


def encrypt(
    key_text: str,
    fingerprint: str,
    data: bytes,
    *,
    armor: bool = True,
    max_bytes: int = MAX_KEY_BYTES,
    parent: Path | None = None,
) -> bytes:
    """`data` encrypted to the key, which must have `fingerprint` (spaces and case aside).

    The key is checked again first (it may have expired since it was checked);
    KeyRefused if it cannot be used or gpg cannot encrypt: never a fallback to
    anything unencrypted. ASCII armour, or binary OpenPGP (a .gpg file).
    """
    with fresh_gpg(parent) as gpg:
        key = _checked(gpg, key_text.encode("utf-8", "surrogatepass"), max_bytes)
        if key.fingerprint != "".join(fingerprint.split()).upper():
            raise KeyRefused(MISMATCH, "the key does not match its fingerprint")
        # The caller registered or confirmed this key: that is the trust decision.
        sealed = gpg.encrypt(data, [key.fingerprint], armor=armor, always_trust=True)
        if not sealed.ok or not sealed.data:
            raise KeyRefused(FAILED, f"gpg could not encrypt to the key ({sealed.status})")
        return bytes(sealed.data)


__all__ = [
    "MAX_KEY_BYTES",
    "NO_LONGER_USABLE",
    "GpgMissing",
    "KeyRefused",
    "PublicKey",
    "check_key",
    "check_public_key",
    "encrypt",
    "fresh_gpg",
    "grouped",
    "looks_private",
    "private_directory",
]
