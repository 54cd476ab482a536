"""Offline review on the server: export an office's new ciphertext, import what comes back.

`dropbox bundle export` writes an export bundle (`dropbox/bundles.py`,
docs/format.md) for an office that keeps its key off every networked
machine: each of its reports with something not yet exported, its metadata
and its whole sealed thread as stored. Nothing is decrypted; the server
holds no key. Items carried are marked (`Item.exported_in`) so that the next
export carries what is new, and every exported report gets a
`bundle.export` event.

`dropbox bundle import` stores the replies and notes an offline reviewer app
sealed, after checking the whole return bundle: its structure (in
`dropbox.bundles.read_return`), the export it answers, that every report
exists and is still the office's, and that every item is sealed exactly to
whom it must be (a note to the office, a reply to the office and that
report's source) and to nobody else. Any failure refuses the bundle whole:
nothing is stored. An item stored by an earlier import of the same bundle
is recognised and skipped, so importing twice adds nothing.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from sqlalchemy import select
from sqlalchemy.orm import Session

from crypto import envelope
from crypto.keys import public_key_from_bytes
from dropbox import api_schema as schema
from dropbox import audit, bundles, cases, officers
from dropbox.bundles import BundleRefused, ExportManifest, ReturnItem
from dropbox.instance import Instance
from dropbox.items import StoredEnvelope, add_item, new_id, officer_now
from dropbox.models import (
    BundleTransfer,
    Item,
    ItemKind,
    ItemRead,
    Office,
    Officer,
    Outcome,
    Report,
    Status,
)
from dropbox.store import BlobNotFound

ACTOR = "command line"
# Who wrote an imported item, in the audit log, when no officer is named for it.
OFFLINE_ACTOR = "offline review"


@dataclass(frozen=True)
class ExportSummary:
    """What an export wrote."""

    path: Path
    bundle_id: str
    size: int
    reports: int
    new_items: int
    files: int


@dataclass(frozen=True)
class ImportSummary:
    """What an import stored."""

    bundle_id: str
    replies: int
    notes: int
    reports: int
    already: int


# --- export ------------------------------------------------------------------------------


def _report(
    instance: Instance,
    session: Session,
    report: Report,
    everything: bool,
    files: dict[str, int],
) -> schema.ReportBundle:
    """The report whole, as the office handling it reads it; its files to carry into `files`.

    A file's body is carried when it was never exported (always with `everything`).
    """
    items = cases.sealed_items(
        instance, session, cases.items_of(session, report), lambda i: i.exported_in is None
    )
    for shown in items:
        carried = everything or shown.item.exported_in is None
        if shown.item.kind == ItemKind.FILE and carried and shown.body_length:
            files[shown.item.id] = shown.body_length
    return cases.report_bundle(
        session, report, items, reading_office=report.office_code, handling=True, assignees=[]
    )


def _reports_to_export(session: Session, code: str, everything: bool) -> list[Report]:
    query = select(Report).where(Report.office_code == code)
    if not everything:
        pending = select(Item.report_id).where(Item.exported_in.is_(None))
        query = query.where(Report.id.in_(pending))
    return list(session.execute(query.order_by(Report.received_at, Report.id)).scalars())


def export(
    instance: Instance, code: str, path: Path, *, everything: bool = False
) -> ExportSummary | None:
    """Write office `code`'s new ciphertext to a new bundle at `path`; None if nothing is new.

    A report goes in whole (every item's key block, the body of every
    message, reply, note and reason) when it has an item not yet exported,
    or always with `everything`. A file's body goes in when it was never
    exported (always with `everything`); otherwise its head alone, enough to
    list it. Identity details go as their head only. Items carried are
    marked exported, and each report gets a `bundle.export` event, in the
    transaction that commits once the file is written; if that fails the
    file is removed.
    """
    if path.exists():
        raise BundleRefused(f"{path} already exists; choose another file name")
    config = instance.config
    if code not in {o.code for o in config.offices}:
        raise BundleRefused(f"there is no office {code} in the configuration")
    bundle_id = new_id()
    written = False
    try:
        with instance.sessions.begin() as session:
            office = session.get(Office, code)
            if office is None:
                raise BundleRefused(f"office {code} has no keys yet; nothing to export")
            reports = _reports_to_export(session, code, everything)
            if not reports:
                return None
            files: dict[str, int] = {}
            manifest = ExportManifest(
                format=bundles.EXPORT_FORMAT,
                version=bundles.VERSION,
                bundle_id=bundle_id,
                created_at=datetime.now(UTC).replace(microsecond=0),
                office=schema.OfficeInfo(
                    code=office.code, name=config.office(code).name, public_key=office.public_key
                ),
                categories={c.code: c.label for c in config.categories},
                statuses=[s.value for s in Status],
                outcomes=[o.value for o in Outcome],
                reports=[_report(instance, session, r, everything, files) for r in reports],
                files=files,
            )
            blobs = {
                i.id: i.blob
                for i in session.execute(select(Item).where(Item.id.in_(list(files)))).scalars()
            }
            size = bundles.write_export(
                path, manifest, lambda item_id: _open(instance, blobs[item_id])
            )
            written = True
            new_items = _mark_exported(session, reports, bundle_id)
            session.add(
                BundleTransfer(
                    bundle_id=bundle_id,
                    direction="export",
                    office_code=code,
                    answers=None,
                    reports=len(reports),
                    items=new_items,
                    at=officer_now(),
                )
            )
            for report in reports:
                audit.record(session, ACTOR, "bundle.export", report_id=report.id, detail=bundle_id)
    except BaseException:
        if written:
            path.unlink(missing_ok=True)
        raise
    return ExportSummary(path, bundle_id, size, len(reports), new_items, len(files))


def _open(instance: Instance, name: str) -> BinaryIO:
    try:
        return instance.store.open(name)
    except BlobNotFound:
        raise BundleRefused("a stored file vanished while it was exported; try again") from None


def _mark_exported(session: Session, reports: list[Report], bundle_id: str) -> int:
    ids = [r.id for r in reports]
    marked = 0
    for item in session.execute(
        select(Item).where(Item.report_id.in_(ids), Item.exported_in.is_(None))
    ).scalars():
        item.exported_in = bundle_id
        marked += 1
    return marked


# --- import ------------------------------------------------------------------------------


def _same_item(instance: Instance, existing: Item, item: ReturnItem) -> bool:
    """Whether a stored item is this one, byte for byte (stored by an earlier import)."""
    if existing.report_id != item.report_id or existing.kind != item.kind:
        return False
    body, _ = cases.read_blob(instance.store, existing.blob, None)
    return hmac.compare_digest(existing.key_block, item.key_block) and hmac.compare_digest(
        body, item.body
    )


def _check_item(
    instance: Instance, session: Session, office: Office, number: int, item: ReturnItem
) -> Report | None:
    """The report to add `item` to; None if an earlier import stored it; BundleRefused if wrong."""
    where = f"item {number}"
    report = session.get(Report, item.report_id)
    if report is None:
        raise BundleRefused(
            f"{where} is for a report this server does not have (deleted, or never here)"
        )
    if report.office_code != office.code:
        raise BundleRefused(
            f"{where} is for report {report.designation}, which {report.office_code} handles"
            f" now, not {office.code}"
        )
    needed = {envelope.recipient_id(public_key_from_bytes(office.public_key))}
    if item.kind == ItemKind.REPLY:
        # X25519 for a report made before sources got hybrid keys, X-Wing since.
        try:
            needed.add(envelope.recipient_id(public_key_from_bytes(report.source_public_key)))
        except ValueError:
            raise BundleRefused(
                f"{where} is for report {report.designation}, whose source key on this server"
                " is damaged"
            ) from None
    if set(envelope.recipient_ids(item.key_block)) != needed:
        whom = f"{office.code} and the source" if item.kind == ItemKind.REPLY else office.code
        raise BundleRefused(
            f"{where}, a {item.kind} for report {report.designation}, is not sealed to exactly"
            f" {whom}"
        )
    existing = session.get(Item, item.item_id)
    if existing is not None:
        if _same_item(instance, existing, item):
            return None
        raise BundleRefused(f"{where} has the id of another item on this server")
    return report


def import_return(instance: Instance, path: Path, officer_name: str | None) -> ImportSummary:
    """Check the return bundle at `path` whole, then store its new replies and notes; audited.

    `officer_name`, if given, is the officer who did the offline review: the
    author of every item, who must be an active officer. Without it the items
    have no author (the page says "by the office").
    """
    manifest = bundles.read_return(path)
    with instance.sessions.begin() as session:
        office = session.get(Office, manifest.office)
        if office is None:
            raise BundleRefused(f"office {manifest.office[:32]} has no keys on this server")
        exported = session.execute(
            select(BundleTransfer).where(
                BundleTransfer.bundle_id == manifest.answers,
                BundleTransfer.direction == "export",
            )
        ).scalar_one_or_none()
        if exported is None or exported.office_code != office.code:
            raise BundleRefused(f"{path} answers no export of {office.code} made by this server")
        author: Officer | None = None
        if officer_name is not None:
            author = officers.get(session, officers.normalise_username(officer_name))
            if not author.active:
                raise BundleRefused(f"officer {author.username} is deactivated")
        new: list[tuple[Report, ReturnItem]] = []
        already = 0
        for number, item in enumerate(manifest.items, start=1):
            report = _check_item(instance, session, office, number, item)
            if report is None:
                already += 1
            else:
                new.append((report, item))
        _store(instance, session, new, author, manifest.bundle_id)
        session.add(
            BundleTransfer(
                bundle_id=manifest.bundle_id,
                direction="import",
                office_code=office.code,
                answers=manifest.answers,
                reports=len({r.id for r, _ in new}),
                items=len(new),
                at=officer_now(),
            )
        )
        audit.record(
            session,
            ACTOR,
            "bundle.import",
            detail=f"{manifest.bundle_id} for {office.code}: {len(new)} added, {already} imported"
            " before",
        )
    replies = sum(1 for _, i in new if i.kind == ItemKind.REPLY)
    return ImportSummary(
        manifest.bundle_id,
        replies,
        len(new) - replies,
        len({r.id for r, _ in new}),
        already,
    )


def _store(
    instance: Instance,
    session: Session,
    new: list[tuple[Report, ReturnItem]],
    author: Officer | None,
    bundle_id: str,
) -> None:
    """Write each body, then its row, in the caller's transaction; on failure no blob is left."""
    written: list[str] = []
    actor = author.username if author is not None else OFFLINE_ACTOR
    try:
        for report, item in new:
            blob = instance.store.begin()
            try:
                blob.write(item.body)
                blob.commit()
            except BaseException:
                blob.discard()
                raise
            written.append(blob.name)
            kind = ItemKind(item.kind)
            now = officer_now()
            stored = StoredEnvelope(item.item_id, blob, item.key_block, item.size)
            added = add_item(session, report, stored, kind, now, author.id if author else None)
            if author is not None:
                session.add(ItemRead(officer_id=author.id, item_id=added.id))
            if kind == ItemKind.REPLY:
                report.last_activity_at = now
            audit.record(
                session,
                actor,
                f"report.{kind.value}",
                report_id=report.id,
                detail=f"{added.id} (offline bundle {bundle_id})",
            )
        session.flush()
    except BaseException:
        for name in written:
            instance.store.delete(name)
        raise
