"""Who is signed in, and the checks around signing in that the pages and the API share.

The officer's secret key lives in the session state, which is stored
encrypted under a key that only the officer's cookie holds. It is opened at
the start of a request and dropped with the request.

Signing in: `safe_next` decides where an officer may land afterwards, and
`SignInGuard` counts failed attempts so that no answer tells whether a
username exists and no flood can keep an officer out of their usual browser
(device tokens, as in OWASP's "device cookies"). Both are small functions of
their inputs, for whatever client signs in (the pages, the API).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

from flask import Flask, current_app, flash, g, redirect, request, session, url_for
from flask_babel import gettext as _
from itsdangerous import BadData, URLSafeTimedSerializer
from limits import RateLimitItemPerSecond
from limits.storage import Storage
from limits.strategies import FixedWindowRateLimiter
from nacl.public import PrivateKey
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response as WerkzeugResponse

from dropbox import access
from dropbox.instance import Instance
from dropbox.models import Officer

View = TypeVar("View", bound=Callable[..., Any])


def instance() -> Instance:
    """The instance this app serves."""
    opened: Instance = current_app.extensions["dropbox"]
    return opened


def load_officer() -> None:
    """Before each request: find the signed-in officer, if any, and check they are still active."""
    g.officer, g.officer_key, g.office_codes = None, None, []
    officer_id = session.get("officer_id")
    if not isinstance(officer_id, int):
        return
    with instance().sessions() as db:
        officer = db.get(Officer, officer_id)
        if officer is None or not officer.active:
            session.clear()
            return
        g.officer = officer
        g.office_codes = access.office_codes(db, officer)
    g.officer_key = PrivateKey(base64.b64decode(session["secret_key"]))


def start_session(officer: Officer, secret_key: PrivateKey) -> None:
    """After sign-in: a new session id, holding the officer's id and key."""
    session.regenerate()  # type: ignore[attr-defined]
    session.clear()
    session["officer_id"] = officer.id
    session["secret_key"] = base64.b64encode(bytes(secret_key)).decode("ascii")


def signed_in(view: View) -> View:
    """Only for a signed-in officer; others are sent to the sign-in page."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if g.officer is None:
            if getattr(session, "expired", False):
                flash(_("Your session ended. Please sign in again."), "info")
            return redirect(url_for("login", next=request.path))
        return view(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def administrators(view: View) -> View:
    """Only for a signed-in administrator."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from flask import abort

        if g.officer is None:
            return redirect(url_for("login", next=request.path))
        if not g.officer.is_admin:
            abort(403)
        return view(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


# --- where an officer lands after signing in ----------------------------------------

MAX_NEXT_CHARS = 2048
# GET routes that are no page to land on after signing in.
NOT_A_LANDING = frozenset({"login", "enrol", "static"})


def safe_next(app: Flask, target: str) -> str | None:
    """`target` if it is the path of a page of this app, else None (then: the inbox).

    Only a path that starts with a single "/" and names a GET route of the
    app is taken: no scheme, no host, no backslash, no whitespace or control
    character, in the text as given or once percent-decoded (browsers drop
    tabs and newlines from a Location, and read a backslash as a slash).
    """
    if not target or len(target) > MAX_NEXT_CHARS or not target.isascii():
        return None
    for form in (target, unquote(target)):
        if "\\" in form or any(c.isspace() or not c.isprintable() for c in form):
            return None
    parts = urlsplit(target)
    path = unquote(parts.path)
    if parts.scheme or parts.netloc or parts.fragment:
        return None
    # As given (what a browser resolves) and as decoded (what the app routes).
    if not (target.startswith("/") and path.startswith("/")):
        return None
    if target.startswith("//") or path.startswith("//"):
        return None
    try:
        endpoint, _args = app.url_map.bind("reviewer.invalid").match(path, method="GET")
    except HTTPException:  # no such page, not a GET route, or a redirect elsewhere
        return None
    if endpoint in NOT_A_LANDING or endpoint.startswith("api."):
        return None
    return target


# --- failed sign-ins: counted alike for every username, never against a known device ---

FAILURES_BEFORE_LOCK = 5
LOCK_WINDOW = timedelta(minutes=1)
DEVICE_COOKIE = "dropbox_reviewer_device"
DEVICE_LIFETIME = timedelta(days=180)
_ATTEMPTS = RateLimitItemPerSecond(
    FAILURES_BEFORE_LOCK, int(LOCK_WINDOW.total_seconds()), namespace="dropbox-reviewer-signin"
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
    Argon2id work) until the window ends; a success clears it. A client
    where the officer signed in before brings a signed device token bound
    to that username, and spends that device's own budget instead: a flood
    against the username does not reach it. Usernames are stored only as a
    keyed digest, so the storage (Redis) does not list who was tried.
    """

    def __init__(self, storage: Storage, secret: bytes) -> None:
        self._limiter = FixedWindowRateLimiter(storage)
        self._key = hashlib.blake2b(secret, person=b"dropbox-signin").digest()
        self._devices = URLSafeTimedSerializer(secret, salt="dropbox-reviewer-device")

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
    guard: SignInGuard | None = app.extensions.get("dropbox.signin_guard")
    if guard is None:
        guard = SignInGuard(
            app.extensions["dropbox.limiter"].storage, instance().secrets.app_secret
        )
        app.extensions["dropbox.signin_guard"] = guard
    return guard


def normalise_username(text: str) -> str:
    """A username as typed, as the sign-in compares it."""
    return text.strip().lower()


def set_device_cookie(response: WerkzeugResponse, token: str) -> None:
    """Give the browser its device token: long-lived, HttpOnly, Strict, Secure over TLS."""
    app = current_app
    response.set_cookie(
        DEVICE_COOKIE,
        token,
        max_age=int(DEVICE_LIFETIME.total_seconds()),
        path="/",
        secure=app.session_interface.get_cookie_secure(app) or request.is_secure,
        httponly=True,
        samesite="Strict",
    )
