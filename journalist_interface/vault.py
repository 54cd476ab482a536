"""Who is signed in to this reviewer app, and the keys they opened: in process memory only.

The browser's session cookie holds nothing but a random vault id (and
flashed messages and the CSRF token). The keys live here, in this process,
next to the case server client holding the officer's bearer token:

- an `Entry` per signed-in officer: client, `Me`, the opened `Keyring`;
- an `Enrolment` per officer half-way through enrolling (new credentials and
  a TOTP secret waiting for the first code).

Entries are forgotten at sign-out, after `idle_minutes` without a request,
after `absolute_hours` in all, and when the process stops (`forget_all`, run
by `run.py` at exit and on SIGTERM/SIGINT). A secret key is never written to
disk, to the cookie or to the case server.

Forgetting drops every reference this module holds to the keys (the keyring's
office keys are cleared, the entry is unlinked and its client closed). Python
gives no reliable way to zero memory: `bytes` are immutable, and copies may
remain in freed memory until it is reused. What can be done here is to hold
keys in as few places as possible, for as short a time as possible, and to
let the process end; an attacker who can read this process's memory while it
runs sees what the officer sees.
"""

from __future__ import annotations

import contextlib
import functools
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from flask import abort, current_app, flash, g, redirect, request, session, url_for
from flask_babel import gettext as _

from dropbox.api_schema import Me
from journalist_interface.casefile import Credentials, Keyring
from journalist_interface.client import ApiError, CaseServerClient
from journalist_interface.settings import ReviewerSettings

View = TypeVar("View", bound=Callable[..., Any])

SESSION_KEY = "vault"
ENROLMENT_KEY = "enrolling"


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(eq=False)
class PendingTotp:
    """A new TOTP secret waiting for its first code, and the auth key that may replace the old."""

    secret: str = field(repr=False)
    auth_key: bytes = field(repr=False)


@dataclass(eq=False)
class Entry:
    """One signed-in officer: their connection to the case server and the keys they opened."""

    client: CaseServerClient = field(repr=False)
    me: Me = field(repr=False)
    keyring: Keyring = field(repr=False)
    username: str
    started: datetime = field(default_factory=_now)
    last_seen: datetime = field(default_factory=_now)
    pending_totp: PendingTotp | None = field(default=None, repr=False)

    def drop(self) -> None:
        """Let go of the keys and the connection (best effort: see the module's docstring)."""
        self.pending_totp = None
        self.keyring.office_keys.clear()
        self.client.token = None
        self.client.close()


@dataclass(eq=False)
class Enrolment:
    """An officer half-way through enrolling: their new credentials and TOTP secret."""

    username: str
    code: str = field(repr=False)
    credentials: Credentials = field(repr=False)
    totp_secret: str = field(repr=False)
    started: datetime = field(default_factory=_now)
    last_seen: datetime = field(default_factory=_now)


class Vault:
    """The entries of this process, by random id; thread-safe, times checked at each look-up."""

    def __init__(self, idle: timedelta, absolute: timedelta) -> None:
        self.idle = idle
        self.absolute = absolute
        # What time it is: replaceable, so that a test can let an hour pass.
        self.clock: Callable[[], datetime] = _now
        self._lock = threading.Lock()
        self._entries: dict[str, Entry] = {}
        self._enrolments: dict[str, Enrolment] = {}

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries) + len(self._enrolments)

    def _expired(self, started: datetime, last_seen: datetime, now: datetime) -> bool:
        return now - last_seen > self.idle or now - started > self.absolute

    # -- signed-in officers

    def add(self, entry: Entry) -> str:
        """Keep an entry; its new random id (for the session cookie)."""
        entry_id = secrets.token_urlsafe(32)
        entry.started = entry.last_seen = self.clock()
        with self._lock:
            self._entries[entry_id] = entry
        return entry_id

    def get(self, entry_id: str) -> Entry | None:
        """The live entry of that id (its idle clock restarted), or None (an expired one goes)."""
        now = self.clock()
        with self._lock:
            entry = self._entries.get(entry_id)
            if entry is None:
                return None
            if not self._expired(entry.started, entry.last_seen, now):
                entry.last_seen = now
                return entry
            del self._entries[entry_id]
        _end(entry)
        return None

    def forget(self, entry_id: str, *, sign_out: bool = True) -> None:
        """Forget an entry now; first end its token on the case server (if it can be reached)."""
        with self._lock:
            entry = self._entries.pop(entry_id, None)
        if entry is not None:
            _end(entry, sign_out=sign_out)

    def forget_all(self) -> None:
        """Forget every entry and enrolment (at process stop: no round trip to the server).

        The case server's tokens then end at their own idle timeout; without
        the keys, which go with this process, they open nothing.
        """
        with self._lock:
            entries = list(self._entries.values())
            self._entries.clear()
            self._enrolments.clear()
        for entry in entries:
            entry.drop()

    def sweep(self) -> None:
        """Forget every expired entry and enrolment (run.py runs this every half minute)."""
        now = self.clock()
        with self._lock:
            gone = [
                k for k, e in self._entries.items() if self._expired(e.started, e.last_seen, now)
            ]
            entries = [self._entries.pop(k) for k in gone]
            for key, enrolment in list(self._enrolments.items()):
                if self._expired(enrolment.started, enrolment.last_seen, now):
                    del self._enrolments[key]
        for entry in entries:
            _end(entry)

    # -- enrolments

    def add_enrolment(self, enrolment: Enrolment) -> str:
        """Keep an enrolment in progress; its new random id."""
        enrolment_id = secrets.token_urlsafe(32)
        enrolment.started = enrolment.last_seen = self.clock()
        with self._lock:
            self._enrolments[enrolment_id] = enrolment
        return enrolment_id

    def enrolment(self, enrolment_id: str) -> Enrolment | None:
        """The live enrolment of that id, or None."""
        now = self.clock()
        with self._lock:
            found = self._enrolments.get(enrolment_id)
            if found is None:
                return None
            if self._expired(found.started, found.last_seen, now):
                del self._enrolments[enrolment_id]
                return None
            found.last_seen = now
            return found

    def forget_enrolment(self, enrolment_id: str) -> None:
        """Forget an enrolment (done, or abandoned)."""
        with self._lock:
            self._enrolments.pop(enrolment_id, None)


def _end(entry: Entry, *, sign_out: bool = True) -> None:
    """End the entry's token on the server (best effort), then drop its keys."""
    if sign_out:
        # Unreachable, or the token had already ended there: the keys go all the same.
        with contextlib.suppress(ApiError):
            entry.client.sign_out()
    entry.drop()


# --- for the pages ------------------------------------------------------------------


def new_vault(settings: ReviewerSettings) -> Vault:
    return Vault(timedelta(minutes=settings.idle_minutes), timedelta(hours=settings.absolute_hours))


def vault() -> Vault:
    """This app's vault."""
    found: Vault = current_app.extensions["reviewer.vault"]
    return found


def settings() -> ReviewerSettings:
    """This app's settings."""
    found: ReviewerSettings = current_app.extensions["reviewer.settings"]
    return found


def new_client(token: str | None = None) -> CaseServerClient:
    """A client for this app's case server (through tor's SOCKS port if configured)."""
    config = settings()
    return CaseServerClient(
        config.server_url,
        socks=config.socks,
        transport=current_app.extensions.get("reviewer.transport"),
        token=token,
    )


def load_entry() -> None:
    """Before each request: the signed-in officer's entry, if any (None once it expired)."""
    g.entry = None
    g.session_ended = False
    entry_id = session.get(SESSION_KEY)
    if not isinstance(entry_id, str):
        return
    g.entry = vault().get(entry_id)
    if g.entry is None:
        session.pop(SESSION_KEY, None)
        g.session_ended = True


def current() -> Entry | None:
    """The signed-in officer's entry for this request, or None."""
    entry: Entry | None = g.get("entry")
    return entry


def start(entry: Entry) -> None:
    """After sign-in: a fresh session holding only the new entry's id."""
    old = session.get(SESSION_KEY)
    if isinstance(old, str):
        vault().forget(old)
    session.clear()
    session[SESSION_KEY] = vault().add(entry)
    g.entry = entry


def end() -> None:
    """Sign out: end the token on the server, forget the keys, clear the session."""
    entry_id = session.get(SESSION_KEY)
    if isinstance(entry_id, str):
        vault().forget(entry_id)
    enrolment_id = session.get(ENROLMENT_KEY)
    if isinstance(enrolment_id, str):
        vault().forget_enrolment(enrolment_id)
    session.clear()
    g.entry = None


def signed_in(view: View) -> View:
    """Only for a signed-in officer; others are sent to the sign-in page."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if current() is None:
            if g.get("session_ended"):
                flash(_("Your session ended. Please sign in again."), "info")
            return redirect(url_for("signin.login", next=request.path))
        return view(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def administrators(view: View) -> View:
    """Only for a signed-in administrator."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        entry = current()
        if entry is None:
            if g.get("session_ended"):
                flash(_("Your session ended. Please sign in again."), "info")
            return redirect(url_for("signin.login", next=request.path))
        if not entry.me.is_admin:
            abort(403)
        return view(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
