"""Reports under /api/v2: the inbox, sealed threads, and what officers do with a report.

Nothing here decrypts. A report is served to officers of the office handling
it, or of an office that kept a copy after referring it; anyone else is told
it does not exist (404). Only the handling office may act on it (403 for a
kept copy), except to reveal the identity (which a kept copy may, with its
reason sealed to both offices) and to record what its officer's machine
found. The database work is in dropbox/cases.py; this module reads requests
and writes answers as the definitions of dropbox/api_schema.py, with which
journalist_interface/client.py reads them.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import BinaryIO

from flask import Blueprint, Flask, Response, request
from flask.typing import ResponseReturnValue
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from case_server import tokens, wire
from case_server.errors import ApiError
from dropbox import access, cases, inbox
from dropbox import api_schema as schema
from dropbox.api_schema import dump
from dropbox.config import Config
from dropbox.models import Item, Officer, Report, Status

PREFIX = "/api/v2"
# Streamed in pieces this large.
CHUNK_BYTES = 64 * 1024
NOT_HANDLING = "your office keeps a copy of this report to read; it cannot act on it"


def _filters(config: Config) -> inbox.Filters:
    """The inbox filters from the query string; unknown values are refused, not ignored."""
    args = request.args
    status = args.get("status", "")
    if status and status not in set(Status):
        raise ApiError(400, f"unknown status {status!r}")
    category = args.get("category", "")
    if category and category not in {c.code for c in config.categories}:
        raise ApiError(400, f"unknown category {category!r}")
    sort = args.get("sort", "") or "received"
    if sort not in inbox.SORTS:
        raise ApiError(400, f"'sort' must be one of {', '.join(inbox.SORTS)}")
    raw_page = args.get("page", "") or "1"
    digits = raw_page.lstrip("0")  # isascii: isdigit alone also takes digits int() refuses ("²")
    if not (raw_page.isascii() and raw_page.isdigit()) or not digits:
        raise ApiError(400, "'page' must be a whole number from 1")
    return inbox.Filters(
        status=status,
        category=category,
        mine=wire.flag("mine"),
        overdue=wire.flag("overdue"),
        urgent=wire.flag("urgent"),
        sort=sort,
        page=int(digits) if len(digits) <= 9 else 10**9,  # beyond the last: the last is shown
    )


def _new_sealed(item: schema.NewItem) -> cases.NewSealed:
    """An item sealed on the officer's machine, as cases stores it."""
    return cases.NewSealed(
        item_id=item.item_id, size=item.size, key_block=item.key_block, body=item.body
    )


# --- answers -----------------------------------------------------------------------


def _row(row: inbox.Row) -> schema.InboxRow:
    return schema.InboxRow(
        id=row.id,
        designation=row.designation,
        office=row.office_code,
        category=row.category,
        status=row.status,
        urgent=row.urgent,
        received=row.received_at,
        last_activity=row.last_activity_at,
        acknowledge_due=row.acknowledge_due,
        feedback_due=row.feedback_due,
        acknowledged=row.acknowledged,
        acknowledge_overdue=row.acknowledge_overdue,
        feedback_overdue=row.feedback_overdue,
        assignee=row.assignee,
        unread=row.unread,
    )


def _person(person: tuple[int, str]) -> schema.Person:
    return schema.Person(id=person[0], display_name=person[1])


def _bundle(
    db: Session, officer: Officer, report: Report, items: list[cases.SealedItem]
) -> schema.ReportBundle:
    return cases.report_bundle(
        db,
        report,
        items,
        reading_office=access.reading_office(db, officer, report),
        handling=access.handles(db, officer, report),
        assignees=cases.assignees(db, [report.office_code]),
    )


def _stream(blob: BinaryIO) -> Iterator[bytes]:
    with blob:
        while chunk := blob.read(CHUNK_BYTES):
            yield chunk


# --- the routes ---------------------------------------------------------------------


def register_reports(app: Flask, config: Config) -> None:
    """Attach the report routes under /api/v2 (bearer tokens, no cookies)."""
    bp = Blueprint("reports", __name__, url_prefix=PREFIX)

    def _acting(db: Session, caller: int, report_id: str) -> tuple[Officer, Report]:
        """The officer and the report they act on: 404 if they may not see it, 403 for a copy."""
        officer = tokens.load_officer(db, caller)
        report = access.report_for(db, officer, report_id)
        if not access.handles(db, officer, report):
            raise ApiError(403, NOT_HANDLING)
        return officer, report

    def _reading(db: Session, caller: int, report_id: str) -> tuple[Officer, Report]:
        """The officer and a report they may see (handling it or through a kept copy)."""
        officer = tokens.load_officer(db, caller)
        return officer, access.report_for(db, officer, report_id)

    @bp.get("/reports")
    def list_reports() -> ResponseReturnValue:
        """The inbox: reports of the officer's offices, filtered, sorted and paged."""
        caller = tokens.officer_id()
        filters = _filters(config)
        today = datetime.now(UTC).date()
        with tokens.instance().sessions() as db:
            officer = tokens.load_officer(db, caller)
            codes = access.office_codes(db, officer)
            page = inbox.list_reports(db, officer, codes, filters, today)
            people = cases.assignees(db, codes)
        return dump(
            schema.InboxPage(
                rows=[_row(r) for r in page.rows],
                total=page.total,
                page=page.page,
                pages=page.pages,
                assignees=[_person(p) for p in people],
            )
        )

    @bp.get("/reports/<report_id>")
    def get_report(report_id: str) -> ResponseReturnValue:
        """The report and its sealed thread; marks it read and records `report.read`."""
        caller = tokens.officer_id()
        with tokens.instance().sessions.begin() as db:
            officer, report = _reading(db, caller, report_id)
            items = cases.thread(tokens.instance(), db, officer, report)
            return dump(_bundle(db, officer, report, items))

    @bp.get("/reports/<report_id>/items/<item_id>/body")
    def item_body(report_id: str, item_id: str) -> ResponseReturnValue:
        """A file item's ciphertext, streamed; recorded as `file.download`."""
        caller = tokens.officer_id()
        with tokens.instance().sessions.begin() as db:
            officer, report = _reading(db, caller, report_id)
            opened = cases.file_body(tokens.instance(), db, officer, report, item_id)
        if opened is None:  # the damage is recorded (committed above)
            # The body is a schema.Damaged: the message and "damaged": true.
            raise ApiError(
                422, "this file is damaged: its content is missing from the store", damaged=True
            )
        blob, length = opened
        response = Response(_stream(blob), mimetype="application/octet-stream")
        response.headers["Content-Length"] = str(length)
        response.headers["Content-Disposition"] = "attachment"
        return response

    @bp.post("/reports/<report_id>/items")
    def add_item(report_id: str) -> ResponseReturnValue:
        """Store a reply or a note sealed on the officer's machine.

        A reply with `"acknowledge": true` also acknowledges a report not yet
        acknowledged, in the same transaction (a status change, audited).
        """
        caller = tokens.officer_id()
        sent = wire.read(schema.NewItemRequest)
        with tokens.instance().sessions.begin() as db:
            officer, report = _acting(db, caller, report_id)
            item = cases.add_item(
                tokens.instance(),
                db,
                officer,
                report,
                sent.kind,
                _new_sealed(sent),
                sent.acknowledge,
            )
            answer = schema.ItemCreated(id=item.id, seq=item.seq, status=report.status)
        return dump(answer), 201

    @bp.post("/reports/<report_id>/reveal")
    def reveal(report_id: str) -> ResponseReturnValue:
        """Store the sealed reason, record `identity.reveal`, and send the identity items."""
        caller = tokens.officer_id()
        reason = _new_sealed(wire.read(schema.RevealRequest).reason)
        with tokens.instance().sessions.begin() as db:
            officer, report = _reading(db, caller, report_id)
            items = cases.reveal(tokens.instance(), db, officer, report, reason)
            return dump(schema.Revealed(items=[cases.wire_item(i) for i in items]))

    @bp.post("/reports/<report_id>/assign")
    def assign(report_id: str) -> ResponseReturnValue:
        """Assign the report to an officer of the handling office, or to nobody (null)."""
        caller = tokens.officer_id()
        sent = wire.read(schema.AssignRequest)
        with tokens.instance().sessions.begin() as db:
            officer, report = _acting(db, caller, report_id)
            cases.assign(db, officer, report, sent.assignee_id)
            return dump(schema.Assigned(assignee_id=report.assignee_id))

    @bp.post("/reports/<report_id>/status")
    def change_status(report_id: str) -> ResponseReturnValue:
        """Move the report along its lifecycle; closing needs an outcome."""
        caller = tokens.officer_id()
        sent = wire.read(schema.StatusRequest)
        with tokens.instance().sessions.begin() as db:
            officer, report = _acting(db, caller, report_id)
            cases.change_status(db, officer, report, sent.status, sent.outcome or None)
            return dump(schema.StatusChanged(status=report.status, outcome=report.outcome))

    @bp.post("/reports/<report_id>/refer")
    def refer(report_id: str) -> ResponseReturnValue:
        """Hand the report to another office, with key blocks re-sealed on the officer's machine."""
        caller = tokens.officer_id()
        # Who may act is settled before the body is read, so that its size limit, which
        # grows with the report, tells nothing about a report the caller may not see.
        with tokens.instance().readers() as db:
            _, report = _acting(db, caller, report_id)
            items = db.scalar(
                select(func.count()).select_from(Item).where(Item.report_id == report.id)
            )
        request.max_content_length = wire.MAX_REQUEST_BYTES + (
            (items or 0) * wire.REFERRAL_BYTES_PER_ITEM
        )
        sent = wire.read(schema.ReferRequest)
        if sent.office not in {o.code for o in config.offices}:
            raise ApiError(400, f"there is no office {sent.office!r} to refer to")
        with tokens.instance().sessions.begin() as db:
            officer, report = _acting(db, caller, report_id)
            cases.refer(db, officer, report, sent.office, sent.keep_copy, sent.key_blocks)
            return dump(schema.Referred(office=report.office_code, status=report.status))

    @bp.post("/reports/<report_id>/delete")
    def delete(report_id: str) -> ResponseReturnValue:
        """Crypto-shred the report: key blocks destroyed, rows removed, then the blobs."""
        caller = tokens.officer_id()
        with tokens.instance().sessions.begin() as db:
            officer, report = _acting(db, caller, report_id)
            blobs = cases.delete_report(db, officer, report)
        cases.remove_blobs(tokens.instance(), blobs)
        return dump(schema.Deleted(deleted=report_id))

    @bp.post("/reports/<report_id>/events")
    def record(report_id: str) -> ResponseReturnValue:
        """Record what the officer's machine found or did: `item.damaged`, `key.mismatch`, or
        `report.export` (the handling office only)."""
        caller = tokens.officer_id()
        sent = wire.read(schema.EventRequest)
        with tokens.instance().sessions.begin() as db:
            officer, report = _reading(db, caller, report_id)
            cases.record_event(db, officer, report, sent.action, sent.detail)
        return dump(schema.Recorded(recorded=sent.action)), 201

    @bp.get("/reports/<report_id>/events")
    def report_events(report_id: str) -> ResponseReturnValue:
        """The report's audit events, for its export: the handling office only (403 for a copy)."""
        caller = tokens.officer_id()
        with tokens.instance().readers() as db:
            _, report = _acting(db, caller, report_id)
            events = [cases.wire_event(e) for e in cases.report_events(db, report)]
        return dump(schema.ReportEvents(events=events))

    @bp.post("/events")
    def record_unattached() -> ResponseReturnValue:
        """Record a `key.mismatch` the officer's machine found outside any report."""
        caller = tokens.officer_id()
        sent = wire.read(schema.EventRequest)
        with tokens.instance().sessions.begin() as db:
            officer = tokens.load_officer(db, caller)
            cases.record_event(db, officer, None, sent.action, sent.detail)
        return dump(schema.Recorded(recorded=sent.action)), 201

    app.register_blueprint(bp)
