"""Offices: creating their key pairs, recovery files, and granting officers access.

`grant` seals an office key held in this process (the CLI's bootstrap from a
recovery file, the demo, tests); the case server only stores a key sealed on
an officer's machine (`store_grant`).
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from crypto import recovery
from crypto.errors import DecryptionError
from crypto.kdf import KdfCost
from crypto.keys import (
    KeyChain,
    Recipient,
    fingerprint,
    generate_hybrid_key,
    is_hybrid,
    is_sealed_secret_key,
    is_sealed_to_kind_of,
    open_sealed_secret_key,
    public_key_from_bytes,
    seal_secret_key,
)
from dropbox import audit
from dropbox.config import Config, fingerprint_digest
from dropbox.errors import AccessDenied, DropboxError, NotFound
from dropbox.models import Office, OfficeGrant, Officer


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None, microsecond=0)


class KeyMismatch(DropboxError):
    """A public key on the server is not the one the caller can vouch for: nothing was sealed to it.

    The message is for the officer; `detail` is for the `key.mismatch` audit
    event (which key, against what; never any content).
    """

    def __init__(self, message: str, detail: str) -> None:
        super().__init__(message)
        self.detail = detail


def _office_mismatch(code: str, against: str) -> KeyMismatch:
    return KeyMismatch(
        f"Nothing was sent: the key of office {code} on the server does not match {against}."
        " An administrator should check the server.",
        f"office key: {code} differs from {against}",
    )


def stored_key(public_key: bytes | None) -> Recipient | None:
    """A public key as the database holds it (X25519 or X-Wing), or None if it is no key."""
    if public_key is None:
        return None
    try:
        return public_key_from_bytes(public_key)
    except ValueError:
        return None


def _digest(public_key: Recipient) -> bytes:
    """What a public key's fingerprint stands for (an office's or an officer's)."""
    digest = fingerprint_digest(fingerprint(public_key))
    assert digest is not None  # noqa: S101 - fingerprint() always writes a valid one
    return digest


def pinned_digest(config: Config, code: str) -> bytes | None:
    """The fingerprint the configuration pins for an office's key, or None if it pins none."""
    try:
        text = config.office(code).fingerprint
    except KeyError:
        return None
    return fingerprint_digest(text) if text else None


def trusted_public_key(
    session: Session, config: Config, code: str, *, holding: KeyChain | None = None
) -> Recipient:
    """An office's public key from the database, once it is checked: the only key to seal to.

    Whoever can write the database alone could otherwise put in a key of
    their own and read everything sealed afterwards. The key must equal the
    public half of `holding` (the office's secret key, if the caller holds
    it) and must match the fingerprint the configuration pins for the
    office. Both are checked when both are there: a held key comes from a
    grant in the same database, and a grant can be replaced by one sealing
    another key to the officer. KeyMismatch if either differs; NotFound if
    the office has no key. With neither (no pin, no held key) the key is
    taken as it is: `pin_status` reports such an office as not pinned.
    """
    stored = get(session, code).public_key
    key = stored_key(stored)
    if key is None:
        raise _office_mismatch(code, "any key (it is damaged)")
    if holding is not None and not hmac.compare_digest(bytes(holding.public_key), stored):
        raise _office_mismatch(code, "the office key you hold")
    pinned = pinned_digest(config, code)
    if pinned is not None and not hmac.compare_digest(_digest(key), pinned):
        raise _office_mismatch(code, "the fingerprint pinned in the configuration")
    return key


@dataclass(frozen=True)
class PinStatus:
    """How an office's key in the database stands against the configuration's pin."""

    code: str
    fingerprint: str | None  # of the key in the database; None if the office has no key yet
    state: str  # "pinned" (matches), "differs", "not pinned" or "no key"


def pin_status(session: Session, config: Config) -> list[PinStatus]:
    """Each configured office's key checked against its pin (for `dropbox office list`)."""
    found = []
    for settings in config.offices:
        office = session.get(Office, settings.code)
        if office is None:
            found.append(PinStatus(settings.code, None, "no key"))
            continue
        key = stored_key(office.public_key)
        shown = fingerprint(key) if key is not None else ""
        pinned = pinned_digest(config, settings.code)
        if pinned is None:
            state = "not pinned"
        elif key is not None and hmac.compare_digest(_digest(key), pinned):
            state = "pinned"
        else:
            state = "differs"
        found.append(PinStatus(settings.code, shown, state))
    return found


def config_line(public_key: Recipient) -> str:
    """The line to add to an office's [[offices]] table to pin its key."""
    return f'fingerprint = "{fingerprint(public_key)}"'


def get(session: Session, code: str) -> Office:
    """The office with this code, or NotFound."""
    office = session.get(Office, code)
    if office is None:
        raise NotFound(f"office {code} has no keys yet; run 'dropbox office create {code}'")
    return office


def create(
    session: Session, config: Config, code: str, cost: KdfCost, actor: str
) -> tuple[Office, KeyChain, bytes, str]:
    """Generate an office key (X-Wing); return the office, its key, recovery file and passphrase.

    The secret key is returned so the caller can grant it at once; it is
    stored nowhere but in the recovery file, wrapped under the passphrase.
    """
    try:
        settings = config.office(code)
    except KeyError:
        known = ", ".join(o.code for o in config.offices)
        raise DropboxError(f"unknown office {code!r}; the configuration names {known}") from None
    if session.get(Office, code) is not None:
        raise DropboxError(f"office {code} already has keys; use 'dropbox office recover'")
    secret_key = generate_hybrid_key()
    passphrase = recovery.generate_passphrase()
    recovery_file = recovery.dump(code, secret_key, passphrase, cost)
    office = Office(
        code=code, name=settings.name, public_key=bytes(secret_key.public_key), created_at=_now()
    )
    session.add(office)
    audit.record(
        session, actor, "office.create", detail=f"{code} {fingerprint(secret_key.public_key)}"
    )
    return office, secret_key, recovery_file, passphrase


def upgrade(
    session: Session, code: str, chain: KeyChain, cost: KdfCost, actor: str
) -> tuple[Office, KeyChain, bytes, str]:
    """Give an office whose key is X25519 a new X-Wing key, keeping the old one behind it.

    `chain` is the office's key chain, opened from its recovery file. The new
    chain is the new X-Wing key followed by every key of `chain`, so items
    sealed to the old key still open; `dropbox office reseal` then re-seals
    them to the new key. Returns the office, the new chain, its recovery file
    (to replace the old one) and that file's passphrase. Every grant of the
    office held the old chain alone: they are removed here (counted in the
    `office.upgrade` event), and the caller grants the new chain again, each
    to an officer key checked against the fingerprint its officer reads out.
    """
    office = get(session, code)
    if not hmac.compare_digest(bytes(chain.public_key), office.public_key):
        raise AccessDenied(f"that key is not {code}'s office key")
    if is_hybrid(chain):
        raise DropboxError(f"office {code}'s key is X-Wing already: nothing to upgrade")
    upgraded = KeyChain((generate_hybrid_key().current, *chain.keys))
    passphrase = recovery.generate_passphrase()
    recovery_file = recovery.dump(code, upgraded, passphrase, cost)
    office.public_key = bytes(upgraded.public_key)
    grants = select(OfficeGrant).where(OfficeGrant.office_code == code)
    removed = len(session.execute(grants).scalars().all())
    session.execute(delete(OfficeGrant).where(OfficeGrant.office_code == code))
    audit.record(
        session,
        actor,
        "office.upgrade",
        detail=(
            f"{code} {fingerprint(upgraded.public_key)} replaces {fingerprint(chain.public_key)};"
            f" {removed} grants removed"
        ),
    )
    return office, upgraded, recovery_file, passphrase


def open_recovery_file(session: Session, code: str, data: bytes, passphrase: str) -> KeyChain:
    """Open an office's secret key from its recovery file, checking it is this office's key."""
    office = get(session, code)
    try:
        parsed = recovery.load(data)
    except recovery.RecoveryFileError as exc:
        raise DropboxError(str(exc)) from None
    if parsed.office != code or bytes(parsed.public_key) != office.public_key:
        raise DropboxError(f"this recovery file belongs to another office key, not {code}'s")
    try:
        return recovery.open_secret_key(parsed, passphrase)
    except DecryptionError:
        raise DropboxError("the recovery passphrase is not right for this file") from None


# Said by `check_officer_key` on a mismatch, and flashed on the grant page as it is.
OFFICER_KEY_WARNING = (
    "The key on the server for {username} does not match the fingerprint they read out:"
    " nothing was granted. Check it with them again; if it still differs, an administrator"
    " should check the server."
)

# Said for text that is not a key fingerprint at all: a typing slip, not a swapped key.
MALFORMED_FINGERPRINT = (
    "That is not a key fingerprint: type the 8 groups of 4 letters and digits the officer"
    " reads out from their account page."
)


def check_officer_key(session: Session, officer: Officer, read_out: str, actor: str) -> Recipient:
    """The officer's public key from the database, once it matches the fingerprint they read out.

    Whoever can write the database could put their own public key in the
    officer's row before a grant and receive the office key. The officer
    reads the fingerprint of the key they hold from their own account page,
    and the granting administrator types it here; it is compared in constant
    time with the key the database holds. A mismatch records a `key.mismatch`
    event, which the caller must commit although the grant fails, and raises
    KeyMismatch. Text that is no fingerprint is a DropboxError (no event).
    """
    read = fingerprint_digest(read_out)
    if read is None:
        raise DropboxError(MALFORMED_FINGERPRINT)
    stored = stored_key(officer.public_key)
    if stored is None or not hmac.compare_digest(_digest(stored), read):
        mismatch = KeyMismatch(
            OFFICER_KEY_WARNING.format(username=officer.username),
            f"officer key: {officer.username} differs from the fingerprint they read out",
        )
        audit.record(session, actor, "key.mismatch", detail=mismatch.detail)
        raise mismatch
    return stored


def grant(
    session: Session,
    code: str,
    officer: Officer,
    office_secret_key: KeyChain,
    actor: str,
    granted_by: Officer | None = None,
    *,
    read_out: str,
) -> OfficeGrant:
    """Give an officer access to an office by sealing the office key to the officer's key.

    `read_out` is the fingerprint of the officer's key as the officer read it
    out from their own account page: nothing is sealed to a key that does not
    match it (`check_officer_key`, whose `key.mismatch` event the caller
    commits). A caller that made the officer's key pair itself, in this
    process, passes that key's fingerprint.
    """
    office = get(session, code)
    if bytes(office_secret_key.public_key) != office.public_key:
        raise AccessDenied(f"that key is not {code}'s office key")
    if officer.public_key is None or not officer.active:
        raise DropboxError(f"{officer.username} has not finished enrolment or is deactivated")
    recipient = check_officer_key(session, officer, read_out, actor)
    existing = session.get(OfficeGrant, (officer.id, code))
    sealed = seal_secret_key(office_secret_key, recipient)
    if existing is not None:
        existing.sealed_office_key = sealed
        result = existing
    else:
        result = OfficeGrant(
            officer_id=officer.id,
            office_code=code,
            sealed_office_key=sealed,
            granted_by_id=granted_by.id if granted_by else None,
            granted_at=_now(),
        )
        session.add(result)
    audit.record(session, actor, "office.grant", detail=f"{code} to {officer.username}")
    return result


def store_grant(
    session: Session,
    code: str,
    officer: Officer,
    sealed: bytes,
    actor: str,
    granted_by: Officer | None = None,
) -> OfficeGrant:
    """Store an office key sealed to an officer, as the granting officer's machine sealed it.

    The case server holds no office key: the reviewer app of an officer who
    holds one (or an administrator with the recovery file) seals it to the
    new officer's public key after checking that key against the fingerprint
    the officer read out. Here only the shape is checked: the server cannot
    open it. The officer must be enrolled and active, and the key must be
    sealed as to a key of the type the officer holds now: their row is locked
    and read again, so that a grant sealed to the X25519 key an officer just
    replaced (`officers.replace_key`) is refused rather than stored.
    """
    get(session, code)
    if not is_sealed_secret_key(sealed):
        raise DropboxError("the sealed office key is not in the expected format")
    locked = session.get(Officer, officer.id, with_for_update=True, populate_existing=True)
    if locked is not None:
        officer = locked
    if officer.public_key is None or officer.auth_verifier is None or not officer.active:
        raise DropboxError(f"{officer.username} has not finished enrolment or is deactivated")
    current = stored_key(officer.public_key)
    if current is None or not is_sealed_to_kind_of(sealed, current):
        raise DropboxError(
            f"that office key was sealed to a key {officer.username} no longer has (their key"
            " changed): ask them to read out the fingerprint on their account page, and grant"
            " again"
        )
    existing = session.get(OfficeGrant, (officer.id, code))
    if existing is not None:
        existing.sealed_office_key = bytes(sealed)
        existing.granted_by_id = granted_by.id if granted_by else None
        existing.granted_at = _now()
        result = existing
    else:
        result = OfficeGrant(
            officer_id=officer.id,
            office_code=code,
            sealed_office_key=bytes(sealed),
            granted_by_id=granted_by.id if granted_by else None,
            granted_at=_now(),
        )
        session.add(result)
    audit.record(session, actor, "office.grant", detail=f"{code} to {officer.username}")
    return result


def office_key(session: Session, officer: Officer, officer_key: KeyChain, code: str) -> KeyChain:
    """Unseal an office's secret key for an officer who holds a grant."""
    found = session.get(OfficeGrant, (officer.id, code))
    if found is None or not officer.active:
        raise AccessDenied(f"you do not have access to {code}")
    try:
        return open_sealed_secret_key(found.sealed_office_key, officer_key)
    except DecryptionError:
        raise AccessDenied(f"your access to {code} cannot be opened; ask for a new grant") from None


def granted_codes(session: Session, officer: Officer) -> list[str]:
    """The codes of the offices an officer holds a grant for."""
    rows = session.execute(
        select(OfficeGrant.office_code)
        .where(OfficeGrant.officer_id == officer.id)
        .order_by(OfficeGrant.office_code)
    )
    return list(rows.scalars())
