"""OpenPGP keys of every kind, made by the real `gpg` program in a home of the test's own.

The owner's side of a key (an officer reading an encrypted mail, an
investigator opening an export) is this home: it holds the secret keys,
decrypts with `gpg`, and hands out the public keys the tests paste, good and
refused: expired, revoked, signing only, private, two keys in one block.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

GPG = shutil.which("gpg") or "/usr/bin/gpg"
GPGCONF = shutil.which("gpgconf") or "gpgconf"
PASS = ("--passphrase", "")  # the test keys have none
GARBAGE = "-----BEGIN PGP PUBLIC KEY BLOCK-----\nnonsense\n"


def run_gpg(home: Path, *args: str, data: bytes | None = None) -> bytes:
    """`gpg` in `home`, no passphrase asked; its output, or AssertionError with what it said."""
    done = subprocess.run(
        [
            GPG,
            "--homedir",
            str(home),
            "--batch",
            "--yes",
            "--pinentry-mode",
            "loopback",
            *PASS,
            *args,
        ],
        input=data,
        capture_output=True,
        timeout=60,
        check=False,
    )
    if done.returncode != 0:
        raise AssertionError(done.stderr.decode("utf-8", "replace"))
    return done.stdout


@dataclass(frozen=True)
class Keys:
    """The owner's GnuPG home, and armoured public keys of every kind with their fingerprints."""

    home: Path
    good: str
    good_fpr: str
    other: str
    other_fpr: str
    expired: str
    expired_fpr: str
    revoked: str
    sign_only: str
    private: str

    @property
    def two(self) -> str:
        """Two public keys in one block."""
        return self.good + self.other

    def pasted(self, which: str) -> str:
        """What is pasted for a kind: a key above, "garbage" (armour around nonsense), "empty"."""
        made = {"garbage": GARBAGE, "empty": "", "huge": "x" * (64 * 1024 + 1)}
        return made[which] if which in made else str(getattr(self, which))

    def gpg(self, *args: str, data: bytes | None = None) -> bytes:
        return run_gpg(self.home, *args, data=data)

    def decrypt(self, sealed: bytes) -> bytes:
        """Decrypted with the owner's secret key, as their mail client or Kleopatra would."""
        return self.gpg("--quiet", "--decrypt", data=sealed)

    def binary(self, fpr: str) -> bytes:
        """A public key as a binary key file (what `gpg --export` writes)."""
        return self.gpg("--export", fpr)


def _fpr(home: Path, uid: str) -> str:
    listing = run_gpg(home, "--with-colons", "--list-keys", f"={uid}").decode()
    return next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr"))


def _new_key(home: Path, uid: str, usage: str = "default", past: bool = False) -> str:
    faked = ["--faked-system-time", "20200101T000000!"] if past else []
    algo = "future-default" if usage == "default" else "ed25519"
    run_gpg(home, *faked, "--quick-gen-key", uid, algo, usage, "1d" if past else "2y")
    return _fpr(home, uid)


@contextmanager
def _home() -> Iterator[Path]:
    """A new GnuPG home (0700) for the block; its agent stopped and the home removed after."""
    home = Path(tempfile.mkdtemp(prefix="gpg-owner-"))
    os.chmod(home, 0o700)
    try:
        yield home
    finally:
        subprocess.run(
            [GPGCONF, "--homedir", str(home), "--kill", "all"],
            capture_output=True,
            check=False,
            timeout=10,
        )
        shutil.rmtree(home, ignore_errors=True)


def public_key(uid: str) -> str:
    """One good armoured public key, made in a home that is gone when this returns."""
    with _home() as home:
        return run_gpg(home, "--armor", "--export", _new_key(home, uid)).decode()


@contextmanager
def made_keys(owner: str) -> Iterator[Keys]:
    """Keys made with `gpg` in a new home (0700) for the block; `owner` is the good key's uid."""
    with _home() as home:
        good = _new_key(home, owner)
        other = _new_key(home, "Other <other@example.org>")
        expired = _new_key(home, "Old Key <old@example.org>", past=True)
        revoked = _new_key(home, "Revoked <revoked@example.org>")
        certificate = (home / "openpgp-revocs.d" / f"{revoked}.rev").read_text()
        run_gpg(home, "--import", data=certificate.replace(":-----BEGIN", "-----BEGIN").encode())
        sign_only = _new_key(home, "Signer <signer@example.org>", usage="sign")

        def public(fpr: str) -> str:
            return run_gpg(home, "--armor", "--export", fpr).decode()

        yield Keys(
            home=home,
            good=public(good),
            good_fpr=good,
            other=public(other),
            other_fpr=other,
            expired=public(expired),
            expired_fpr=expired,
            revoked=public(revoked),
            sign_only=public(sign_only),
            private=run_gpg(home, "--armor", "--export-secret-keys", good).decode(),
        )
