"""Flask's session interface over the stores of `dropbox.sessions`.

The cookie holds a random session id and a random key; the store, chosen by
`dropbox.sessions.session_store`, holds only the id's hash and the state
sealed under that key.
"""

from __future__ import annotations

import base64
import binascii
import secrets
from datetime import datetime, timedelta
from typing import Any, Literal

from flask import Flask, Request, Response
from flask import request as current_request
from flask.sessions import SessionInterface, SessionMixin
from werkzeug.datastructures import CallbackDict

from dropbox.instance import Instance
from dropbox.sessions import (
    Kind,
    Record,
    coarse_expiry,
    now_utc,
    open_state,
    seal_state,
    session_id_hash,
    session_store,
)


class ServerSession(CallbackDict[str, Any], SessionMixin):
    """The session dict; remembers its id and key, and whether an old one just expired."""

    def __init__(
        self,
        initial: dict[str, Any] | None = None,
        session_id: bytes | None = None,
        key: bytes | None = None,
        expires_at: datetime | None = None,
        expired: bool = False,
    ) -> None:
        def on_update(_: CallbackDict[str, Any]) -> None:
            self.modified = True

        super().__init__(initial or {}, on_update)
        self.session_id = session_id
        self.key = key
        self.expires_at = expires_at
        self.expired = expired
        self.modified = False
        self.new = session_id is None
        self.replaced_id: bytes | None = None

    def regenerate(self) -> None:
        """Take a new id, key and expiry at the next save (after sign-in); drop the old one."""
        self.replaced_id = self.session_id
        self.session_id = None
        self.key = None
        self.expires_at = None
        self.new = True
        self.modified = True


class ServerSessionInterface(SessionInterface):
    """Server-side sessions of one kind in the instance's store: absolute expiry, optional idle."""

    def __init__(
        self,
        instance: Instance,
        kind: Literal["source", "officer"],
        lifetime: timedelta,
        idle: timedelta | None = None,
        cookieless_prefix: str | None = None,
    ) -> None:
        self.instance = instance
        # Paths under this prefix (the bearer-token API) neither read nor set the
        # cookie: a browser's session must not be loaded, kept alive or renewed by them.
        self.cookieless_prefix = cookieless_prefix
        self.kind: Kind = kind
        self.store = session_store(instance)
        self.lifetime = lifetime
        self.idle = idle

    def _valid(self, record: Record, now: datetime) -> bool:
        if record.expires_at <= now:
            return False
        if self.idle is not None and record.last_seen_at is not None:
            return record.last_seen_at + self.idle > now
        return True

    def _stored_expiry(self, expires_at: datetime) -> datetime:
        """What the store keeps: a source's session only to a day boundary (see module doc)."""
        if self.kind == "source":
            return coarse_expiry(expires_at, self.lifetime)
        return expires_at

    def _parse_cookie(self, value: str) -> tuple[bytes, bytes] | None:
        try:
            raw = base64.urlsafe_b64decode(value.encode("ascii") + b"==")
        except (binascii.Error, ValueError, UnicodeEncodeError):
            return None
        if len(raw) != 64:
            return None
        return raw[:32], raw[32:]

    def _cookieless(self, request: Request) -> bool:
        return self.cookieless_prefix is not None and request.path.startswith(
            self.cookieless_prefix
        )

    def open_session(self, app: Flask, request: Request) -> ServerSession:
        """Load and decrypt the session named by the cookie, if it is still valid."""
        if self._cookieless(request):
            return ServerSession()
        value = request.cookies.get(self.get_cookie_name(app))
        if not value:
            return ServerSession()
        parsed = self._parse_cookie(value)
        if parsed is None:
            return ServerSession(expired=True)
        session_id, key = parsed
        id_hash = session_id_hash(session_id)
        record = self.store.load(self.kind, id_hash)
        if record is None:
            return ServerSession(expired=True)
        now = now_utc()
        if not self._valid(record, now):
            self.store.delete(self.kind, id_hash)
            return ServerSession(expired=True)
        opened = open_state(key, record.state)
        if opened is None:
            return ServerSession(expired=True)
        state, expires_at = opened
        # The exact expiry: the store's may be later (a day boundary, for sources).
        if expires_at <= now:
            self.store.delete(self.kind, id_hash)
            return ServerSession(expired=True)
        return ServerSession(state, session_id, key, expires_at)

    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:
        """Encrypt and store the session; an emptied session is deleted with its cookie."""
        assert isinstance(session, ServerSession)  # noqa: S101 - open_session makes only these
        if self._cookieless(current_request):
            return
        name = self.get_cookie_name(app)
        cookie_options = {
            "path": self.get_cookie_path(app),
            # Secure whenever the request came over TLS (an onion service is plain HTTP).
            "secure": self.get_cookie_secure(app) or current_request.is_secure,
            "httponly": True,
            "samesite": "Strict",
        }
        if not session:
            for stale in (session.session_id, session.replaced_id):
                if stale is not None:
                    self.store.delete(self.kind, session_id_hash(stale))
            if session.session_id is not None or session.replaced_id is not None:
                response.delete_cookie(name, **cookie_options)  # type: ignore[arg-type]
            return
        if not session.modified and not (self.idle and session.session_id):
            return
        if session.session_id is None or session.key is None:
            session.session_id = secrets.token_bytes(32)
            session.key = secrets.token_bytes(32)
            session.expires_at = session.expires_at or (now_utc() + self.lifetime)
        if session.replaced_id is not None:
            self.store.delete(self.kind, session_id_hash(session.replaced_id))
            session.replaced_id = None
        assert session.expires_at is not None  # noqa: S101 - set with the id
        now = now_utc()
        state = seal_state(session.key, dict(session), session.expires_at)
        officer_id = session.get("officer_id") if self.kind == "officer" else None
        record = Record(
            state=state,
            expires_at=self._stored_expiry(session.expires_at),
            officer_id=officer_id if isinstance(officer_id, int) else None,
            last_seen_at=now if self.kind == "officer" else None,
        )
        self.store.save(self.kind, session_id_hash(session.session_id), record, new=session.new)
        value = base64.urlsafe_b64encode(session.session_id + session.key).rstrip(b"=").decode()
        response.set_cookie(name, value, **cookie_options)  # type: ignore[arg-type]


def session_key(session: SessionMixin) -> str:
    """A per-session rate-limit key that reveals nothing about the session's id."""
    if isinstance(session, ServerSession) and session.session_id is not None:
        return session_id_hash(session.session_id).hex()[:32]
    return "no-session"
