"""The inbox: an office's reports with their deadlines, filtered, sorted and paged.

Nothing here decrypts anything: the list is built from the clear columns
(designation, category, status, dates, flags), so it stays fast at 100,000
reports. Unread counts are computed only for the rows of the page shown.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement, UnaryExpression

from dropbox.access import visible_condition
from dropbox.models import Item, ItemKind, ItemRead, Officer, Report, Status

PAGE_SIZE = 50
SORTS: dict[str, UnaryExpression[Any]] = {
    "received": Report.received_at.desc(),
    "activity": Report.last_activity_at.desc(),
    "acknowledge_due": Report.acknowledge_due.asc(),
    "feedback_due": Report.feedback_due.asc(),
}
SOURCE_KINDS = (ItemKind.MESSAGE, ItemKind.FILE, ItemKind.IDENTITY)


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


def _overdue(today: date) -> ColumnElement[bool]:
    return or_(
        and_(Report.acknowledged_at.is_(None), Report.acknowledge_due < today),
        and_(Report.status != Status.CLOSED, Report.feedback_due < today),
    )


def list_reports(
    session: Session, officer: Officer, codes: list[str], filters: Filters, today: date
) -> Page:
    """The page of reports the filters select, among those the officer may see."""
    conditions = [visible_condition(codes)]
    if filters.status:
        conditions.append(Report.status == filters.status)
    if filters.category:
        conditions.append(Report.category == filters.category)
    if filters.mine:
        conditions.append(Report.assignee_id == officer.id)
    if filters.urgent:
        conditions.append(Report.urgent.is_(True))
    if filters.overdue:
        conditions.append(_overdue(today))
    total = session.execute(
        select(func.count()).select_from(Report).where(*conditions)
    ).scalar_one()
    pages = max(1, -(-total // PAGE_SIZE))
    page = min(max(1, filters.page), pages)
    order = SORTS.get(filters.sort, SORTS["received"])
    reports = list(
        session.execute(
            select(Report)
            .where(*conditions)
            .order_by(order, Report.id)
            .limit(PAGE_SIZE)
            .offset((page - 1) * PAGE_SIZE)
        ).scalars()
    )
    ids = [r.id for r in reports]
    read = select(ItemRead.item_id).where(ItemRead.officer_id == officer.id)
    unread = dict(
        session.execute(
            select(Item.report_id, func.count())
            .where(Item.report_id.in_(ids), Item.kind.in_(SOURCE_KINDS), Item.id.not_in(read))
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
