"""Server-side sessions whose stored state only the browser's cookie can open.

The cookie holds a random session id and a random key. The database holds
BLAKE2b(id) and the session state encrypted with SecretBox under that key,
so a dump of the sessions table alone reveals nothing (not even which report
a signed-in source is looking at), while any worker process can serve the
next request. Expiry is absolute: a session is never extended.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import nacl.exceptions
from flask import Flask, Request, Response
from flask.sessions import SessionInterface, SessionMixin
from nacl.secret import SecretBox
from sqlalchemy import delete
from werkzeug.datastructures import CallbackDict

from dropbox.instance import Instance
from dropbox.models import OfficerSession, SourceSession

SessionRow = SourceSession | OfficerSession


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
        """Take a new id, key and expiry at the next save (after sign-in); drop the old row."""
        self.replaced_id = self.session_id
        self.session_id = None
        self.key = None
        self.expires_at = None
        self.new = True
        self.modified = True


def session_id_hash(session_id: bytes) -> bytes:
    """What the table stores instead of a session id."""
    return hashlib.blake2b(session_id, digest_size=32, person=b"dropbox-session").digest()


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class ServerSessionInterface(SessionInterface):
    """Server-side sessions in one table: absolute expiry, and an idle limit if one is given."""

    def __init__(
        self,
        instance: Instance,
        model: type[SourceSession] | type[OfficerSession],
        lifetime: timedelta,
        idle: timedelta | None = None,
    ) -> None:
        self.instance = instance
        self.model = model
        self.lifetime = lifetime
        self.idle = idle

    def _valid(self, row: SessionRow, now: datetime) -> bool:
        if row.expires_at <= now:
            return False
        if self.idle is not None and isinstance(row, OfficerSession):
            return row.last_seen_at + self.idle > now
        return True

    def _row(self, session: ServerSession, state: bytes, now: datetime) -> SessionRow:
        assert session.session_id is not None and session.expires_at is not None  # noqa: S101
        id_hash = session_id_hash(session.session_id)
        if self.model is OfficerSession:
            officer_id = session.get("officer_id")
            return OfficerSession(
                id_hash=id_hash,
                officer_id=officer_id if isinstance(officer_id, int) else None,
                state=state,
                last_seen_at=now,
                expires_at=session.expires_at,
            )
        return SourceSession(id_hash=id_hash, state=state, expires_at=session.expires_at)

    def _parse_cookie(self, value: str) -> tuple[bytes, bytes] | None:
        try:
            raw = base64.urlsafe_b64decode(value.encode("ascii") + b"==")
        except (binascii.Error, ValueError, UnicodeEncodeError):
            return None
        if len(raw) != 64:
            return None
        return raw[:32], raw[32:]

    def open_session(self, app: Flask, request: Request) -> ServerSession:
        """Load and decrypt the session named by the cookie, if it is still valid."""
        value = request.cookies.get(self.get_cookie_name(app))
        if not value:
            return ServerSession()
        parsed = self._parse_cookie(value)
        if parsed is None:
            return ServerSession(expired=True)
        session_id, key = parsed
        with self.instance.sessions.begin() as db:
            row = cast("SessionRow | None", db.get(self.model, session_id_hash(session_id)))
            if row is None:
                return ServerSession(expired=True)
            if not self._valid(row, _now()):
                db.delete(row)
                return ServerSession(expired=True)
            try:
                state = json.loads(SecretBox(key).decrypt(row.state))
            except (nacl.exceptions.CryptoError, ValueError):
                return ServerSession(expired=True)
            return ServerSession(state, session_id, key, row.expires_at)

    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:
        """Encrypt and store the session; an emptied session is deleted with its cookie."""
        assert isinstance(session, ServerSession)  # noqa: S101 - open_session makes only these
        name = self.get_cookie_name(app)
        cookie_options = {
            "path": self.get_cookie_path(app),
            "secure": self.get_cookie_secure(app),
            "httponly": True,
            "samesite": "Strict",
        }
        if not session:
            for stale in (session.session_id, session.replaced_id):
                if stale is not None:
                    self._delete(stale)
            if session.session_id is not None or session.replaced_id is not None:
                response.delete_cookie(name, **cookie_options)  # type: ignore[arg-type]
            return
        if not session.modified and not (self.idle and session.session_id):
            return
        if session.session_id is None or session.key is None:
            session.session_id = secrets.token_bytes(32)
            session.key = secrets.token_bytes(32)
            session.expires_at = session.expires_at or (_now() + self.lifetime)
        if session.replaced_id is not None:
            self._delete(session.replaced_id)
            session.replaced_id = None
        now = _now()
        state = SecretBox(session.key).encrypt(json.dumps(dict(session)).encode("utf-8"))
        with self.instance.sessions.begin() as db:
            db.merge(self._row(session, bytes(state), now))
            if session.new:
                # Sweep expired sessions now and then: when a new one is made.
                db.execute(delete(self.model).where(self.model.expires_at <= now))
        value = base64.urlsafe_b64encode(session.session_id + session.key).rstrip(b"=").decode()
        response.set_cookie(name, value, **cookie_options)  # type: ignore[arg-type]

    def _delete(self, session_id: bytes) -> None:
        with self.instance.sessions.begin() as db:
            db.execute(delete(self.model).where(self.model.id_hash == session_id_hash(session_id)))


def session_key(session: SessionMixin) -> str:
    """A per-session rate-limit key that reveals nothing about the session's id."""
    if isinstance(session, ServerSession) and session.session_id is not None:
        return session_id_hash(session.session_id).hex()[:32]
    return "no-session"


def token_id_hash(token_id: bytes) -> bytes:
    """What the table stores for an API token: never equal to a cookie's, so neither opens both."""
    return hashlib.blake2b(token_id, digest_size=32, person=b"dropbox-apitoken").digest()


def issue_token(
    instance: Instance, officer_id: int, state: dict[str, Any], lifetime: timedelta
) -> str:
    """A bearer token for the JSON API: like a session cookie, it holds the id and the key."""
    token_id, key = secrets.token_bytes(32), secrets.token_bytes(32)
    now = _now()
    sealed = SecretBox(key).encrypt(json.dumps(state).encode("utf-8"))
    with instance.sessions.begin() as db:
        db.add(
            OfficerSession(
                id_hash=token_id_hash(token_id),
                officer_id=officer_id,
                state=bytes(sealed),
                last_seen_at=now,
                expires_at=now + lifetime,
            )
        )
    return base64.urlsafe_b64encode(token_id + key).rstrip(b"=").decode()


def open_token(instance: Instance, token: str) -> dict[str, Any] | None:
    """The state behind a bearer token, or None if it is unknown, damaged or expired."""
    try:
        raw = base64.urlsafe_b64decode(token.encode("ascii") + b"==")
    except (binascii.Error, ValueError, UnicodeEncodeError):
        return None
    if len(raw) != 64:
        return None
    with instance.sessions.begin() as db:
        row = db.get(OfficerSession, token_id_hash(raw[:32]))
        if row is None:
            return None
        if row.expires_at <= _now():
            db.delete(row)
            return None
        try:
            state: dict[str, Any] = json.loads(SecretBox(raw[32:]).decrypt(row.state))
        except (nacl.exceptions.CryptoError, ValueError):
            return None
        return state
