"""Checking the encrypted store against the database (`dropbox fsck`), and repairing it.

What a crash, an interrupted upload or a damaged disk can leave behind:

* **A blob without an item.** `items.add_item` makes the blob visible
  before its row is committed, so a crash in between leaves ciphertext whose
  key block was never stored: nothing can ever open it. A crash between
  removing a report's rows and unlinking its blobs leaves the same (its keys
  were shredded first).
* **A partial write**, ``tmp/<name>.part``: an upload or message whose request
  died before its blob was committed or discarded.
* **A leftover backup folder**, ``tmp/backup-*``: a `dropbox backup` that was
  killed (hard links to blobs and a database snapshot).
* **An item whose blob is missing** (a lost disk, a restore without its
  blobs, a file deleted by hand), **or whose blob has the wrong size** (a
  damaged disk): that item cannot be decrypted. The size of a body is exact
  (`crypto.envelope.body_size`), so this is checked without any key.
* Anything else under ``blobs/`` or ``tmp/``: reported, never touched.

It also counts, without any key, the key-block entries of offices that are
still X25519 alone (`classical_office_entries`): what a future quantum
computer could open, until `dropbox office reseal` replaces them. This is
told, not counted as a problem.

Servers may keep running: the check reads in readers (`Instance.readers`),
which on SQLite hold no lock that uploads would wait for. A blob is renamed
into place (which sets its ctime) moments before its row commits, and a
partial write grows while its request streams in, so a stray file counts as
a leftover only once it is older than the grace period; younger ones are
counted as in progress and left alone. With every server stopped, a grace
period of zero settles everything. Each removal checks the database again
first: a blob that an item refers to is never removed.

Items without their blob are kept by `repair` unless asked otherwise: the
row holds the item's only key block, so putting the blob back from a backup
makes the item whole again, and removing the row would make that
impossible. With ``forget_missing`` they are removed (the operator has
decided the blobs are lost), their key blocks shredded first, each recorded
in the audit log.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from crypto import envelope
from crypto.envelope import body_size
from crypto.errors import DecryptionError
from crypto.keys import public_key_from_bytes
from dropbox import audit
from dropbox.instance import Instance
from dropbox.models import Item, ItemRead, Report
from dropbox.store import BlobNotFound, Store, size_text

ACTOR = "fsck"
# Longer than any request or backup can last: a 500 MiB upload over a slow
# Tor circuit takes hours, and a partial write is only touched while its own
# part streams in.
DEFAULT_GRACE = timedelta(hours=24)
PARTIAL_SUFFIX = ".part"
BACKUP_PREFIX = "backup-"
_FAN_OUT = re.compile(r"^[0-9a-f]{2}$")
_BLOB_NAME = re.compile(r"^[0-9a-f]{32}$")
# At most this many names go into one IN (...) list (bound parameters are limited).
_BATCH = 500


@dataclass(frozen=True)
class StrayFile:
    """A file or folder in the data directory that nothing in the database refers to."""

    path: Path
    size: int
    settled: bool  # older than the grace period: a leftover, not work in progress


@dataclass(frozen=True)
class BrokenItem:
    """An item row whose blob is missing or has the wrong size: it cannot be decrypted."""

    item_id: str
    report_id: str
    designation: str
    kind: str
    blob: str
    expected_size: int
    found_size: int | None  # None: the blob is missing

    @property
    def missing(self) -> bool:
        """True if the blob is not there at all (rather than there with the wrong size)."""
        return self.found_size is None


@dataclass
class Findings:
    """What a check found in one data directory and its database."""

    data_dir: Path
    blobs: int = 0
    items: int = 0
    orphan_blobs: list[StrayFile] = field(default_factory=list)
    partial_writes: list[StrayFile] = field(default_factory=list)
    backup_leftovers: list[StrayFile] = field(default_factory=list)
    unexpected: list[Path] = field(default_factory=list)
    broken_items: list[BrokenItem] = field(default_factory=list)
    # X25519 entries of offices (every entry but the source's), and the items that hold them.
    classical_entries: int = 0
    classical_items: int = 0

    def _stray(self) -> Iterator[StrayFile]:
        """Every stray file found, settled or not."""
        yield from self.orphan_blobs
        yield from self.partial_writes
        yield from self.backup_leftovers

    @property
    def leftovers(self) -> list[StrayFile]:
        """Stray files old enough to be leftovers: what `repair` removes."""
        return [stray for stray in self._stray() if stray.settled]

    @property
    def in_progress(self) -> list[StrayFile]:
        """Stray files younger than the grace period, left alone (uploads or backups running)."""
        return [stray for stray in self._stray() if not stray.settled]

    @property
    def missing_blobs(self) -> list[BrokenItem]:
        """Items whose blob is not there at all."""
        return [item for item in self.broken_items if item.missing]

    @property
    def damaged_blobs(self) -> list[BrokenItem]:
        """Items whose blob is there with the wrong size."""
        return [item for item in self.broken_items if not item.missing]

    @property
    def problems(self) -> int:
        """How many things need attention (stray files in progress are not problems)."""
        return len(self.leftovers) + len(self.unexpected) + len(self.broken_items)


@dataclass
class Repairs:
    """What a repair did."""

    orphan_blobs: int = 0
    partial_writes: int = 0
    backup_leftovers: int = 0
    forgotten_items: int = 0
    # Found stray, but referred to by the time of removal (an upload committed): kept.
    kept_referenced: int = 0

    @property
    def removed(self) -> int:
        """Files and folders removed."""
        return self.orphan_blobs + self.partial_writes + self.backup_leftovers


def _age_seconds(stat: os.stat_result, now: float) -> float:
    """Seconds since the entry last changed: its content (mtime) or its name (ctime, on rename)."""
    return now - max(stat.st_mtime, stat.st_ctime)


def _tree_size_and_age(folder: Path, now: float) -> tuple[int, float]:
    """Total size of a folder's files, and the age of its most recent change."""
    stat = folder.stat()
    size, age = 0, _age_seconds(stat, now)
    for root, _, files in os.walk(folder):
        for name in files:
            with contextlib.suppress(FileNotFoundError):
                entry = os.stat(Path(root) / name)
                size += entry.st_size
                age = min(age, _age_seconds(entry, now))
    return size, age


def scan_blob_files(store: Store) -> tuple[dict[str, os.stat_result], list[Path]]:
    """Every blob file by name with its stat, and whatever else lies under the blob folder."""
    blobs: dict[str, os.stat_result] = {}
    unexpected: list[Path] = []
    for directory in sorted(store.blob_dir.iterdir()):
        if not (directory.is_dir() and _FAN_OUT.match(directory.name)):
            unexpected.append(directory)
            continue
        for entry in sorted(directory.iterdir()):
            name = entry.name
            if not (_BLOB_NAME.match(name) and name.startswith(directory.name)):
                unexpected.append(entry)
                continue
            try:
                stat = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue  # removed while we looked: a deleted report's blob
            if entry.is_symlink() or not entry.is_file():
                unexpected.append(entry)
                continue
            blobs[name] = stat
    return blobs, unexpected


def scan_temporary_files(
    store: Store, grace: timedelta, now: float
) -> tuple[list[StrayFile], list[StrayFile], list[Path]]:
    """Partial writes and leftover backup folders in the temporary folder, and anything else."""
    partials: list[StrayFile] = []
    backups: list[StrayFile] = []
    unexpected: list[Path] = []
    limit = grace.total_seconds()
    for entry in sorted(store.temp_dir.iterdir()):
        try:
            if entry.name.endswith(PARTIAL_SUFFIX) and entry.is_file() and not entry.is_symlink():
                stat = entry.stat()
                partials.append(StrayFile(entry, stat.st_size, _age_seconds(stat, now) >= limit))
            elif entry.name.startswith(BACKUP_PREFIX) and entry.is_dir() and not entry.is_symlink():
                size, age = _tree_size_and_age(entry, now)
                backups.append(StrayFile(entry, size, age >= limit))
            else:
                unexpected.append(entry)
        except FileNotFoundError:
            continue  # committed, discarded or cleaned up while we looked
    return partials, backups, unexpected


@dataclass(frozen=True)
class _ItemRow:
    """What a check needs of an item row to name it in its findings."""

    item_id: str
    report_id: str
    designation: str
    kind: str
    size: int


def referenced_blobs(session: Session) -> dict[str, _ItemRow]:
    """Every blob name an item refers to, with what the report needs to name the item."""
    rows = session.execute(
        select(Item.blob, Item.id, Item.report_id, Report.designation, Item.kind, Item.size).join(
            Report, Report.id == Item.report_id
        )
    )
    return {
        row.blob: _ItemRow(row.id, row.report_id, row.designation, row.kind, row.size)
        for row in rows
    }


def _batches(names: Iterable[str]) -> Iterator[list[str]]:
    """The names in lists short enough for one IN (...)."""
    batch: list[str] = []
    for name in names:
        batch.append(name)
        if len(batch) == _BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def still_referenced(session: Session, names: Iterable[str]) -> set[str]:
    """Which of these blob names an item refers to now."""
    found: set[str] = set()
    for batch in _batches(names):
        found.update(session.execute(select(Item.blob).where(Item.blob.in_(batch))).scalars())
    return found


def classical_office_entries(session: Session) -> tuple[int, int]:
    """(entries, items): key-block entries that are X25519 and not the source's.

    A source's entry is left out: X25519 for a report made before sources
    got hybrid keys, which keeps it (docs/security.md, 6a); every other
    entry is an office's, and one that is X25519 is sealed with X25519
    alone. A key block that does not parse is left to the other checks.
    """
    entries = items = 0
    rows = session.execute(
        select(Item.key_block, Report.source_public_key).join(Report, Report.id == Item.report_id)
    )
    for key_block, source_key in rows:
        try:
            source = envelope.recipient_id(public_key_from_bytes(source_key))
        except ValueError:
            source = b""  # a damaged row: every X25519 entry is then counted
        try:
            found = envelope.recipient_entries(key_block)
        except DecryptionError:
            continue
        classical = sum(1 for rid, hybrid in found if not hybrid and rid != source)
        entries += classical
        items += classical > 0
    return entries, items


def _blob_stat(store: Store, name: str) -> os.stat_result | None:
    """The blob's stat, or None if it is missing (or its name could not be a blob's)."""
    try:
        return store.path(name).stat()
    except (BlobNotFound, FileNotFoundError):
        return None


def check(
    instance: Instance, grace: timedelta = DEFAULT_GRACE, now: float | None = None
) -> Findings:
    """Compare the blobs on disk with the item rows; change nothing (`now`: seconds since epoch)."""
    store = instance.store
    now = time.time() if now is None else now
    findings = Findings(instance.config.data_dir)
    # Files first, rows second: a blob listed here whose row commits later is
    # young (the grace period covers it), and a row already committed is seen.
    blob_files, unexpected = scan_blob_files(store)
    partials, backups, unexpected_temporary = scan_temporary_files(store, grace, now)
    with instance.readers() as session:
        referenced = referenced_blobs(session)
        findings.classical_entries, findings.classical_items = classical_office_entries(session)
    findings.blobs, findings.items = len(blob_files), len(referenced)
    findings.partial_writes, findings.backup_leftovers = partials, backups
    findings.unexpected = unexpected + unexpected_temporary
    limit = grace.total_seconds()
    for name, stat in blob_files.items():
        if name not in referenced:
            settled = _age_seconds(stat, now) >= limit
            findings.orphan_blobs.append(StrayFile(store.path(name), stat.st_size, settled))
    suspects: list[BrokenItem] = []
    for name, row in referenced.items():
        listed = blob_files.get(name)
        # Not listed: it may have been committed after the listing; look again.
        current = listed if listed is not None else _blob_stat(store, name)
        expected = body_size(row.size)
        found = None if current is None else current.st_size
        if found != expected:
            suspects.append(
                BrokenItem(
                    row.item_id, row.report_id, row.designation, row.kind, name, expected, found
                )
            )
    if suspects:
        # A report deleted since the rows were read has its blobs unlinked
        # only after its rows are gone: an item still there now had its blob
        # missing for another reason.
        with instance.readers() as session:
            alive = still_referenced(session, (s.blob for s in suspects))
        findings.broken_items = [s for s in suspects if s.blob in alive]
    return findings


def remove_orphan_blobs(instance: Instance, orphans: list[StrayFile], repairs: Repairs) -> None:
    """Unlink settled blobs without an item, unless an item has come to refer to one since."""
    names = [stray.path.name for stray in orphans if stray.settled]
    with instance.readers() as session:
        referenced = still_referenced(session, names)
    for name in names:
        if name in referenced:
            repairs.kept_referenced += 1
            continue
        instance.store.delete(name)
        repairs.orphan_blobs += 1


def remove_partial_writes(partials: list[StrayFile], repairs: Repairs) -> None:
    """Remove settled partial writes (never committed, so nothing refers to them)."""
    for stray in partials:
        if stray.settled:
            with contextlib.suppress(FileNotFoundError):
                stray.path.unlink()
            repairs.partial_writes += 1


def remove_backup_leftovers(backups: list[StrayFile], repairs: Repairs) -> None:
    """Remove the staging folders of backups that were killed."""
    for stray in backups:
        if stray.settled:
            shutil.rmtree(stray.path, ignore_errors=True)
            repairs.backup_leftovers += 1


def forget_missing_items(instance: Instance, broken: list[BrokenItem], repairs: Repairs) -> None:
    """Remove items whose blob is missing: shred the key block, drop the row, audit it."""
    for suspect in broken:
        if not suspect.missing:
            continue
        with instance.sessions.begin() as session:
            item = session.get(Item, suspect.item_id)
            # Checked again inside the transaction that removes it.
            if item is None or _blob_stat(instance.store, item.blob) is not None:
                continue
            item.key_block = bytes(len(item.key_block))
            session.flush()
            session.execute(delete(ItemRead).where(ItemRead.item_id == item.id))
            session.delete(item)
            audit.record(
                session,
                ACTOR,
                "item.forget",
                report_id=item.report_id,
                detail=f"{item.id} ({item.kind}): blob {item.blob} missing",
            )
        repairs.forgotten_items += 1


def repair(instance: Instance, findings: Findings, *, forget_missing: bool = False) -> Repairs:
    """Remove the settled leftovers found, and (if asked) the items whose blob is missing."""
    repairs = Repairs()
    remove_orphan_blobs(instance, findings.orphan_blobs, repairs)
    remove_partial_writes(findings.partial_writes, repairs)
    remove_backup_leftovers(findings.backup_leftovers, repairs)
    if forget_missing:
        forget_missing_items(instance, findings.broken_items, repairs)
    return repairs


# --- what the command prints ---------------------------------------------------


def count(number: int, singular: str, plural: str) -> str:
    """'1 blob', '2 blobs'."""
    return f"{number} {singular if number == 1 else plural}"


def finding_lines(findings: Findings) -> Iterator[str]:
    """One line per thing found, paths relative to the data directory."""

    def shown(path: Path) -> str:
        """The path relative to the data directory, where it is inside."""
        return (
            str(path.relative_to(findings.data_dir))
            if path.is_relative_to(findings.data_dir)
            else str(path)
        )

    labels = (
        ("blob without an item", findings.orphan_blobs),
        ("partial write", findings.partial_writes),
        ("leftover backup folder", findings.backup_leftovers),
    )
    for label, strays in labels:
        for stray in strays:
            if stray.settled:
                yield f"  {label + ':':<26} {shown(stray.path)} ({size_text(stray.size)})"
    for path in findings.unexpected:
        yield f"  {'unexpected, left alone:':<26} {shown(path)}"
    for item in findings.broken_items:
        where = f'item {item.item_id} ({item.kind}) of report "{item.designation}"'
        blob = f"blobs/{item.blob[:2]}/{item.blob}"
        if item.missing:
            yield f"  {'item without its blob:':<26} {where}: {blob} is missing"
        else:
            yield (
                f"  {'damaged blob:':<26} {where}: {blob} has {item.found_size} "
                f"bytes, {item.expected_size} expected"
            )


def report_lines(
    findings: Findings,
    repairs: Repairs | None,
    after: Findings,
    *,
    grace_minutes: int,
    repaired: bool,
) -> Iterator[str]:
    """What `dropbox fsck` prints: what was found, what was removed, what is left to do.

    `after` is the check run again after `repair` (`findings` itself when
    nothing was repaired); the command exits 1 when it still has problems.
    """
    yield f"Checked {findings.data_dir}: {findings.blobs} blobs, {findings.items} items."
    yield from finding_lines(findings)
    entries = count(findings.classical_entries, "key-block entry", "key-block entries")
    yield (
        f"Classical-only office entries: {entries} of offices sealed with X25519 alone"
        f" (in {count(findings.classical_items, 'item', 'items')})."
    )
    if findings.classical_entries:
        yield (
            "  An office upgraded to X-Wing re-seals them with 'dropbox office reseal CODE';"
            " one still on X25519 is upgraded first with 'dropbox office upgrade CODE'."
        )
    if findings.in_progress:
        yield (
            f"Left alone: {count(len(findings.in_progress), 'stray file', 'stray files')} "
            f"younger than {grace_minutes} minutes (uploads or backups in progress?)."
        )
    if repairs is not None:
        yield (
            f"Removed {count(repairs.orphan_blobs, 'blob', 'blobs')} without an item, "
            f"{count(repairs.partial_writes, 'partial write', 'partial writes')} and "
            f"{count(repairs.backup_leftovers, 'backup leftover', 'backup leftovers')}."
        )
        if repairs.kept_referenced:
            yield (
                f"Kept {count(repairs.kept_referenced, 'blob', 'blobs')} that an item came to "
                "refer to meanwhile."
            )
        if repairs.forgotten_items:
            yield (
                f"Removed {count(repairs.forgotten_items, 'item', 'items')} whose blob is "
                "missing (recorded in the audit log)."
            )
    if after.problems == 0:
        yield "The blobs and the database agree."
        return
    if after.missing_blobs:
        yield (
            "An item without its blob cannot be decrypted. Put the blob back from a backup "
            "(the database still holds the item's key); if it is lost for good, remove the "
            "item with 'dropbox fsck --repair --forget-missing'."
        )
    if after.damaged_blobs:
        yield "A damaged blob cannot be decrypted: put it back from a backup."
    if after.unexpected:
        yield "Unexpected entries are never removed: look at them, then move them away."
    if after.leftovers:
        leftovers = count(len(after.leftovers), "leftover", "leftovers")
        yield f"Run 'dropbox fsck --repair' to remove the {leftovers} above."
    problems = count(after.problems, "problem", "problems")
    verb = ("remains" if after.problems == 1 else "remain") if repaired else "found"
    yield f"{problems} {verb}."
