"""Offices: creating their key pairs, recovery files, and granting officers access."""

from __future__ import annotations

from datetime import UTC, datetime

from nacl.public import PrivateKey, PublicKey
from sqlalchemy import select
from sqlalchemy.orm import Session

from crypto import recovery
from crypto.errors import DecryptionError
from crypto.kdf import KdfCost
from crypto.keys import fingerprint, generate_keypair, open_sealed_secret_key, seal_secret_key
from dropbox import audit
from dropbox.config import Config
from dropbox.errors import AccessDenied, DropboxError, NotFound
from dropbox.models import Office, OfficeGrant, Officer


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None, microsecond=0)


def get(session: Session, code: str) -> Office:
    """The office with this code, or NotFound."""
    office = session.get(Office, code)
    if office is None:
        raise NotFound(f"office {code} has no keys yet; run 'dropbox office create {code}'")
    return office


def create(
    session: Session, config: Config, code: str, cost: KdfCost, actor: str
) -> tuple[Office, PrivateKey, bytes, str]:
    """Generate an office key pair; return the office, its secret key, recovery file and passphrase.

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
    secret_key = generate_keypair()
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


def open_recovery_file(session: Session, code: str, data: bytes, passphrase: str) -> PrivateKey:
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


def grant(
    session: Session,
    code: str,
    officer: Officer,
    office_secret_key: PrivateKey,
    actor: str,
    granted_by: Officer | None = None,
) -> OfficeGrant:
    """Give an officer access to an office by sealing the office key to the officer's key."""
    office = get(session, code)
    if bytes(office_secret_key.public_key) != office.public_key:
        raise AccessDenied(f"that key is not {code}'s office key")
    if officer.public_key is None or not officer.active:
        raise DropboxError(f"{officer.username} has not finished enrolment or is deactivated")
    existing = session.get(OfficeGrant, (officer.id, code))
    sealed = seal_secret_key(office_secret_key, PublicKey(officer.public_key))
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


def office_key(
    session: Session, officer: Officer, officer_key: PrivateKey, code: str
) -> PrivateKey:
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
