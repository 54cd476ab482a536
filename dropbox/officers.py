"""Officers: accounts, passphrases (Argon2id hash and wrapped key pair) and TOTP."""

from __future__ import annotations

import re
import secrets
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import argon2
import pyotp
from nacl.public import PrivateKey, PublicKey, SealedBox
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from crypto.errors import DecryptionError
from crypto.kdf import SALT_BYTES, KdfCost, derive_key
from crypto.keys import generate_keypair, unwrap_secret_key, wrap_secret_key
from dropbox import audit
from dropbox.errors import DropboxError, NotFound
from dropbox.models import OfficeGrant, Officer
from dropbox.sessions import end_officer_sessions

USERNAME = re.compile(r"^[a-z0-9][a-z0-9._-]{1,63}$")
MIN_PASSPHRASE_CHARS = 12
MAX_DISPLAY_NAME = 200  # the column's length


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
    if not USERNAME.fullmatch(username):
        raise DropboxError(
            "a username is 2 to 64 characters: lower-case letters, digits, '.', '_' or '-'"
        )
    return username


def check_display_name(display_name: str) -> str:
    """Return the display name, stripped, if it fits its column; raise DropboxError if not."""
    display_name = display_name.strip()
    if len(display_name) > MAX_DISPLAY_NAME or any(
        unicodedata.category(c) == "Cc" for c in display_name
    ):
        raise DropboxError(
            f"a display name is at most {MAX_DISPLAY_NAME} characters, without control characters"
        )
    return display_name


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
    return _new_credentials(officer, passphrase, cost)[1]


def _new_credentials(officer: Officer, passphrase: str, cost: KdfCost) -> tuple[PrivateKey, str]:
    """Set a new key pair, passphrase and TOTP secret; return the secret key and TOTP secret."""
    secret_key = generate_keypair()
    officer.public_key = bytes(secret_key.public_key)
    officer.password_hash = password_hasher(cost).hash(passphrase)
    officer.wrapped_secret_key = wrap_secret_key(secret_key, passphrase, cost)
    return secret_key, enrol_totp(officer)


def enrol_totp(officer: Officer) -> str:
    """Give the officer a new TOTP secret, sealed to their own public key; return it."""
    if officer.public_key is None:
        raise DropboxError("the officer has no key pair yet")
    secret = pyotp.random_base32()
    _seal_totp(officer, secret)
    officer.totp_last_counter = 0
    return secret


def _seal_totp(officer: Officer, secret: str) -> None:
    if officer.public_key is None:
        raise DropboxError("the officer has no key pair yet")
    officer.totp_secret_sealed = bytes(
        SealedBox(PublicKey(officer.public_key)).encrypt(secret.encode("ascii"))
    )


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
    """Unwrap the officer's secret key with the passphrase; None if it is wrong.

    One Argon2id derivation, whatever the outcome: the authenticated
    unwrapping is the passphrase check (the stored hash is not verified too,
    which would make a right passphrase cost twice a wrong one). An officer
    without credentials costs a derivation at `cost` all the same.
    """
    if officer.wrapped_secret_key is None or officer.password_hash is None:
        _dummy_derivation(passphrase, cost)
        return None
    try:
        return unwrap_secret_key(officer.wrapped_secret_key, passphrase)
    except DecryptionError:
        return None


def _dummy_derivation(passphrase: str, cost: KdfCost) -> None:
    """The memory-hard work of an unwrapping, where there is nothing to unwrap."""
    derive_key(passphrase.encode("utf-8", "surrogatepass"), secrets.token_bytes(SALT_BYTES), cost)


def _rehash_if_cost_rose(
    officer: Officer, passphrase: str, secret_key: PrivateKey, cost: KdfCost
) -> None:
    """After a full sign-in: re-hash and re-wrap at the configured cost if it changed."""
    assert officer.password_hash is not None  # noqa: S101 - the caller unwrapped with it set
    hasher = password_hasher(cost)
    try:
        stale = hasher.check_needs_rehash(officer.password_hash)
    except argon2.exceptions.InvalidHashError:
        stale = True
    if stale:
        officer.password_hash = hasher.hash(passphrase)
        officer.wrapped_secret_key = wrap_secret_key(secret_key, passphrase, cost)


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


# --- signing in ----------------------------------------------------------------

TOTP_STEP = 30
ENROLMENT_VALID = timedelta(hours=72)
# The audit actor of a failed sign-in with a username no officer has: never the typed
# text (it may be a passphrase typed into the wrong field), and no username can be it.
UNKNOWN_ACTOR = "(unknown)"


@dataclass(frozen=True)
class SignInResult:
    """The outcome of a sign-in: the officer and key, or neither (the failure is recorded)."""

    officer: Officer | None = None
    secret_key: PrivateKey | None = None

    @property
    def ok(self) -> bool:
        """True if the officer may come in."""
        return self.officer is not None and self.secret_key is not None


def _totp_counter(secret: str, code: str, now: datetime) -> int | None:
    """The time step whose code this is (current, previous or next), or None."""
    code = code.strip().replace(" ", "")
    if not (len(code) == 6 and code.isdigit()):
        return None
    totp = pyotp.TOTP(secret)
    current = int(now.replace(tzinfo=UTC).timestamp()) // TOTP_STEP
    for counter in (current - 1, current, current + 1):
        if secrets.compare_digest(totp.generate_otp(counter), code):
            return counter
    return None


def _locked_officer(session: Session, username: str) -> Officer | None:
    """The officer called `username`, row-locked for this transaction; None if there is none.

    Locked (PostgreSQL; SQLite's BEGIN IMMEDIATE already serialises), so that
    concurrent uses of one account's codes are checked one after the other and
    one code cannot be used twice.
    """
    if not USERNAME.fullmatch(username):  # no other text names an officer (or reaches the database)
        return None
    return session.execute(
        select(Officer)
        .where(Officer.username == username)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).scalar_one_or_none()


def sign_in(
    session: Session,
    username: str,
    passphrase: str,
    code: str,
    cost: KdfCost,
    now: datetime | None = None,
) -> SignInResult:
    """Check passphrase and TOTP code; a code already used (or older) is refused.

    Every attempt costs exactly one Argon2id derivation and writes one audit
    event, whether the username exists, the account is active, the
    passphrase is right or only the code is wrong, so that neither the answer
    nor its timing tells these apart. (Limiting attempts is the caller's:
    journalist_interface.auth.SignInGuard, which treats every username alike.)
    """
    now = now or _now()
    officer = _locked_officer(session, username)
    usable = officer is not None and officer.active and officer.totp_secret_sealed is not None
    if officer is not None and usable:
        secret_key = unlock(officer, passphrase, cost)
    else:
        _dummy_derivation(passphrase, cost)
        secret_key = None
    counter = None
    if officer is not None and secret_key is not None:
        counter = _totp_counter(totp_secret(officer, secret_key), code, now)
    if officer is None or secret_key is None or counter is None:
        return _failed(session, officer)
    if counter <= officer.totp_last_counter:
        return _failed(session, officer)
    officer.totp_last_counter = counter
    # Only now, with the code checked too: the extra work of a re-hash says nothing
    # an attacker did not already know.
    _rehash_if_cost_rose(officer, passphrase, secret_key, cost)
    audit.record(session, officer.username, "officer.sign_in")
    return SignInResult(officer=officer, secret_key=secret_key)


def _failed(session: Session, officer: Officer | None) -> SignInResult:
    """Record a failed sign-in, for a known username or not (the same write either way)."""
    actor = officer.username if officer is not None else UNKNOWN_ACTOR
    audit.record(session, actor, "officer.sign_in_failed")
    return SignInResult()


def confirm_action(session: Session, officer: Officer, secret_key: PrivateKey, code: str) -> bool:
    """An administrator's confirmation: a fresh code of their own, burned as at sign-in.

    The officer's row is locked first, so that one code cannot confirm two
    actions at once; a code already used (to sign in, or for an earlier
    action) or older is refused.
    """
    locked = _locked_officer(session, officer.username)
    if locked is None or not locked.active or locked.id != officer.id:
        return False
    return confirm_totp(locked, secret_key, code)


def replace_totp(session: Session, officer: Officer, new_secret: str, code: str) -> bool:
    """Switch to a new TOTP device once a code from it checks out (that code is burned)."""
    counter = _totp_counter(new_secret, code, _now())
    if counter is None:
        return False
    _seal_totp(officer, new_secret)
    officer.totp_last_counter = counter
    audit.record(session, officer.username, "officer.totp_reenrol")
    return True


def confirm_totp(officer: Officer, secret_key: PrivateKey, code: str) -> bool:
    """Check a code from a newly enrolled device, and burn it."""
    counter = _totp_counter(totp_secret(officer, secret_key), code, _now())
    if counter is None or counter <= officer.totp_last_counter:
        return False
    officer.totp_last_counter = counter
    return True


# --- enrolment and deactivation --------------------------------------------------


def create_enrolment(
    session: Session,
    username: str,
    display_name: str,
    is_admin: bool,
    cost: KdfCost,
    actor: str,
) -> tuple[Officer, str]:
    """Create an officer who must enrol with a one-time code; return the officer and the code."""
    from crypto.recovery import generate_passphrase

    check_username(username)
    display_name = check_display_name(display_name)
    if session.execute(select(Officer.id).where(Officer.username == username)).first():
        raise DropboxError(f"an officer called {username!r} already exists")
    code = "-".join(generate_passphrase().split()[:5])
    officer = Officer(
        username=username,
        display_name=display_name or username,
        is_admin=is_admin,
        active=True,
        created_at=_now(),
        totp_last_counter=0,
        failed_logins=0,
        enrolment_code_hash=password_hasher(cost).hash(code),
        enrolment_expires_at=_now() + ENROLMENT_VALID,
    )
    session.add(officer)
    session.flush()
    audit.record(session, actor, "officer.invite", detail=username)
    return officer, code


def complete_enrolment(
    session: Session, username: str, code: str, passphrase: str, cost: KdfCost
) -> tuple[Officer, PrivateKey, str]:
    """Turn an enrolment code into credentials; return the officer, key and TOTP secret."""
    check_passphrase(passphrase)
    refused = DropboxError("that username and enrolment code do not match, or the code expired")
    officer = None
    if USERNAME.fullmatch(username):  # no other text names an officer (or reaches the database)
        officer = session.execute(
            select(Officer).where(Officer.username == username)
        ).scalar_one_or_none()
    pending = (
        officer is not None
        and officer.active
        and officer.enrolment_code_hash is not None
        and officer.enrolment_expires_at is not None
        and officer.enrolment_expires_at >= _now()
    )
    if officer is None or officer.enrolment_code_hash is None or not pending:
        # The work of a check all the same: timing does not tell which usernames
        # have an enrolment waiting.
        _dummy_derivation(code.strip().lower(), cost)
        raise refused
    try:
        password_hasher(cost).verify(officer.enrolment_code_hash, code.strip().lower())
    except (argon2.exceptions.VerificationError, argon2.exceptions.InvalidHashError):
        raise refused from None
    key, secret = _new_credentials(officer, passphrase, cost)
    officer.enrolment_code_hash = None
    officer.enrolment_expires_at = None
    audit.record(session, officer.username, "officer.enrol")
    return officer, key, secret


def end_sessions(session: Session, officer: Officer, keep_id_hash: bytes | None = None) -> None:
    """End the officer's sessions and API tokens (all, or all but the current session)."""
    end_officer_sessions(session, officer.id, keep_id_hash)


def deactivate(session: Session, officer: Officer, actor: str) -> None:
    """Deactivate an officer: their sessions end and their office grants are removed."""
    officer.active = False
    end_sessions(session, officer)
    session.execute(delete(OfficeGrant).where(OfficeGrant.officer_id == officer.id))
    audit.record(session, actor, "officer.deactivate", detail=officer.username)
