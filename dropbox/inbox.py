"""The inbox: an office's reports with their deadlines, filtered, sorted and paged.

Nothing here decrypts anything: the list is built from the clear columns
(designation, category, status, dates, flags), so it stays fast at 100,000
reports. Unread counts are computed only for the rows of the page shown.

Shape of the queries (bench/inbox.py measures them and checks them against
the plain query): the reports an officer may see
(`access.visible_condition`) are split into disjoint parts, one for each
office they hold and one for the copies kept after a referral, since a
single `OR` with a subquery makes SQLite fetch and sort every visible row.
An office's part is an `office_code = ?` range of the indexes in
`dropbox.models.Report`: counted in an index alone (the overdue filter in
ranges of `ix_reports_office_filters`), and paged by walking the index of
the sort column, which holds the id and the filtered columns, skipping only
the rows that must come before the page and stopping after it (from the
other end for the back half of the pages; see `_page_ids`). The copies,
few, are listed once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import and_, func, or_, select, union_all
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import InstrumentedAttribute
from sqlalchemy.sql.elements import ColumnElement, UnaryExpression

from dropbox.models import Item, ItemKind, ItemRead, Officer, Report, ReportShare, Status

PAGE_SIZE = 50
# Each sort: the column, and True for newest first. Ties go by id, ascending.
SORT_COLUMNS: dict[str, tuple[InstrumentedAttribute[Any], bool]] = {
    "received": (Report.received_at, True),
    "activity": (Report.last_activity_at, True),
    "acknowledge_due": (Report.acknowledge_due, False),
    "feedback_due": (Report.feedback_due, False),
}
SORTS: dict[str, UnaryExpression[Any]] = {
    key: column.desc() if newest_first else column.asc()
    for key, (column, newest_first) in SORT_COLUMNS.items()
}
SOURCE_KINDS = (ItemKind.MESSAGE, ItemKind.FILE, ItemKind.IDENTITY)
# What a row of the inbox shows (not whole reports: no keys, no lookup ids).
ROW_COLUMNS = (
    Report.id,
    Report.designation,
    Report.office_code,
    Report.category,
    Report.status,
    Report.urgent,
    Report.received_at,
    Report.last_activity_at,
    Report.acknowledge_due,
    Report.feedback_due,
    Report.acknowledged_at,
    Report.assignee_id,
)
# At most this many ids go into one IN (...) list (bound parameters are limited).
MAX_LISTED = 1000


@dataclass(frozen=True)
class Filters:
    """What the officer asked the inbox to show."""

    status: str = ""
    category: str = ""
    mine: bool = False
    overdue: bool = False
    urgent: bool = False
    sort: str = "received"
    page: int = 1


@dataclass(frozen=True)
class Row:
    """One report in the inbox."""

    id: str
    designation: str
    office_code: str
    category: str
    status: str
    urgent: bool
    received_at: datetime
    last_activity_at: datetime
    acknowledge_due: date
    feedback_due: date
    acknowledged: bool
    assignee: str | None
    unread: int
    acknowledge_overdue: bool
    feedback_overdue: bool


@dataclass(frozen=True)
class Page:
    """A page of the inbox, and how many reports match in all."""

    rows: list[Row]
    total: int
    page: int
    pages: int


def acknowledge_overdue(today: date) -> ColumnElement[bool]:
    """A report not yet acknowledged whose acknowledgement was due before today."""
    return and_(Report.acknowledged_at.is_(None), Report.acknowledge_due < today)


def feedback_overdue(today: date) -> ColumnElement[bool]:
    """A report not closed whose feedback was due before today."""
    return and_(Report.status != Status.CLOSED, Report.feedback_due < today)


def _overdue(today: date) -> ColumnElement[bool]:
    return or_(acknowledge_overdue(today), feedback_overdue(today))


def _overdue_parts(today: date) -> list[ColumnElement[bool]]:
    """Disjoint conditions whose union is `_overdue(today)`, for counting.

    Each is a range of `ix_reports_office_filters` (office, status,
    acknowledged_at, ...), so a count reads the open reports and the
    unacknowledged closed ones, not every closed report: `status != closed`
    is `status < closed` or `status > closed` (status is never NULL), and a
    closed report can be overdue only for its acknowledgement.
    """
    closed = Status.CLOSED.value
    return [
        and_(Report.status < closed, _overdue(today)),
        and_(Report.status > closed, _overdue(today)),
        and_(Report.status == closed, acknowledge_overdue(today)),
    ]


def _shared_only(codes: list[str]) -> ColumnElement[bool]:
    """Reports shared with one of the offices but handled by none of them.

    With `office_code == code` for each code, these are disjoint parts whose
    union is `access.visible_condition(codes)`: "handled by one of the
    offices, or shared with one of them".
    """
    shared = select(ReportShare.report_id).where(ReportShare.office_code.in_(codes))
    return and_(Report.id.in_(shared), Report.office_code.not_in(codes))


def _count(session: Session, groups: list[list[ColumnElement[bool]]]) -> list[int]:
    """For each group of disjoint conditions, how many reports match one of them (one query)."""
    columns = [
        select(func.count()).select_from(Report).where(condition).scalar_subquery()
        for group in groups
        for condition in group
    ]
    if not columns:
        return []
    found = iter(session.execute(select(*columns)).one())
    return [sum(next(found) for _ in group) for group in groups]


def _page_ids(
    session: Session,
    parts: list[tuple[ColumnElement[bool], int]],
    shared: tuple[ColumnElement[bool], list[str]],
    column: InstrumentedAttribute[Any],
    newest_first: bool,
    total: int,
    page: int,
) -> list[str]:
    """The ids of the page's reports, in order, out of disjoint parts.

    `parts` are the offices' conditions with how many reports each matches
    (none empty), `shared` the copies' condition and their ids in order.
    The page is `PAGE_SIZE` rows from rank `start` of the merged order. A
    part holding `n` of the `total` rows has at most `total - n` rows of the
    other parts before the page, so its first `start - (total - n)` rows all
    come before the page: each part is read from there (an index walk that
    skips them, or a slice of the copies) up to rank `start + PAGE_SIZE`, and
    the page starts in the union of those windows after the rows skipped.
    With one part this is a plain OFFSET; with an office and a few copies the
    union holds about twice as many rows as there are copies.

    A page in the back half is read from the other end: every order reversed
    (the sort column's direction and the id tie-break), so the walks skip at
    most half the rows, and the page's rows are put back in order.
    """
    shared_condition, shared_ids = shared
    first = (page - 1) * PAGE_SIZE
    size = min(PAGE_SIZE, total - first)
    if size <= 0:
        return []
    backwards = first + size > total - first
    if backwards:
        start = total - first - size
        shared_ids = shared_ids[::-1]
    else:
        start = first
    descending = newest_first != backwards
    keys = (
        column.desc() if descending else column.asc(),
        Report.id.desc() if backwards else Report.id.asc(),
    )
    end = start + size
    windows = []
    skipped = 0
    for part, count in parts:
        skip = max(0, start - (total - count))
        skipped += skip
        windows.append(
            select(Report.id, column.label("sort_key"))
            .where(part)
            .order_by(*keys)
            .offset(skip)
            .limit(end - skip)
            .subquery()
        )
    if shared_ids:
        skip = max(0, start - (total - len(shared_ids)))
        skipped += skip
        listed = shared_ids[skip:end]
        if len(listed) > MAX_LISTED:
            windows.append(
                select(Report.id, column.label("sort_key"))
                .where(shared_condition)
                .order_by(*keys)
                .offset(skip)
                .limit(end - skip)
                .subquery()
            )
        elif listed:
            windows.append(
                select(Report.id, column.label("sort_key")).where(Report.id.in_(listed)).subquery()
            )
    if not windows:
        return []
    if len(windows) == 1 and not shared_ids:
        # One office and no copies: the window is the page.
        merged = windows[0]
    else:
        merged = union_all(*(select(w.c.id, w.c.sort_key) for w in windows)).subquery()
    ids = list(
        session.execute(
            select(merged.c.id)
            .order_by(
                merged.c.sort_key.desc() if descending else merged.c.sort_key.asc(),
                merged.c.id.desc() if backwards else merged.c.id.asc(),
            )
            .offset(start - skipped)
            .limit(size)
        ).scalars()
    )
    return ids[::-1] if backwards else ids


def list_reports(
    session: Session, officer: Officer, codes: list[str], filters: Filters, today: date
) -> Page:
    """The page of reports the filters select, among those the officer may see."""
    conditions: list[ColumnElement[bool]] = []
    if filters.status:
        conditions.append(Report.status == filters.status)
    if filters.category:
        conditions.append(Report.category == filters.category)
    if filters.mine:
        conditions.append(Report.assignee_id == officer.id)
    if filters.urgent:
        conditions.append(Report.urgent.is_(True))
    handled = [and_(Report.office_code == code, *conditions) for code in codes]
    shared = and_(_shared_only(codes), *conditions)
    if filters.overdue:
        groups = [[and_(part, piece) for piece in _overdue_parts(today)] for part in handled]
        handled = [and_(part, _overdue(today)) for part in handled]
        shared = and_(shared, _overdue(today))
    else:
        groups = [[part] for part in handled]
    column, newest_first = SORT_COLUMNS.get(filters.sort, SORT_COLUMNS["received"])
    order = column.desc() if newest_first else column.asc()
    # The copies kept after a referral are few: listed once, in order, they
    # count themselves and only a window of them is looked up again.
    shared_ids = list(
        session.execute(select(Report.id).where(shared).order_by(order, Report.id)).scalars()
    )
    counts = _count(session, groups)
    total = sum(counts) + len(shared_ids)
    pages = max(1, -(-total // PAGE_SIZE))
    page = min(max(1, filters.page), pages)
    ids = _page_ids(
        session,
        [(part, count) for part, count in zip(handled, counts, strict=True) if count],
        (shared, shared_ids),
        column,
        newest_first,
        total,
        page,
    )
    found = {r.id: r for r in session.execute(select(*ROW_COLUMNS).where(Report.id.in_(ids)))}
    reports = [found[i] for i in ids]
    # NOT EXISTS looks each item up in item_reads' primary key; NOT IN would
    # first list every item the officer has ever read.
    read = select(ItemRead.item_id).where(
        ItemRead.officer_id == officer.id, ItemRead.item_id == Item.id
    )
    unread = dict(
        session.execute(
            select(Item.report_id, func.count())
            .where(Item.report_id.in_(ids), Item.kind.in_(SOURCE_KINDS), ~read.exists())
            .group_by(Item.report_id)
        ).all()
    )
    names = dict(
        session.execute(
            select(Officer.id, Officer.display_name).where(
                Officer.id.in_({r.assignee_id for r in reports if r.assignee_id})
            )
        ).all()
    )
    rows = [
        Row(
            id=r.id,
            designation=r.designation,
            office_code=r.office_code,
            category=r.category,
            status=r.status,
            urgent=r.urgent,
            received_at=r.received_at,
            last_activity_at=r.last_activity_at,
            acknowledge_due=r.acknowledge_due,
            feedback_due=r.feedback_due,
            acknowledged=r.acknowledged_at is not None,
            assignee=names.get(r.assignee_id) if r.assignee_id else None,
            unread=unread.get(r.id, 0),
            acknowledge_overdue=r.acknowledged_at is None and r.acknowledge_due < today,
            feedback_overdue=r.status != Status.CLOSED and r.feedback_due < today,
        )
        for r in reports
    ]
    return Page(rows=rows, total=total, page=page, pages=pages)
