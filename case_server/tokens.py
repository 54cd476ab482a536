"""Bearer tokens of the case server: who is calling.

A token is issued at sign-in (case_server/signin.py) by `issue`. Like a
session cookie it holds a random id and a random key: the store keeps only a
hash of the id and the state `{"officer_id": id, "scope": "case"}` sealed
under the key (dropbox/sessions.py), so a database dump yields no usable
token. It lasts `reviewer.absolute_hours`, ends after `reviewer.idle_minutes`
without a request (a reviewer app stopped without signing out leaves no
token working for long), and stops working at once when the officer is
deactivated (their sessions and tokens are ended, and
`current_officer` checks `active` on every request).
"""

from __future__ import annotations

import base64
import binascii
from datetime import timedelta

from flask import current_app, request
from sqlalchemy.orm import Session

from case_server.errors import BEARER, unauthorised
from dropbox import sessions
from dropbox.instance import Instance
from dropbox.models import Officer

# Marks a case-server token, so that a token of another kind does not pass.
SCOPE = "case"
UNKNOWN = "this token is unknown or expired; sign in again"


def instance() -> Instance:
    """The instance the running app serves."""
    found: Instance = current_app.extensions["dropbox"]
    return found


def lifetime(of: Instance) -> timedelta:
    """How long a token lasts: the reviewer's absolute session lifetime."""
    return timedelta(hours=of.config.reviewer.absolute_hours)


def issue(of: Instance, officer_id: int) -> str:
    """A new bearer token for the officer."""
    state = {"officer_id": officer_id, "scope": SCOPE}
    return sessions.issue_token(of, officer_id, state, lifetime(of))


def bearer() -> str | None:
    """The token the request carries in `Authorization: Bearer <token>`, if any."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != BEARER.lower() or not token:
        return None
    return token


def officer_id() -> int:
    """The id of the officer behind the request's token, or a 401 (the officer is not loaded)."""
    token = bearer()
    if token is None:
        raise unauthorised("send a token in the header 'Authorization: Bearer <token>'")
    of = instance()
    state = sessions.open_token(of, token, idle=timedelta(minutes=of.config.reviewer.idle_minutes))
    if state is None or state.get("scope") != SCOPE:
        raise unauthorised(UNKNOWN)
    found = state.get("officer_id")
    if not isinstance(found, int) or isinstance(found, bool):
        raise unauthorised(UNKNOWN)
    return found


def current_officer(db: Session) -> Officer:
    """The calling officer, loaded in this transaction; 401 if no token, expired or deactivated."""
    return load_officer(db, officer_id())


def load_officer(db: Session, caller: int) -> Officer:
    """The officer `officer_id()` named, loaded in this transaction; 401 if deactivated or gone."""
    found = db.get(Officer, caller)
    if found is None or not found.active:
        raise unauthorised("this token no longer works; sign in again")
    return found


def end(token: str, of: Instance | None = None) -> None:
    """End a token (sign-out); an unknown or malformed one is ignored."""
    try:
        raw = base64.urlsafe_b64decode(token.encode("ascii") + b"==")
    except (binascii.Error, ValueError, UnicodeEncodeError):
        return
    if len(raw) != 64:
        return
    store = sessions.session_store(of or instance())
    store.delete("token", sessions.token_id_hash(raw[:32]))
