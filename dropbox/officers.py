"""Officers: accounts, passphrases (Argon2id hash and wrapped key pair) and TOTP."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import argon2
import pyotp
from nacl.public import PrivateKey, PublicKey, SealedBox
from sqlalchemy import select
from sqlalchemy.orm import Session

from crypto.errors import DecryptionError
from crypto.kdf import KdfCost
from crypto.keys import generate_keypair, unwrap_secret_key, wrap_secret_key
from dropbox import audit
from dropbox.errors import DropboxError, NotFound
from dropbox.models import Officer

USERNAME = re.compile(r"^[a-z0-9][a-z0-9._-]{1,63}$")
MIN_PASSPHRASE_CHARS = 12


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None, microsecond=0)


def password_hasher(cost: KdfCost) -> argon2.PasswordHasher:
    """An Argon2id hasher at the configured cost (the cost is recorded in each hash)."""
    return argon2.PasswordHasher(
        time_cost=cost.iterations,
        memory_cost=max(cost.memory_bytes // 1024, 8),
        parallelism=1,
        type=argon2.Type.ID,
    )


def check_username(username: str) -> str:
    """Return the username if it is acceptable; raise DropboxError saying why not."""
    if not USERNAME.match(username):
        raise DropboxError(
            "a username is 2 to 64 characters: lower-case letters, digits, '.', '_' or '-'"
        )
    return username


def check_passphrase(passphrase: str) -> str:
    """Return the passphrase if it is long enough; raise DropboxError saying why not."""
    if len(passphrase) < MIN_PASSPHRASE_CHARS:
        raise DropboxError(f"a passphrase needs at least {MIN_PASSPHRASE_CHARS} characters")
    return passphrase


def get(session: Session, username: str) -> Officer:
    """The officer with this username, or NotFound."""
    officer = session.execute(
        select(Officer).where(Officer.username == username)
    ).scalar_one_or_none()
    if officer is None:
        raise NotFound(f"no officer is called {username!r}")
    return officer


def add(
    session: Session,
    username: str,
    passphrase: str,
    cost: KdfCost,
    actor: str,
    *,
    display_name: str = "",
    is_admin: bool = False,
) -> tuple[Officer, str]:
    """Create an enrolled officer; return the officer and their new TOTP secret (shown once)."""
    check_username(username)
    check_passphrase(passphrase)
    if session.execute(select(Officer.id).where(Officer.username == username)).first():
        raise DropboxError(f"an officer called {username!r} already exists")
    officer = Officer(
        username=username,
        display_name=display_name or username,
        is_admin=is_admin,
        active=True,
        created_at=_now(),
        totp_last_counter=0,
    )
    totp_secret = set_credentials(officer, passphrase, cost)
    session.add(officer)
    session.flush()
    audit.record(
        session, actor, "officer.add", detail=f"{username}{' (administrator)' if is_admin else ''}"
    )
    return officer, totp_secret


def set_credentials(officer: Officer, passphrase: str, cost: KdfCost) -> str:
    """Give an officer a new key pair, passphrase and TOTP secret; return the TOTP secret."""
    secret_key = generate_keypair()
    officer.public_key = bytes(secret_key.public_key)
    officer.password_hash = password_hasher(cost).hash(passphrase)
    officer.wrapped_secret_key = wrap_secret_key(secret_key, passphrase, cost)
    return enrol_totp(officer)


def enrol_totp(officer: Officer) -> str:
    """Give the officer a new TOTP secret, sealed to their own public key; return it."""
    if officer.public_key is None:
        raise DropboxError("the officer has no key pair yet")
    secret = pyotp.random_base32()
    officer.totp_secret_sealed = bytes(
        SealedBox(PublicKey(officer.public_key)).encrypt(secret.encode("ascii"))
    )
    officer.totp_last_counter = 0
    return secret


def totp_secret(officer: Officer, secret_key: PrivateKey) -> str:
    """Open the officer's TOTP secret with their secret key."""
    if officer.totp_secret_sealed is None:
        raise DropboxError("the officer has not enrolled a TOTP device")
    try:
        return SealedBox(secret_key).decrypt(officer.totp_secret_sealed).decode("ascii")
    except Exception as exc:
        raise DecryptionError() from exc


def provisioning_uri(officer: Officer, secret: str, issuer: str = "Dropbox reviewer") -> str:
    """The otpauth:// URI an authenticator app reads from a QR code."""
    return pyotp.TOTP(secret).provisioning_uri(name=officer.username, issuer_name=issuer)


def unlock(officer: Officer, passphrase: str, cost: KdfCost) -> PrivateKey | None:
    """Check the passphrase and unwrap the officer's secret key; None if it is wrong.

    Rehashes the password hash when the configured cost has risen.
    """
    if officer.password_hash is None or officer.wrapped_secret_key is None:
        return None
    hasher = password_hasher(cost)
    try:
        hasher.verify(officer.password_hash, passphrase)
    except argon2.exceptions.VerificationError:
        return None
    except argon2.exceptions.InvalidHashError:
        return None
    if hasher.check_needs_rehash(officer.password_hash):
        officer.password_hash = hasher.hash(passphrase)
    try:
        return unwrap_secret_key(officer.wrapped_secret_key, passphrase)
    except DecryptionError:
        return None


def change_passphrase(
    officer: Officer, secret_key: PrivateKey, new_passphrase: str, cost: KdfCost
) -> None:
    """Re-wrap the officer's key under a new passphrase (the key pair stays the same)."""
    check_passphrase(new_passphrase)
    officer.password_hash = password_hasher(cost).hash(new_passphrase)
    officer.wrapped_secret_key = wrap_secret_key(secret_key, new_passphrase, cost)


def list_all(session: Session) -> list[Officer]:
    """Every officer, by username."""
    return list(session.execute(select(Officer).order_by(Officer.username)).scalars())
