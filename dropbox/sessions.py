"""Server-side sessions whose stored state only the browser's cookie can open.

The cookie holds a random session id and a random key. The store holds
BLAKE2b(id) and the session state encrypted with SecretBox under that key,
so a dump of the store alone reveals nothing (not even which report a
signed-in source is looking at), while any worker process can serve the next
request. Expiry is absolute: a session is never extended.

The exact expiry is sealed inside the state and checked after opening it.
For sources, what the store sees (the row's `expires_at`, the Redis key's
expiry) is only a day boundary that covers it (`coarse_expiry`): a source's
visit is not timed on disk more finely than the day.

Where the sealed state lives is chosen in one place, `session_store`, from
`limits.storage_uri`: the database tables (`memory://`, the default) or
Redis (`redis://`, `rediss://`), where each session is one hash
`dropbox:<kind>:<hex id hash>` that Redis itself drops at the stored
expiry. API tokens live in the same store.

This module holds the stores and the tokens and imports no web framework;
Flask's session interface over them is `dropbox.web.sessions`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import secrets
import weakref
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, Protocol, cast

import nacl.exceptions
from nacl.secret import SecretBox
from sqlalchemy import Engine, delete
from sqlalchemy.orm import Session, sessionmaker

from dropbox.instance import Instance
from dropbox.models import OfficerSession, SourceSession

if TYPE_CHECKING:
    import redis

# What a stored session is for: a source's cookie, an officer's cookie, an API token.
Kind = Literal["source", "officer", "token"]
REDIS_SCHEMES = ("redis://", "rediss://")


def session_id_hash(session_id: bytes) -> bytes:
    """What the store keeps instead of a session id."""
    return hashlib.blake2b(session_id, digest_size=32, person=b"dropbox-session").digest()


def token_id_hash(token_id: bytes) -> bytes:
    """What the store keeps for an API token: never equal to a cookie's, so neither opens both."""
    return hashlib.blake2b(token_id, digest_size=32, person=b"dropbox-apitoken").digest()


def now_utc() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def coarse_expiry(expires_at: datetime, lifetime: timedelta) -> datetime:
    """A day boundary after `expires_at` that depends only on the day the session began.

    A session that began on day D (any time of it) and lasts `lifetime` ends
    before midnight of D + 1 + ceil(lifetime in days): that midnight is stored.
    """
    began = expires_at - lifetime
    days = 1 + math.ceil(lifetime / timedelta(days=1))
    return began.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=days)


def seal_state(key: bytes, state: dict[str, Any], expires_at: datetime) -> bytes:
    """The session state and its exact expiry, encrypted under the cookie's key."""
    document = {"session": state, "expires_at": expires_at.isoformat()}
    return bytes(SecretBox(key).encrypt(json.dumps(document).encode("utf-8")))


def open_state(key: bytes, sealed: bytes) -> tuple[dict[str, Any], datetime] | None:
    """The state and exact expiry sealed by `seal_state`, or None if it does not open or parse."""
    try:
        document = json.loads(SecretBox(key).decrypt(sealed))
        state, expires_at = document["session"], datetime.fromisoformat(document["expires_at"])
    except (nacl.exceptions.CryptoError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(state, dict) or expires_at.tzinfo is not None:
        return None
    return state, expires_at


# --- the stores ---------------------------------------------------------------------


@dataclass(frozen=True)
class Record:
    """One stored session: sealed state, absolute expiry, and for officers who and when."""

    state: bytes
    expires_at: datetime
    officer_id: int | None = None
    last_seen_at: datetime | None = None


class SessionStore(Protocol):
    """Where sealed sessions live, keyed by (kind, id hash)."""

    def load(self, kind: Kind, id_hash: bytes) -> Record | None:
        """The record, or None if there is none (or it has expired away)."""

    def save(self, kind: Kind, id_hash: bytes, record: Record, *, new: bool) -> None:
        """Write the record; an update (not `new`) of a record ended meanwhile is dropped."""

    def delete(self, kind: Kind, id_hash: bytes) -> None:
        """Remove the record, if any."""


class DatabaseStore:
    """Sessions in the `source_sessions` and `officer_sessions` tables (tokens in the latter).

    The row's `expires_at` is the record's (for sources, a day boundary):
    rows past it are swept when a new session is made.
    """

    def __init__(self, sessions: sessionmaker[Session], readers: sessionmaker[Session]) -> None:
        self.sessions = sessions
        self.readers = readers  # every request loads its session: that must not queue for writes

    @staticmethod
    def _model(kind: Kind) -> type[SourceSession] | type[OfficerSession]:
        return SourceSession if kind == "source" else OfficerSession

    def load(self, kind: Kind, id_hash: bytes) -> Record | None:
        with self.readers() as db:
            row = cast("SourceSession | OfficerSession | None", db.get(self._model(kind), id_hash))
            if row is None:
                return None
            if isinstance(row, OfficerSession):
                return Record(row.state, row.expires_at, row.officer_id, row.last_seen_at)
            return Record(row.state, row.expires_at)

    def save(self, kind: Kind, id_hash: bytes, record: Record, *, new: bool) -> None:
        model = self._model(kind)
        row: SourceSession | OfficerSession
        if model is OfficerSession:
            row = OfficerSession(
                id_hash=id_hash,
                officer_id=record.officer_id,
                state=record.state,
                last_seen_at=record.last_seen_at or now_utc(),
                expires_at=record.expires_at,
            )
        else:
            row = SourceSession(id_hash=id_hash, state=record.state, expires_at=record.expires_at)
        with self.sessions.begin() as db:
            db.merge(row)
            if new:
                # Sweep expired sessions now and then: when a new one is made.
                db.execute(delete(model).where(model.expires_at <= now_utc()))

    def delete(self, kind: Kind, id_hash: bytes) -> None:
        model = self._model(kind)
        with self.sessions.begin() as db:
            db.execute(delete(model).where(model.id_hash == id_hash))


def _ms(moment: datetime) -> int:
    return int(moment.replace(tzinfo=UTC).timestamp() * 1000)


def _from_ms(value: bytes) -> datetime:
    return datetime.fromtimestamp(int(value) / 1000, UTC).replace(tzinfo=None)


class RedisStore:
    """Sessions in Redis: a hash per session that expires at the record's stored expiry.

    `dropbox:<kind>:<hex id hash>` holds `state` (sealed), `expires` (ms since
    the epoch; for sources a day boundary, the key's own expiry too) and, for
    officers and tokens, `officer` and `seen` (for the idle limit).
    `dropbox:officer-keys:<officer id>` is the set of an
    officer's session and token keys, so that they can all be ended; members
    whose session has expired are pruned when a new one is added, and the set
    itself expires with the last of them.
    """

    def __init__(self, url: str) -> None:
        # Loaded here: only an instance with a Redis URL needs it, and every command
        # and server process imports this module.
        import redis

        # A Redis that stops answering fails the request instead of hanging it
        # (timeouts given in the URL's query string win over these).
        self.client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)

    @staticmethod
    def key(kind: Kind, id_hash: bytes) -> str:
        """The Redis key of a session."""
        return f"dropbox:{kind}:{id_hash.hex()}"

    @staticmethod
    def officer_key(officer_id: int) -> str:
        """The Redis set of an officer's session keys."""
        return f"dropbox:officer-keys:{officer_id}"

    def load(self, kind: Kind, id_hash: bytes) -> Record | None:
        fields = cast("dict[bytes, bytes]", self.client.hgetall(self.key(kind, id_hash)))
        if b"state" not in fields or b"expires" not in fields:
            return None
        officer = fields.get(b"officer")
        seen = fields.get(b"seen")
        return Record(
            state=fields[b"state"],
            expires_at=_from_ms(fields[b"expires"]),
            officer_id=int(officer) if officer is not None else None,
            last_seen_at=_from_ms(seen) if seen is not None else None,
        )

    def save(self, kind: Kind, id_hash: bytes, record: Record, *, new: bool) -> None:
        key = self.key(kind, id_hash)
        expires = _ms(record.expires_at)
        mapping: dict[str, bytes | int] = {"state": record.state, "expires": expires}
        if record.officer_id is not None:
            mapping["officer"] = record.officer_id
        if record.last_seen_at is not None:
            mapping["seen"] = _ms(record.last_seen_at)

        def write(pipe: redis.client.Pipeline) -> None:
            # An update must not bring back a session that was ended (or expired)
            # while its request ran: WATCH makes the check and the write one step.
            if not new and not pipe.exists(key):
                return
            pipe.multi()
            pipe.hset(key, mapping=mapping)
            pipe.pexpireat(key, expires)
            if record.officer_id is not None:
                members = self.officer_key(record.officer_id)
                pipe.sadd(members, key)
                pipe.pexpireat(members, expires, nx=True)  # a new set
                pipe.pexpireat(members, expires, gt=True)  # or a later expiry

        self.client.transaction(write, key)
        if new and record.officer_id is not None:
            self._prune(record.officer_id)

    def _prune(self, officer_id: int) -> None:
        members = self.officer_key(officer_id)
        keys = list(cast("set[bytes]", self.client.smembers(members)))
        if not keys:
            return
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            pipe.exists(key)
        alive = cast("list[int]", pipe.execute())
        gone = [key for key, exists in zip(keys, alive, strict=True) if not exists]
        if gone:
            self.client.srem(members, *gone)

    def delete(self, kind: Kind, id_hash: bytes) -> None:
        key = self.key(kind, id_hash)
        officer = cast("bytes | None", self.client.hget(key, "officer"))
        pipe = self.client.pipeline(transaction=True)
        pipe.delete(key)
        if officer is not None:
            pipe.srem(self.officer_key(int(officer)), key)
        pipe.execute()

    def end_officer(self, officer_id: int, keep_id_hash: bytes | None = None) -> None:
        """End every session and token of an officer, except the one to keep."""
        members = self.officer_key(officer_id)
        keep = self.key("officer", keep_id_hash).encode() if keep_id_hash is not None else None
        keys = [k for k in cast("set[bytes]", self.client.smembers(members)) if k != keep]
        if keys:
            pipe = self.client.pipeline(transaction=True)
            pipe.delete(*keys)
            pipe.srem(members, *keys)
            pipe.execute()


# Redis stores by the engine of the instance they serve, so that ending an
# officer's sessions (which has only a database session in hand) finds them.
_REDIS_STORES: weakref.WeakKeyDictionary[Engine, RedisStore] = weakref.WeakKeyDictionary()


def session_store(instance: Instance) -> SessionStore:
    """The one place the backend is chosen: Redis for a redis:// `limits.storage_uri`."""
    uri = instance.config.limits.storage_uri
    if not uri.startswith(REDIS_SCHEMES):
        return DatabaseStore(instance.sessions, instance.readers)
    store = _REDIS_STORES.get(instance.engine)
    if store is None:
        store = _REDIS_STORES[instance.engine] = RedisStore(uri)
    return store


def end_officer_sessions(db: Session, officer_id: int, keep_id_hash: bytes | None = None) -> None:
    """End an officer's sessions and tokens (all, or all but one) in whichever store holds them.

    The database rows go in the caller's transaction. Redis sessions go at
    once, if this process opened the instance's Redis store (every app does,
    through its session interface, before serving a request).
    """
    query = delete(OfficerSession).where(OfficerSession.officer_id == officer_id)
    if keep_id_hash is not None:
        query = query.where(OfficerSession.id_hash != keep_id_hash)
    db.execute(query)
    bind = db.get_bind()
    store = _REDIS_STORES.get(bind) if isinstance(bind, Engine) else None
    if store is not None:
        store.end_officer(officer_id, keep_id_hash)


# --- API tokens ------------------------------------------------------------------------


def issue_token(
    instance: Instance, officer_id: int, state: dict[str, Any], lifetime: timedelta
) -> str:
    """A bearer token for the JSON API: like a session cookie, it holds the id and the key."""
    token_id, key = secrets.token_bytes(32), secrets.token_bytes(32)
    now = now_utc()
    sealed = SecretBox(key).encrypt(json.dumps(state).encode("utf-8"))
    record = Record(bytes(sealed), now + lifetime, officer_id, now)
    session_store(instance).save("token", token_id_hash(token_id), record, new=True)
    return base64.urlsafe_b64encode(token_id + key).rstrip(b"=").decode()


# A token in use is marked seen at most this often: one write a minute, not one a request.
TOKEN_SEEN_EVERY = timedelta(minutes=1)


def open_token(
    instance: Instance, token: str, idle: timedelta | None = None
) -> dict[str, Any] | None:
    """The state behind a bearer token, or None if it is unknown, damaged or expired.

    With `idle`, a token not used for that long has expired too (and is
    removed); one in use is marked seen (every TOKEN_SEEN_EVERY at most).
    """
    try:
        raw = base64.urlsafe_b64decode(token.encode("ascii") + b"==")
    except (binascii.Error, ValueError, UnicodeEncodeError):
        return None
    if len(raw) != 64:
        return None
    store = session_store(instance)
    id_hash = token_id_hash(raw[:32])
    record = store.load("token", id_hash)
    if record is None:
        return None
    if record.expires_at <= now_utc():
        store.delete("token", id_hash)
        return None
    try:
        state: dict[str, Any] = json.loads(SecretBox(raw[32:]).decrypt(record.state))
    except (nacl.exceptions.CryptoError, ValueError):
        return None
    if idle is not None:
        now = now_utc()
        seen = record.last_seen_at or now
        if seen + idle <= now:
            store.delete("token", id_hash)
            return None
        if now - seen >= TOKEN_SEEN_EVERY:
            store.save("token", id_hash, replace(record, last_seen_at=now), new=False)
    return state
