"""Signing in, enrolment and the signed-in officer's own account, under /api/v2.

The passphrase never arrives here. Before signing in, the reviewer app asks
for the officer's wrap header (`POST /signin/params`: cost and salt; a
stable fake one for any name that is not an enrolled officer's), derives
the auth key and the wrapping key on the officer's machine, and sends only
the auth key and a TOTP code (`POST /signin`). Failed attempts are counted
per username (and per known device) in the limiter's shared storage, alike
for names that exist and names that do not (`SignInGuard`).

Enrolment (`/enrol/check`, `/enrol`) turns a one-time code from an
administrator into credentials made on the officer's machine. `/me` gives
the app what it opens locally: the wrapped secret key and the office keys
sealed to the officer.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import Blueprint, Flask, Response, current_app, request
from flask_limiter import Limiter
from itsdangerous import BadData, URLSafeTimedSerializer
from limits import RateLimitItemPerSecond
from limits.storage import Storage
from limits.strategies import FixedWindowRateLimiter
from sqlalchemy import select
from sqlalchemy.orm import Session

from case_server import tokens
from case_server.errors import ApiError
from case_server.wire import read
from dropbox import api_schema as schema
from dropbox import audit, notify, officers, openpgp
from dropbox.api_schema import dump
from dropbox.config import Config
from dropbox.errors import DropboxError
from dropbox.models import Office, OfficeGrant, Officer, Outcome, Status
from dropbox.sessions import token_id_hash

PREFIX = "/api/v2"
MAX_USERNAME_CHARS = 256
SIGNIN_REFUSED = "the username, passphrase or code is not right; a code works only once"


# --- failed sign-ins: counted alike for every username, never against a known device ---

FAILURES_BEFORE_LOCK = 5
LOCK_WINDOW = timedelta(minutes=1)
DEVICE_LIFETIME = timedelta(days=180)
_ATTEMPTS = RateLimitItemPerSecond(
    FAILURES_BEFORE_LOCK, int(LOCK_WINDOW.total_seconds()), namespace="dropbox-case-signin"
)


@dataclass(frozen=True)
class Attempt:
    """Whose budget a sign-in attempt spends: a known device's, or its username's."""

    username_digest: str
    device_id: str | None

    @property
    def counter(self) -> tuple[str, ...]:
        """The limiter identifiers of that budget."""
        return ("device", self.device_id) if self.device_id else ("user", self.username_digest)


class SignInGuard:
    """Failed sign-ins counted per username and per device, in the limiter's shared storage.

    Every attempt without a device token spends its username's budget, the
    same whether an officer has that username or not: FAILURES_BEFORE_LOCK
    attempts in a LOCK_WINDOW, then that username is refused (without any
    check) until the window ends; a success clears it. A reviewer app where
    the officer signed in before brings a signed device token bound to that
    username, and spends that device's own budget instead: a flood against
    the username does not reach it. Usernames are stored only as a keyed
    digest, so the storage (Redis) does not list who was tried.
    """

    def __init__(self, storage: Storage, secret: bytes) -> None:
        self._limiter = FixedWindowRateLimiter(storage)
        self._key = hashlib.blake2b(secret, person=b"dropbox-casesign").digest()
        self._devices = URLSafeTimedSerializer(secret, salt="dropbox-case-device")

    def username_digest(self, username: str) -> str:
        """A keyed digest of any text typed as a username."""
        data = username.encode("utf-8", "surrogatepass")
        return hashlib.blake2b(data, key=self._key, digest_size=16).hexdigest()

    def device_token(self, username: str, device_id: str | None = None) -> str:
        """A signed token naming a device (new, or the given one) and the username it serves."""
        return self._devices.dumps([self.username_digest(username), device_id or _new_device_id()])

    def device_id(self, token: str | None, username: str) -> str | None:
        """The device a token names, if the token is genuine, unexpired and for this username."""
        if not token or len(token) > 512:
            return None
        try:
            loaded = self._devices.loads(token, max_age=int(DEVICE_LIFETIME.total_seconds()))
        except (BadData, UnicodeError, ValueError, TypeError):
            return None
        if not (isinstance(loaded, list) and len(loaded) == 2):
            return None
        digest, device_id = loaded
        if not (isinstance(digest, str) and isinstance(device_id, str) and device_id):
            return None
        return device_id if secrets.compare_digest(digest, self.username_digest(username)) else None

    def attempt(self, username: str, device_token: str | None) -> Attempt:
        """The attempt of this username from a client with this device token (or none)."""
        return Attempt(self.username_digest(username), self.device_id(device_token, username))

    def enter(self, attempt: Attempt) -> datetime | None:
        """Count the attempt before it runs; the end of the lock if its budget is spent."""
        if self._limiter.hit(_ATTEMPTS, *attempt.counter):
            return None
        return self._until(attempt)

    def locked_until(self, attempt: Attempt) -> datetime | None:
        """After a failure: until when the budget is spent, or None if attempts remain."""
        stats = self._limiter.get_window_stats(_ATTEMPTS, *attempt.counter)
        return self._until(attempt) if stats.remaining == 0 else None

    def succeeded(self, attempt: Attempt, username: str) -> str:
        """After a sign-in: clear the budget spent, and give the client its device token."""
        self._limiter.clear(_ATTEMPTS, *attempt.counter)
        return self.device_token(username, attempt.device_id)

    def budget_key(self, username: str, device_token: str | None) -> str:
        """The rate limiter's key for a sign-in request: its own device, or everyone else."""
        device_id = self.device_id(device_token, username)
        return f"device:{device_id}" if device_id else "everyone"

    def _until(self, attempt: Attempt) -> datetime:
        reset = self._limiter.get_window_stats(_ATTEMPTS, *attempt.counter).reset_time
        return datetime.fromtimestamp(reset, UTC).replace(tzinfo=None, microsecond=0)


def _new_device_id() -> str:
    return secrets.token_urlsafe(16)


def signin_guard() -> SignInGuard:
    """This app's sign-in guard, over its limiter's storage (Redis when workers share one)."""
    app = current_app
    guard: SignInGuard | None = app.extensions.get("dropbox.case_signin_guard")
    if guard is None:
        guard = SignInGuard(
            app.extensions["dropbox.limiter"].storage, tokens.instance().secrets.app_secret
        )
        app.extensions["dropbox.case_signin_guard"] = guard
    return guard


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None, microsecond=0)


# --- reading requests ------------------------------------------------------------------


def checked_username(typed: str) -> str:
    """The typed username, as sign-in compares it (any text: unknown names are answered too)."""
    username = officers.normalise_username(typed)
    if not username or len(username) > MAX_USERNAME_CHARS:
        raise ApiError(400, f"'username' must be 1 to {MAX_USERNAME_CHARS} characters")
    return username


def current_token_hash() -> bytes | None:
    """The store's id hash of the request's bearer token (to keep it when others end)."""
    token = tokens.bearer()
    if token is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(token.encode("ascii") + b"==")
    except (binascii.Error, ValueError, UnicodeEncodeError):
        return None
    return token_id_hash(raw[:32]) if len(raw) == 64 else None


# --- what the signed-in officer sees ----------------------------------------------------


def me_answer(db: Session, config: Config, officer: Officer) -> schema.Me:
    """The signed-in officer: keys opaque, labels to show."""
    grants = db.execute(
        select(OfficeGrant)
        .where(OfficeGrant.officer_id == officer.id)
        .order_by(OfficeGrant.office_code)
    ).scalars()
    offices = db.execute(select(Office).order_by(Office.code)).scalars()
    names = {o.code: o.name for o in config.offices}
    return schema.Me(
        id=officer.id,
        username=officer.username,
        display_name=officer.display_name,
        is_admin=officer.is_admin,
        public_key=officer.public_key or b"",
        wrapped_secret_key=officer.wrapped_secret_key or b"",
        grants=[
            schema.Grant(office=g.office_code, sealed_office_key=g.sealed_office_key)
            for g in grants
        ],
        offices=[
            schema.OfficeInfo(code=o.code, name=names.get(o.code, o.name), public_key=o.public_key)
            for o in offices
        ],
        categories={c.code: c.label for c in config.categories},
        statuses=[s.value for s in Status],
        outcomes=[o.value for o in Outcome],
    )


def register_signin(app: Flask, config: Config) -> None:
    """Attach sign-in, enrolment and account routes under /api/v2."""
    bp = Blueprint("signin", __name__, url_prefix=PREFIX)
    limiter: Limiter = app.extensions["dropbox.limiter"]

    def _signin_budget() -> str:
        """Each known device has its own budget of attempts; every other client shares one."""
        try:
            data = request.get_json(silent=True)
        except RecursionError:  # nested deeper than the parser goes: the route answers 400
            data = None
        if not isinstance(data, dict):
            return "everyone"
        username = officers.normalise_username(str(data.get("username", "")))
        device = data.get("device")
        return signin_guard().budget_key(username, device if isinstance(device, str) else None)

    @bp.post("/signin/params")
    @limiter.limit("120/minute", key_func=_signin_budget)
    def signin_params() -> dict[str, Any]:
        """The wrap header to derive with: the same shape, and stable, for any name."""
        username = checked_username(read(schema.SignInParametersRequest).username)
        instance = tokens.instance()
        with instance.readers() as db:
            header = officers.signin_header(db, instance, username)
        return dump(schema.SignInParameters(header=header))

    @bp.post("/signin")
    @limiter.limit("60/minute", key_func=_signin_budget)
    def signin() -> Any:
        """Check the auth key and TOTP code; a token, a device token and the officer's keys."""
        sent = read(schema.SignInRequest)
        username = checked_username(sent.username)
        guard = signin_guard()
        attempt = guard.attempt(username, sent.device)
        # Counted before any work, alike for every username: a spent budget is
        # refused at once, whether or not an officer has that username.
        locked_until = guard.enter(attempt)
        if locked_until is None:
            instance = tokens.instance()
            with instance.sessions.begin() as db:
                result = officers.sign_in(db, username, sent.auth_key, sent.code)
                if result.ok:
                    assert result.officer is not None  # noqa: S101 - ok says so
                    me = me_answer(db, config, result.officer)
                    officer_id = result.officer.id
            if result.ok:
                token = tokens.issue(instance, officer_id)
                return dump(
                    schema.SignIn(token=token, device=guard.succeeded(attempt, username), me=me)
                )
            locked_until = guard.locked_until(attempt)
        if locked_until is not None:
            wait = max(1, int((locked_until - _now()).total_seconds()))
            raise ApiError(
                429,
                "too many failed attempts with this username; try again after"
                f" {locked_until.strftime('%H:%M:%S')} UTC",
                {"Retry-After": str(wait)},
                retry_after=wait,
            )
        raise ApiError(401, SIGNIN_REFUSED)

    @bp.post("/signout")
    def signout() -> Response:
        """End the token now."""
        instance = tokens.instance()
        with instance.sessions.begin() as db:
            officer = tokens.current_officer(db)
            audit.record(db, officer.username, "officer.sign_out")
        token = tokens.bearer()
        if token is not None:
            tokens.end(token, instance)
        return Response(status=204)

    @bp.post("/enrol/check")
    @limiter.limit("20/minute")
    def enrol_check() -> dict[str, Any]:
        """Whether a one-time enrolment code works for this username now (nothing is used up)."""
        sent = read(schema.EnrolCheckRequest)
        username = checked_username(sent.username)
        with tokens.instance().readers() as db:
            officers.check_enrolment(db, username, sent.code)
        return dump(schema.Ok(ok=True))

    @bp.post("/enrol")
    @limiter.limit("20/minute")
    def enrol() -> dict[str, Any]:
        """Store credentials made on the officer's machine; the enrolment code stops working."""
        sent = read(schema.EnrolRequest)
        username = checked_username(sent.username)
        with tokens.instance().sessions.begin() as db:
            officer = officers.complete_enrolment(
                db,
                username,
                sent.enrolment_code,
                sent.auth_key,
                sent.public_key,
                sent.wrapped_secret_key,
                sent.totp_secret,
                sent.totp_code,
                minimum=config.crypto.kdf_cost,
            )
            return dump(schema.Enrolled(ok=True, officer_id=officer.id, username=officer.username))

    @bp.get("/me")
    def me() -> dict[str, Any]:
        """The signed-in officer, their opaque key material and the labels the pages show."""
        with tokens.instance().readers() as db:
            return dump(me_answer(db, config, tokens.current_officer(db)))

    @bp.post("/account/passphrase")
    def change_passphrase() -> dict[str, Any]:
        """Replace the verifier and the wrapped key; the officer's other tokens end."""
        sent = read(schema.PassphraseRequest)
        with tokens.instance().sessions.begin() as db:
            officer = tokens.current_officer(db)
            try:
                officers.change_passphrase(
                    db,
                    officer,
                    sent.auth_key,
                    sent.code,
                    sent.new_auth_key,
                    sent.new_wrapped_secret_key,
                    minimum=config.crypto.kdf_cost,
                    keep_id_hash=current_token_hash(),
                )
            except DropboxError as refused:
                db.rollback()
                raise ApiError(400, str(refused)) from None
        return dump(schema.Ok(ok=True))

    @bp.post("/account/key")
    def replace_key() -> dict[str, Any]:
        """An officer's own new X-Wing key and their grants re-sealed to it, in one transaction."""
        sent = read(schema.KeyReplacementRequest)
        grants: dict[str, bytes] = {}
        for grant in sent.grants:
            if grant.office in grants:
                raise ApiError(400, f"office {grant.office} is named twice")
            grants[grant.office] = grant.sealed_office_key
        with tokens.instance().sessions.begin() as db:
            officer = tokens.current_officer(db)
            try:
                officers.replace_key(
                    db,
                    officer,
                    sent.auth_key,
                    sent.code,
                    new_auth_key=sent.new_auth_key,
                    public_key=sent.public_key,
                    wrapped=sent.wrapped_secret_key,
                    grants=grants,
                    minimum=config.crypto.kdf_cost,
                    keep_id_hash=current_token_hash(),
                )
            except officers.GrantsChanged as refused:
                db.rollback()
                raise ApiError(409, str(refused)) from None
            except DropboxError as refused:
                db.rollback()
                raise ApiError(400, str(refused)) from None
        return dump(schema.Ok(ok=True))

    @bp.post("/account/totp")
    def replace_totp() -> dict[str, Any]:
        """Replace the TOTP secret once a code from the new one checks out."""
        sent = read(schema.TotpRequest)
        with tokens.instance().sessions.begin() as db:
            officer = tokens.current_officer(db)
            officers.replace_totp(db, officer, sent.auth_key, sent.secret, sent.code)
        return dump(schema.Ok(ok=True))

    def _settings_answer(choice: notify.Choice) -> dict[str, Any]:
        return dump(
            schema.NotificationSettings(
                email=choice.email,
                mode=choice.mode,  # type: ignore[arg-type]  # a NotificationMode value
                openpgp_fingerprint=choice.openpgp_fingerprint,
                openpgp_user_ids=list(choice.openpgp_user_ids),
                openpgp_expires=choice.openpgp_expires,
                mail_enabled=config.mail.enabled,
            )
        )

    @bp.get("/account/notifications")
    def notification_settings() -> dict[str, Any]:
        """The officer's notification e-mails: address, how often, and their OpenPGP key."""
        with tokens.instance().readers() as db:
            return _settings_answer(notify.choice(db, tokens.current_officer(db)))

    @bp.post("/account/notifications")
    def choose_notifications() -> dict[str, Any]:
        """Change them; a new OpenPGP key is checked first (expired, revoked, cannot encrypt)."""
        sent = read(schema.NotificationSettingsRequest)
        with tokens.instance().sessions.begin() as db:
            officer = tokens.current_officer(db)
            try:
                chosen = notify.choose(
                    db,
                    officer,
                    email=sent.email,
                    mode=sent.mode,
                    openpgp_key=sent.openpgp_key,
                    remove_openpgp_key=sent.remove_openpgp_key,
                )
            except (DropboxError, openpgp.KeyRefused) as refused:
                db.rollback()
                raise ApiError(400, str(refused)) from None
        return _settings_answer(chosen)

    app.register_blueprint(bp)
