"""Re-sealing an office's old key blocks to its X-Wing key (`dropbox office reseal`).

An office upgraded from X25519 (`offices.upgrade`) holds a key chain: its new
X-Wing key, then its old X25519 key. Items sealed before the upgrade have an
entry for the old key only, which a future quantum computer could open. This
gives each of them an entry for the new key and removes the old key's
(`crypto.envelope.add_recipient`, `remove_recipient`): only the key block in
the item's row changes, never the body on disk.

It runs where the office key is opened: the administrator's one command run,
with the office's recovery file and its passphrase (as `office recover`
does); the servers never hold the key. Items are taken in batches in the
order of their ids, each batch in its own transaction with its rows locked
(`FOR UPDATE` on PostgreSQL, SQLite's write lock), so a referral at the same
time waits rather than being overwritten. A run that is killed keeps every
batch it committed; run again, it finds no old entry in those items and
carries on with the rest. Each run that ends records one `office.reseal`
audit event with its counts.

Once no item is left with an entry its old key opens, `retire_old_keys`
(`dropbox office retire-old-keys`) takes the old keys out of the office's
chain: a new recovery file holds the X-Wing key alone, and the grants, which
held the old keys too, are removed for the office's officers to be granted
again. The public key, and so the configuration's pin, stays the same.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from crypto import envelope, recovery
from crypto.errors import DecryptionError
from crypto.kdf import KdfCost
from crypto.keys import KeyChain, SecretKey, fingerprint, is_hybrid
from dropbox import audit, offices
from dropbox.errors import AccessDenied, DropboxError
from dropbox.instance import Instance
from dropbox.models import Item, Office, OfficeGrant

DEFAULT_BATCH = 200


@dataclass
class ResealRun:
    """What one run did."""

    code: str
    checked: int = 0  # items looked at
    resealed: int = 0  # items whose old entries were replaced by an X-Wing entry
    batches: int = 0  # batches committed
    damaged: list[str] = field(default_factory=list)  # item ids whose key block did not open


def _resealed(key_block: bytes, chain: KeyChain, old_ids: set[bytes]) -> bytes | None:
    """The key block with the old keys' entries replaced by one for the current key; None if
    it holds no entry for an old key. DecryptionError if it does but does not open."""
    if old_ids.isdisjoint(envelope.recipient_ids(key_block)):
        return None
    key_block = envelope.add_recipient(key_block, chain, chain.public_key)
    for older in chain.previous:
        key_block = envelope.remove_recipient(key_block, older.public_key)
    return key_block


def reseal(
    instance: Instance,
    code: str,
    chain: KeyChain,
    actor: str,
    *,
    batch_size: int = DEFAULT_BATCH,
    after_batch: Callable[[ResealRun], None] | None = None,
) -> ResealRun:
    """Re-seal every item with an entry for one of `chain`'s older keys to its current key.

    `chain` must be the office's chain, checked by the caller against the
    office's public key (`offices.open_recovery_file`) and X-Wing. `after_batch`
    is called after each batch commits (the command prints progress there).
    """
    if not is_hybrid(chain):
        raise DropboxError(
            f"office {code}'s key is X25519: give it an X-Wing key first"
            f" ('dropbox office upgrade {code}')"
        )
    if batch_size < 1:
        raise DropboxError("the batch size must be at least 1")
    run = ResealRun(code)
    old_ids = {envelope.recipient_id(key.public_key) for key in chain.previous}
    if not old_ids:
        _record(instance, actor, run)
        return run
    after = ""
    while True:
        with instance.sessions.begin() as session:
            items = (
                session.execute(
                    select(Item)
                    .where(Item.id > after)
                    .order_by(Item.id)
                    .limit(batch_size)
                    .with_for_update()
                )
                .scalars()
                .all()
            )
            if not items:
                break
            for item in items:
                run.checked += 1
                try:
                    new = _resealed(item.key_block, chain, old_ids)
                except (DecryptionError, ValueError):
                    run.damaged.append(item.id)
                    continue
                if new is not None:
                    item.key_block = new
                    run.resealed += 1
            after = items[-1].id
        run.batches += 1
        if after_batch is not None:
            after_batch(run)
    _record(instance, actor, run)
    return run


def _record(instance: Instance, actor: str, run: ResealRun) -> None:
    with instance.sessions.begin() as session:
        audit.record(
            session,
            actor,
            "office.reseal",
            detail=(
                f"{run.code}: {run.resealed} re-sealed, {len(run.damaged)} damaged,"
                f" {run.checked} checked in {run.batches} batches"
            ),
        )


# --- retiring the old keys once nothing needs them -------------------------------------------


@dataclass
class OldEntries:
    """Key-block entries for an office's old keys: what still needs them, and what never opens."""

    sealed: int = 0  # entries an old key opens: items that would be lost without it
    damaged: int = 0  # entries under an old key's id that it does not open: nothing opens them


def _opens(key_block: bytes, key: SecretKey) -> bool:
    """Whether `key` opens its own entry of the key block (nothing is changed)."""
    try:
        # Adding a recipient that is there already opens the block and changes nothing.
        envelope.add_recipient(key_block, key, key.public_key)
    except (DecryptionError, ValueError):
        return False
    return True


def old_entries(session: Session, chain: KeyChain) -> OldEntries:
    """Count every item's entries for one of `chain`'s older keys, opening each with it.

    These are the office's classical-only entries (`fsck.classical_office_entries`
    counts them for every office at once, without a key). A key block that
    does not parse holds no entry anyone opens and is left to `dropbox fsck`.
    """
    found = OldEntries()
    older = {envelope.recipient_id(key.public_key): key for key in chain.previous}
    if not older:
        return found
    for (key_block,) in session.execute(select(Item.key_block)):
        try:
            ids = envelope.recipient_ids(key_block)
        except DecryptionError:
            continue
        for rid in ids:
            key = older.get(rid)
            if key is None:
                continue
            if _opens(key_block, key):
                found.sealed += 1
            else:
                found.damaged += 1
    return found


def retire_old_keys(
    session: Session, code: str, chain: KeyChain, cost: KdfCost, actor: str
) -> tuple[Office, KeyChain, bytes, str, OldEntries]:
    """Take an upgraded office's old keys out of its chain, once no item needs them.

    `chain` is the office's chain, opened from its recovery file. Refused
    while an item still has an entry one of the old keys opens ('dropbox
    office reseal' first). Returns the office, the new chain (the X-Wing key
    alone: the same public key, so the pin stays), its recovery file and that
    file's passphrase, and the old entries that were counted (only damaged
    ones, which nothing opens). The office's grants held the old keys too:
    they are removed here (counted in the `office.retire` event), and the
    caller grants the new chain again, each to an officer key checked
    against the fingerprint its officer reads out.
    """
    office = offices.get(session, code)
    if bytes(chain.public_key) != office.public_key:
        raise AccessDenied(f"that key is not {code}'s office key")
    if not is_hybrid(chain):
        raise DropboxError(
            f"office {code}'s key is X25519: give it an X-Wing key first"
            f" ('dropbox office upgrade {code}')"
        )
    if not chain.previous:
        raise DropboxError(
            f"office {code}'s key chain holds its X-Wing key alone: there is nothing to retire"
        )
    left = old_entries(session, chain)
    if left.sealed:
        raise DropboxError(
            f"{left.sealed} key-block entries of office {code} are still sealed to its old key"
            f" alone: run 'dropbox office reseal {code}' with this recovery file first, then"
            " this command again"
        )
    retired = KeyChain((chain.current,))
    passphrase = recovery.generate_passphrase()
    recovery_file = recovery.dump(code, retired, passphrase, cost)
    removed = session.scalar(
        select(func.count()).select_from(OfficeGrant).where(OfficeGrant.office_code == code)
    )
    session.execute(delete(OfficeGrant).where(OfficeGrant.office_code == code))
    old = ", ".join(fingerprint(key.public_key) for key in chain.previous)
    audit.record(
        session,
        actor,
        "office.retire",
        detail=(
            f"{code} {fingerprint(retired.public_key)}: retired {old}; {removed} grants removed;"
            f" {left.damaged} damaged entries left"
        ),
    )
    return office, retired, recovery_file, passphrase, left
