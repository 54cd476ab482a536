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
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import select

from crypto import envelope
from crypto.errors import DecryptionError
from crypto.keys import KeyChain, is_hybrid
from dropbox import audit
from dropbox.errors import DropboxError
from dropbox.instance import Instance
from dropbox.models import Item

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
