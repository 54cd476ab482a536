"""Officers: accounts, the verifier of their auth key, their opaque wrapped keys, and TOTP.

The case server never sees an officer's passphrase or secret key. On the
officer's own machine (the reviewer app) Argon2id(passphrase, salt) gives an
auth key and a wrapping key (`crypto.keys.derive_officer_keys`); the server
stores only `auth_key_verifier(auth_key)`, the officer's public key, and the
secret key wrapped under the wrapping key, which it cannot open. Sign-in
checks the auth key against the verifier together with a TOTP code (a code
is burned: a used or older one is refused). TOTP secrets are encrypted under
the instance's TOTP key, kept in instance.json and never in the database,
so a database dump alone does not reveal them.

`add` and `open_secret_key` are the exception: they run where the passphrase
is typed (the `dropbox officer add` command on the server's console, the
demo, tests), deriving as the reviewer app would.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import nacl.exceptions
import pyotp
from nacl.secret import Aead
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from crypto import xwing
from crypto.errors import DecryptionError
from crypto.kdf import SALT_BYTES, KdfCost
from crypto.keys import (
    AUTH_KEY_BYTES,
    WRAP_HEADER_BYTES,
    KeyChain,
    Recipient,
    auth_key_verifier,
    check_auth_key,
    derive_officer_keys,
    fake_salt,
    fingerprint,
    generate_hybrid_key,
    is_hybrid,
    is_sealed_to_kind_of,
    key_chain_bytes,
    public_key_from_bytes,
    unwrap_with_wrapping_key,
    wrap_header,
    wrap_parameters,
    wrap_with_wrapping_key,
)
from dropbox import audit
from dropbox.errors import DropboxError, NotFound
from dropbox.instance import TOTP_KEY_INFO, Instance
from dropbox.models import OfficeGrant, Officer
from dropbox.offices import stored_key
from dropbox.sessions import end_officer_sessions

USERNAME = re.compile(r"^[a-z0-9][a-z0-9._-]{1,63}$")
MIN_PASSPHRASE_CHARS = 12
MAX_DISPLAY_NAME = 200  # the column's length
# A wrap made by crypto.keys.wrap_with_wrapping_key: header, nonce, the key, tag. The key is
# an X25519 key's 32 bytes (officers enrolled before X-Wing) or a tagged chain of one X-Wing
# key (docs/format.md, "Secret keys").
WRAPPED_KEY_BYTES = WRAP_HEADER_BYTES + Aead.NONCE_SIZE + 32 + Aead.MACBYTES
WRAPPED_HYBRID_KEY_BYTES = WRAP_HEADER_BYTES + Aead.NONCE_SIZE + key_chain_bytes(1) + Aead.MACBYTES
# A TOTP secret as authenticator apps take it: base32, at least 128 bits.
TOTP_SECRET = re.compile(r"^[A-Z2-7]{26,64}$")


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None, microsecond=0)


def check_username(username: str) -> str:
    """Return the username if it is acceptable; raise DropboxError saying why not."""
    if not USERNAME.fullmatch(username):
        raise DropboxError(
            "a username is 2 to 64 characters: lower-case letters, digits, '.', '_' or '-'"
        )
    return username


def normalise_username(text: str) -> str:
    """A username as typed, as sign-in and enrolment compare it."""
    return text.strip().lower()


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
    """Return the passphrase if it is long enough; raise DropboxError saying why not.

    Checked where the passphrase is typed (here for `add`; the reviewer app
    checks its own forms): the server never receives one.
    """
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


def list_all(session: Session) -> list[Officer]:
    """Every officer, by username."""
    return list(session.execute(select(Officer).order_by(Officer.username)).scalars())


def enrolled(officer: Officer) -> bool:
    """True once the officer has credentials (an auth verifier, a key pair, a TOTP secret)."""
    return (
        officer.auth_verifier is not None
        and officer.public_key is not None
        and officer.wrapped_secret_key is not None
        and officer.totp_secret_sealed is not None
    )


# --- the TOTP secret, under the instance's key -----------------------------------------


def _instance_key(session: Session, person: bytes) -> bytes:
    """A key derived from the instance's TOTP key (bound to the session by Instance)."""
    key = session.info.get(TOTP_KEY_INFO)
    if not isinstance(key, bytes):
        # Fail closed: a secret stored without the key could not be read back.
        raise RuntimeError("this session has no TOTP key: open it through Instance")
    return hashlib.blake2b(b"", key=key, digest_size=32, person=person).digest()


def _totp_context(officer: Officer) -> bytes:
    # Bound to the officer's row: a secret copied into another row does not open.
    return f"dropbox-totp:{officer.id}".encode("ascii")


def _store_totp(session: Session, officer: Officer, secret: str) -> None:
    if officer.id is None:
        session.flush()
    box = Aead(_instance_key(session, b"dropbox-totp-enc"))
    officer.totp_secret_sealed = bytes(box.encrypt(secret.encode("ascii"), _totp_context(officer)))


def _open_totp(session: Session, officer: Officer) -> str | None:
    if officer.totp_secret_sealed is None:
        return None
    box = Aead(_instance_key(session, b"dropbox-totp-enc"))
    try:
        return box.decrypt(officer.totp_secret_sealed, _totp_context(officer)).decode("ascii")
    except (nacl.exceptions.CryptoError, ValueError, UnicodeDecodeError):
        return None


def check_totp_secret(secret: str) -> str:
    """The TOTP secret if it is base32 of at least 128 bits; DropboxError if not."""
    secret = secret.strip().replace(" ", "").upper()
    if not TOTP_SECRET.fullmatch(secret):
        raise DropboxError("the TOTP secret is not base32 text of 26 to 64 characters")
    return secret


def provisioning_uri(officer: Officer, secret: str, issuer: str = "Dropbox reviewer") -> str:
    """The otpauth:// URI an authenticator app reads from a QR code."""
    return pyotp.TOTP(secret).provisioning_uri(name=officer.username, issuer_name=issuer)


TOTP_STEP = 30


def _totp_counter(secret: str, code: str, now: datetime) -> int | None:
    """The time step whose code this is (current, previous or next), or None."""
    code = code.strip().replace(" ", "")
    if not (len(code) == 6 and code.isdigit()):
        return None
    totp = pyotp.TOTP(secret)
    current = int(now.replace(tzinfo=UTC).timestamp()) // TOTP_STEP
    found = None
    for counter in (current - 1, current, current + 1):
        if secrets.compare_digest(totp.generate_otp(counter), code):
            found = counter
    return found


def _burn(session: Session, officer: Officer, code: str, now: datetime | None = None) -> bool:
    """Check a code of the officer's own TOTP secret and burn it; a used or older one fails."""
    secret = _open_totp(session, officer)
    counter = _totp_counter(secret or _DUMMY_TOTP, code, now or _now())
    if secret is None or counter is None or counter <= officer.totp_last_counter:
        return False
    officer.totp_last_counter = counter
    return True


# --- keys checked as the server can check them ----------------------------------------

# Checked for names no officer has, so that the work is the same.
_DUMMY_VERIFIER = auth_key_verifier(secrets.token_bytes(AUTH_KEY_BYTES))
_DUMMY_TOTP = pyotp.random_base32()


def _check_auth(officer: Officer | None, auth_key: bytes) -> bool:
    """The auth key against the officer's verifier (a dummy one if there is none)."""
    verifier = officer.auth_verifier if officer is not None else None
    matches = check_auth_key(verifier or _DUMMY_VERIFIER, auth_key)
    return matches and verifier is not None


def _check_wrapped(wrapped: bytes, minimum: KdfCost) -> None:
    """A wrapped secret key as the reviewer app makes it, at no less than `minimum` cost."""
    if len(wrapped) not in (WRAPPED_KEY_BYTES, WRAPPED_HYBRID_KEY_BYTES):
        raise DropboxError("the wrapped secret key is not in the expected format")
    try:
        wrap_parameters(wrapped, minimum=minimum)
    except DecryptionError:
        raise DropboxError(
            "the wrapped secret key's header is not valid, or its key derivation is weaker than"
            f" this server requires ({minimum.iterations} passes,"
            f" {minimum.memory_bytes // 1024} KiB)"
        ) from None


def _check_auth_key(auth_key: bytes) -> None:
    if len(auth_key) != AUTH_KEY_BYTES:
        raise DropboxError(f"an auth key is {AUTH_KEY_BYTES} bytes")


# --- officers made where the passphrase is typed -------------------------------------


@dataclass(frozen=True)
class Credentials:
    """What the reviewer app sends at enrolment (and keeps: the secret key)."""

    auth_key: bytes
    public_key: bytes
    wrapped_secret_key: bytes
    secret_key: KeyChain


def _check_new_key(public_key: bytes, wrapped: bytes, minimum: KdfCost) -> Recipient:
    """An officer's new key as their reviewer app sends it: X-Wing, wrapped as X-Wing keys are.

    The public key; DropboxError saying what is wrong otherwise (at enrolment,
    and when an officer enrolled before X-Wing replaces their key).
    """
    try:
        key: Recipient | None = public_key_from_bytes(public_key)
    except (nacl.exceptions.CryptoError, ValueError, TypeError):
        key = None
    if key is None or not is_hybrid(key):
        raise DropboxError(f"that is not an X-Wing public key ({xwing.PUBLIC_KEY_BYTES} bytes)")
    _check_wrapped(wrapped, minimum)
    if len(wrapped) != WRAPPED_HYBRID_KEY_BYTES:
        raise DropboxError("the wrapped secret key is not in the expected format")
    return key


def new_credentials(passphrase: str, cost: KdfCost) -> Credentials:
    """Make a key (X-Wing) and wrap it under the passphrase, as the reviewer app does.

    Runs where the passphrase is typed: never on the case server's request path.
    """
    salt = secrets.token_bytes(SALT_BYTES)
    derived = derive_officer_keys(passphrase, salt, cost)
    secret_key = generate_hybrid_key()
    return Credentials(
        auth_key=derived.auth_key,
        public_key=bytes(secret_key.public_key),
        wrapped_secret_key=wrap_with_wrapping_key(secret_key, derived.wrapping_key, salt, cost),
        secret_key=secret_key,
    )


def derive_auth_key(officer: Officer, passphrase: str, minimum: KdfCost) -> tuple[bytes, bytes]:
    """(auth key, wrapping key) from the passphrase and the officer's wrap header.

    Runs where the passphrase is typed (the CLI, tests), as the reviewer app does.
    """
    if officer.wrapped_secret_key is None:
        raise DropboxError(f"{officer.username} has not enrolled")
    cost, salt = wrap_parameters(officer.wrapped_secret_key, minimum=minimum)
    derived = derive_officer_keys(passphrase, salt, cost)
    return derived.auth_key, derived.wrapping_key


def open_secret_key(officer: Officer, passphrase: str, minimum: KdfCost) -> KeyChain:
    """Unwrap the officer's secret key with their passphrase; DecryptionError if it is wrong.

    Runs where the passphrase is typed (the CLI, tests), never on the case server.
    """
    _, wrapping_key = derive_auth_key(officer, passphrase, minimum)
    assert officer.wrapped_secret_key is not None  # noqa: S101 - checked by derive_auth_key
    return unwrap_with_wrapping_key(officer.wrapped_secret_key, wrapping_key)


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
    """Create an enrolled officer; return the officer and their new TOTP secret (shown once).

    This runs where the passphrase is typed (`dropbox officer add` at the
    server's console, the demo, tests): it derives the auth and wrapping keys
    itself, as the reviewer app does at enrolment, and stores what the server
    would get from the app: the auth key's verifier, the public key and the
    wrapped secret key. The passphrase is not kept.
    """
    check_username(username)
    check_passphrase(passphrase)
    display_name = check_display_name(display_name)
    if session.execute(select(Officer.id).where(Officer.username == username)).first():
        raise DropboxError(f"an officer called {username!r} already exists")
    made = new_credentials(passphrase, cost)
    officer = Officer(
        username=username,
        display_name=display_name or username,
        is_admin=is_admin,
        active=True,
        created_at=_now(),
        totp_last_counter=0,
        auth_verifier=auth_key_verifier(made.auth_key),
        public_key=made.public_key,
        wrapped_secret_key=made.wrapped_secret_key,
    )
    session.add(officer)
    session.flush()
    totp_secret = pyotp.random_base32()
    _store_totp(session, officer, totp_secret)
    audit.record(
        session, actor, "officer.add", detail=f"{username}{' (administrator)' if is_admin else ''}"
    )
    return officer, totp_secret


# --- signing in ------------------------------------------------------------------------

ENROLMENT_VALID = timedelta(hours=72)
# The audit actor of a failed sign-in with a username no officer has: never the typed
# text (it may be a passphrase typed into the wrong field), and no username can be it.
UNKNOWN_ACTOR = "(unknown)"


def signin_header(session: Session, instance: Instance, username: str) -> bytes:
    """The wrap header (cost, salt) the reviewer app derives with, before signing in.

    For an active, enrolled officer: the header of their wrapped key. For any
    other name (unknown, not enrolled, deactivated): a header of the same
    shape at the configured cost with a salt derived from the name and a
    server secret, so it is the same at every request and tells nothing.
    """
    officer = _find(session, username)
    if officer is not None and officer.active and enrolled(officer):
        assert officer.wrapped_secret_key is not None  # noqa: S101 - enrolled
        return bytes(officer.wrapped_secret_key[:WRAP_HEADER_BYTES])
    return wrap_header(
        instance.config.crypto.kdf_cost, fake_salt(instance.secrets.app_secret, username)
    )


def _find(session: Session, username: str) -> Officer | None:
    """The officer called `username`; None for any text that is no username."""
    if not USERNAME.fullmatch(username):  # no other text names an officer (or reaches the database)
        return None
    return session.execute(select(Officer).where(Officer.username == username)).scalar_one_or_none()


def _locked_officer(session: Session, username: str) -> Officer | None:
    """The officer called `username`, row-locked for this transaction; None if there is none.

    Locked (PostgreSQL; SQLite's BEGIN IMMEDIATE already serialises), so that
    concurrent uses of one account's codes are checked one after the other and
    one code cannot be used twice.
    """
    if not USERNAME.fullmatch(username):
        return None
    return session.execute(
        select(Officer)
        .where(Officer.username == username)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).scalar_one_or_none()


@dataclass(frozen=True)
class SignInResult:
    """The outcome of a sign-in: the officer, or None (the failure is recorded)."""

    officer: Officer | None = None

    @property
    def ok(self) -> bool:
        """True if the officer may come in."""
        return self.officer is not None


def sign_in(
    session: Session,
    username: str,
    auth_key: bytes,
    code: str,
    now: datetime | None = None,
) -> SignInResult:
    """Check the auth key and a TOTP code; a code already used (or older) is refused.

    The same work for every attempt, whether the username exists, the
    account is active and enrolled, or only the code is wrong: a check
    against a dummy verifier and a dummy TOTP secret where there is none,
    and one audit event either way. (Limiting attempts is the caller's:
    case_server.signin.SignInGuard, which treats every username alike.)
    """
    now = now or _now()
    officer = _locked_officer(session, username)
    usable = officer is not None and officer.active and enrolled(officer)
    key_ok = _check_auth(officer if usable else None, auth_key)
    secret = _open_totp(session, officer) if officer is not None and usable else None
    counter = _totp_counter(secret or _DUMMY_TOTP, code, now)
    if officer is None or not usable or not key_ok or secret is None or counter is None:
        return _failed(session, officer)
    if counter <= officer.totp_last_counter:
        return _failed(session, officer)
    officer.totp_last_counter = counter
    audit.record(session, officer.username, "officer.sign_in")
    return SignInResult(officer=officer)


def _failed(session: Session, officer: Officer | None) -> SignInResult:
    """Record a failed sign-in, for a known username or not (the same write either way)."""
    actor = officer.username if officer is not None else UNKNOWN_ACTOR
    audit.record(session, actor, "officer.sign_in_failed")
    return SignInResult()


def confirm_action(session: Session, officer: Officer, code: str) -> bool:
    """An administrator's confirmation: a fresh code of their own, burned as at sign-in.

    The officer's row is locked first, so that one code cannot confirm two
    actions at once; a code already used (to sign in, or for an earlier
    action) or older is refused.
    """
    locked = _locked_officer(session, officer.username)
    if locked is None or not locked.active or locked.id != officer.id:
        return False
    return _burn(session, locked, code)


# --- the signed-in officer's own credentials -------------------------------------------


def _confirmed(session: Session, officer: Officer, auth_key: bytes, code: str) -> Officer:
    """The officer's row, locked, once their current auth key and a fresh code (burned) check.

    Both are checked whatever the first gives, and either failing says the
    same thing, so that the answer does not tell which was wrong.
    """
    locked = _locked_officer(session, officer.username)
    if locked is None or not locked.active or not enrolled(locked):
        raise DropboxError(WRONG_KEY_OR_CODE)
    key_ok = _check_auth(locked, auth_key)
    if not (_burn(session, locked, code) and key_ok):
        raise DropboxError(WRONG_KEY_OR_CODE)
    return locked


WRONG_KEY_OR_CODE = "the passphrase or the code is not right; a code works only once"


def change_passphrase(
    session: Session,
    officer: Officer,
    auth_key: bytes,
    code: str,
    new_auth_key: bytes,
    new_wrapped: bytes,
    *,
    minimum: KdfCost,
    keep_id_hash: bytes | None = None,
) -> None:
    """Replace the verifier and the wrapped key (re-wrapped on the officer's machine).

    Needs the current auth key and a fresh TOTP code (burned). The key pair
    stays the same; the server cannot check that the new wrap holds it, only
    that its header parses at no less than `minimum` cost. The officer's
    other sessions and tokens end (all but `keep_id_hash`). DropboxError
    saying why if refused.
    """
    _check_auth_key(new_auth_key)
    _check_wrapped(new_wrapped, minimum)
    locked = _confirmed(session, officer, auth_key, code)
    locked.auth_verifier = auth_key_verifier(new_auth_key)
    locked.wrapped_secret_key = new_wrapped
    end_sessions(session, locked, keep_id_hash)
    audit.record(session, locked.username, "officer.passphrase")


class GrantsChanged(DropboxError):
    """The offices re-sealed with a new key are not the ones the officer holds grants for now."""


def replace_key(
    session: Session,
    officer: Officer,
    auth_key: bytes,
    code: str,
    *,
    new_auth_key: bytes,
    public_key: bytes,
    wrapped: bytes,
    grants: dict[str, bytes],
    minimum: KdfCost,
    keep_id_hash: bytes | None = None,
) -> None:
    """Give an officer enrolled before X-Wing the X-Wing key their reviewer app made.

    On the officer's machine the app made the key, wrapped it under their
    passphrase and sealed each office key they hold to it (`grants`: office
    code -> sealed key); here, in this one transaction, the public key, the
    wrap, the verifier and every grant of the officer are replaced. Needs the
    current auth key and a fresh TOTP code (burned), as a passphrase change
    does. Refused (DropboxError saying why, nothing changed): a key that is
    not X-Wing, an officer whose key is X-Wing already, a wrap or a grant not
    in the shape an X-Wing key gives; GrantsChanged if `grants` does not name
    exactly the offices the officer holds now (a grant given or taken since
    the app looked). The officer's other sessions and tokens end (all but
    `keep_id_hash`); one `officer.rekey` event names both fingerprints.
    """
    _check_auth_key(new_auth_key)
    new_key = _check_new_key(public_key, wrapped, minimum)
    for office, sealed in grants.items():
        if not is_sealed_to_kind_of(sealed, new_key):
            raise DropboxError(f"the key of office {office} is not sealed to an X-Wing key")
    locked = _confirmed(session, officer, auth_key, code)
    old_key = stored_key(locked.public_key)
    if old_key is None:
        raise DropboxError("your key on the server is damaged: ask an administrator")
    if is_hybrid(old_key):
        raise DropboxError("your key is X-Wing already: there is nothing to replace")
    held = {
        grant.office_code: grant
        for grant in session.execute(
            select(OfficeGrant).where(OfficeGrant.officer_id == locked.id)
        ).scalars()
    }
    if set(held) != set(grants):
        raise GrantsChanged(
            "your offices changed while your new key was being made: nothing was changed; try again"
        )
    for office, grant in held.items():
        grant.sealed_office_key = bytes(grants[office])
    locked.public_key = bytes(public_key)
    locked.wrapped_secret_key = bytes(wrapped)
    locked.auth_verifier = auth_key_verifier(new_auth_key)
    end_sessions(session, locked, keep_id_hash)
    audit.record(
        session,
        locked.username,
        "officer.rekey",
        detail=(
            f"{locked.username} {fingerprint(new_key)} replaces {fingerprint(old_key)};"
            f" {len(held)} grants re-sealed"
        ),
    )


def replace_totp(
    session: Session, officer: Officer, auth_key: bytes, secret: str, code: str
) -> None:
    """Switch to a new TOTP secret once a code from it checks out (that code is burned).

    Needs the current auth key too: a stolen token alone cannot move the
    second factor to another device. DropboxError saying why if refused.
    """
    secret = check_totp_secret(secret)
    locked = _locked_officer(session, officer.username)
    if locked is None or not locked.active or not _check_auth(locked, auth_key):
        raise DropboxError("the passphrase is not right")
    counter = _totp_counter(secret, code, _now())
    if counter is None:
        raise DropboxError("that code is not right for the new secret; wait for the next one")
    _store_totp(session, locked, secret)
    locked.totp_last_counter = counter
    audit.record(session, locked.username, "officer.totp_reenrol")


# --- enrolment, re-invitation and deactivation -----------------------------------------

ENROLMENT_REFUSED = "that username and enrolment code do not match, or the code expired"


def _new_code() -> str:
    from crypto.recovery import generate_passphrase

    return "-".join(generate_passphrase().split()[:5])


def _code_hash(session: Session, code: str) -> str:
    """A keyed hash of an enrolment code (keyed by an instance secret, not in the database)."""
    text = code.strip().lower().replace(" ", "-").encode("utf-8", "surrogatepass")
    key = _instance_key(session, b"dropbox-enrolcod")
    return hashlib.blake2b(text, key=key, digest_size=32).hexdigest()


def _set_code(session: Session, officer: Officer) -> str:
    code = _new_code()
    officer.enrolment_code_hash = _code_hash(session, code)
    officer.enrolment_expires_at = _now() + ENROLMENT_VALID
    return code


def create_enrolment(
    session: Session,
    username: str,
    display_name: str,
    is_admin: bool,
    actor: str,
) -> tuple[Officer, str]:
    """Create an officer who must enrol with a one-time code; return the officer and the code."""
    username = normalise_username(username)
    check_username(username)
    display_name = check_display_name(display_name)
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
    code = _set_code(session, officer)
    session.add(officer)
    session.flush()
    audit.record(
        session,
        actor,
        "officer.invite",
        detail=f"{username}{' (administrator)' if is_admin else ''}",
    )
    return officer, code


def reinvite(session: Session, officer: Officer, actor: str) -> str:
    """A new enrolment code for an existing officer; their old credentials and grants go.

    For a forgotten passphrase, a lost key, or an officer made before the
    reviewer app (migration 0002). Their sessions end; an administrator
    grants their offices again after they enrol.
    """
    if not officer.active:
        raise DropboxError(f"{officer.username} is deactivated")
    _clear_credentials(session, officer)
    code = _set_code(session, officer)
    audit.record(session, actor, "officer.reinvite", detail=officer.username)
    return code


def _clear_credentials(session: Session, officer: Officer) -> None:
    officer.auth_verifier = None
    officer.public_key = None
    officer.wrapped_secret_key = None
    officer.totp_secret_sealed = None
    officer.totp_last_counter = 0
    session.execute(delete(OfficeGrant).where(OfficeGrant.officer_id == officer.id))
    end_sessions(session, officer)


def check_enrolment(session: Session, username: str, code: str) -> Officer:
    """The officer this one-time code enrols now; DropboxError (alike for every cause) if none."""
    officer = _find(session, normalise_username(username))
    given = _code_hash(session, code)
    stored = officer.enrolment_code_hash if officer is not None else None
    # Compared whether or not there is a code to compare with: the same work either way.
    matches = hmac.compare_digest(given, stored or "0" * len(given))
    pending = (
        officer is not None
        and officer.active
        and stored is not None
        and officer.enrolment_expires_at is not None
        and officer.enrolment_expires_at >= _now()
    )
    if officer is None or not pending or not matches:
        raise DropboxError(ENROLMENT_REFUSED)
    return officer


def complete_enrolment(
    session: Session,
    username: str,
    code: str,
    auth_key: bytes,
    public_key: bytes,
    wrapped: bytes,
    totp_secret: str,
    totp_code: str,
    *,
    minimum: KdfCost,
) -> Officer:
    """Turn a one-time enrolment code into credentials made on the officer's machine.

    Stores the auth key's verifier (never the key), the public key, the
    wrapped secret key (opaque here) and the TOTP secret (encrypted under the
    instance's key) once a code from that secret checks out. The enrolment
    code then stops working. DropboxError saying why if refused.
    """
    officer = check_enrolment(session, username, code)
    _check_auth_key(auth_key)
    # A new officer's key is X-Wing (hybrid post-quantum): grants sealed to it are too.
    _check_new_key(public_key, wrapped, minimum)
    secret = check_totp_secret(totp_secret)
    counter = _totp_counter(secret, totp_code, _now())
    if counter is None:
        raise DropboxError(
            "that code is not right for the new authenticator; wait for the next one and try again"
        )
    officer.auth_verifier = auth_key_verifier(auth_key)
    officer.public_key = bytes(public_key)
    officer.wrapped_secret_key = bytes(wrapped)
    _store_totp(session, officer, secret)
    officer.totp_last_counter = counter
    officer.enrolment_code_hash = None
    officer.enrolment_expires_at = None
    audit.record(session, officer.username, "officer.enrol")
    return officer


def end_sessions(session: Session, officer: Officer, keep_id_hash: bytes | None = None) -> None:
    """End the officer's sessions and API tokens (all, or all but the one given)."""
    end_officer_sessions(session, officer.id, keep_id_hash)


def deactivate(session: Session, officer: Officer, actor: str) -> None:
    """Deactivate an officer: their sessions end and their office grants are removed."""
    officer.active = False
    officer.enrolment_code_hash = None
    officer.enrolment_expires_at = None
    end_sessions(session, officer)
    session.execute(delete(OfficeGrant).where(OfficeGrant.officer_id == officer.id))
    audit.record(session, actor, "officer.deactivate", detail=officer.username)
