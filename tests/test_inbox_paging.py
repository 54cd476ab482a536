"""Every page of the inbox equals the plain query, deep pages included.

`dropbox.inbox.list_reports` never sorts all the visible reports: it reads
each part (an office, the copies kept after a referral) from an index, skips
the rows that must come before the page, and reads the back half of the
pages from the other end. These tests list every page, with many ties in
every sort key, for one office, the other, both, with copies on both sides,
and compare each with one ORDER BY ... LIMIT ... OFFSET over
`access.visible_condition`.
"""

from __future__ import annotations

import itertools
import random
from datetime import date, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import and_, delete, func, insert, or_, select
from sqlalchemy.orm import Session

from dropbox import inbox, officers
from dropbox.access import visible_condition
from dropbox.instance import Instance
from dropbox.models import Officer, Report, ReportShare, Status
from tests.conftest import CHEAP_COST

pytestmark = pytest.mark.database_engine

TODAY = date(2026, 6, 1)
STATUSES = [s.value for s in Status]


def plain_page(
    db: Session, officer: Officer, codes: list[str], filters: inbox.Filters
) -> tuple[int, list[str]]:
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
        conditions.append(
            or_(
                and_(Report.acknowledged_at.is_(None), Report.acknowledge_due < TODAY),
                and_(Report.status != Status.CLOSED, Report.feedback_due < TODAY),
            )
        )
    total = db.execute(select(func.count()).select_from(Report).where(*conditions)).scalar_one()
    page = min(max(1, filters.page), max(1, -(-total // inbox.PAGE_SIZE)))
    ids = db.execute(
        select(Report.id)
        .where(*conditions)
        .order_by(inbox.SORTS[filters.sort], Report.id)
        .limit(inbox.PAGE_SIZE)
        .offset((page - 1) * inbox.PAGE_SIZE)
    ).scalars()
    return total, list(ids)


@pytest.fixture
def inbox_world(instance: Instance, office_keys: dict[str, object]) -> dict[str, int]:
    """About 3 pages of OIO reports and 2 of ECO, on few days (ties in every sort
    key), some shared with the other office; one officer of each office."""
    rng = random.Random(12)  # noqa: S311 (test data, not secrets)
    categories: dict[str, list[str]] = {c.office: [] for c in instance.config.categories}
    for c in instance.config.categories:
        categories[c.office].append(c.code)
    with instance.sessions.begin() as db:
        people = {
            code: officers.add(db, f"{code.lower()}-paging", "a long passphrase", CHEAP_COST, "t")[
                0
            ].id
            for code in ("OIO", "ECO")
        }
        reports = []
        shares = []
        for n in range(260):
            office = "OIO" if n % 5 < 3 else "ECO"
            received = datetime(2026, 5, 1) + timedelta(days=rng.randrange(6))
            status = rng.choice(STATUSES)
            reports.append(
                {
                    "id": f"{rng.getrandbits(128):032x}",
                    "lookup_id": rng.randbytes(32),
                    "source_public_key": rng.randbytes(32),
                    "designation": f"R-{n:04d}",
                    "office_code": office,
                    "category": rng.choice(categories[office]),
                    "status": status,
                    "urgent": rng.random() < 0.3,
                    "received_at": received,
                    "acknowledge_due": received.date() + timedelta(days=7),
                    "feedback_due": received.date() + timedelta(days=rng.choice((20, 40))),
                    "acknowledged_at": None if rng.random() < 0.4 else received,
                    "last_activity_at": received + timedelta(hours=rng.randrange(3)),
                    "assignee_id": rng.choice([None, people[office]]),
                    "next_seq": 1,
                }
            )
            if rng.random() < 0.25:
                other = "ECO" if office == "OIO" else "OIO"
                shares.append({"report_id": reports[-1]["id"], "office_code": other})
        db.execute(insert(Report), reports)
        db.execute(insert(ReportShare), shares)
    return people


FILTERS: list[dict[str, Any]] = [
    {},
    {"status": "closed"},
    {"overdue": True},
    {"mine": True},
    {"urgent": True, "status": "received"},
]


@pytest.mark.parametrize("codes", [["OIO"], ["ECO"], ["ECO", "OIO"]])
@pytest.mark.parametrize("sort", list(inbox.SORTS))
def test_every_page_equals_the_plain_query(
    instance: Instance, inbox_world: dict[str, int], codes: list[str], sort: str
) -> None:
    with instance.sessions() as db:
        officer = db.get(Officer, inbox_world[codes[-1]])
        assert officer is not None
        for extra in FILTERS:
            first = inbox.list_reports(db, officer, codes, inbox.Filters(sort=sort, **extra), TODAY)
            seen: list[str] = []
            for number in range(1, first.pages + 2):  # one past the end: the last page again
                filters = inbox.Filters(sort=sort, page=number, **extra)
                page = inbox.list_reports(db, officer, codes, filters, TODAY)
                expected = plain_page(db, officer, codes, filters)
                assert (page.total, [r.id for r in page.rows]) == expected, (codes, filters)
                if number <= first.pages:
                    seen += expected[1]
            assert len(seen) == len(set(seen)) == first.total


def test_the_world_has_deep_pages_ties_and_copies(
    instance: Instance, inbox_world: dict[str, int]
) -> None:
    """What the test above relies on: several pages, both sides of the middle,
    many rows with the same sort key, and copies kept by each office."""
    with instance.sessions() as db:
        officer = db.get(Officer, inbox_world["OIO"])
        assert officer is not None
        assert inbox.list_reports(db, officer, ["OIO"], inbox.Filters(), TODAY).pages >= 3
        ties = db.execute(
            select(func.count())
            .select_from(Report)
            .group_by(Report.office_code, Report.received_at)
        ).scalars()
        assert max(ties) > inbox.PAGE_SIZE // 2
        shared = db.execute(
            select(ReportShare.office_code, func.count()).group_by(ReportShare.office_code)
        ).all()
        assert {code for code, n in shared if n} == {"ECO", "OIO"}


@pytest.mark.parametrize("sort", list(inbox.SORTS))
def test_every_page_equals_the_plain_query_when_no_office_keeps_a_copy(
    instance: Instance, inbox_world: dict[str, int], sort: str
) -> None:
    """With no copies, one office's page is its one window, with no union to merge."""
    with instance.sessions.begin() as db:
        db.execute(delete(ReportShare))
    with instance.sessions() as db:
        officer = db.get(Officer, inbox_world["OIO"])
        assert officer is not None
        for extra in FILTERS:
            first = inbox.list_reports(
                db, officer, ["OIO"], inbox.Filters(sort=sort, **extra), TODAY
            )
            for number in range(1, first.pages + 2):
                filters = inbox.Filters(sort=sort, page=number, **extra)
                page = inbox.list_reports(db, officer, ["OIO"], filters, TODAY)
                expected = plain_page(db, officer, ["OIO"], filters)
                assert (page.total, [r.id for r in page.rows]) == expected, filters


@pytest.fixture
def every_kind(instance: Instance, office_keys: dict[str, object]) -> int:
    """In each office, one report of every kind the filters tell apart, each shared with
    the other office: status received or closed, one of two categories, assigned to the
    officer or to no one, urgent or not, overdue or not (64 reports). The officer's id."""
    categories: dict[str, list[str]] = {"OIO": [], "ECO": []}
    for category in instance.config.categories:
        categories[category.office].append(category.code)
    received = datetime(2026, 5, 20)
    with instance.sessions.begin() as db:
        me = officers.add(db, "every-kind", "a long passphrase", CHEAP_COST, "t")[0].id
        reports, shares, n = [], [], 0
        for office, other in (("OIO", "ECO"), ("ECO", "OIO")):
            for status, category, mine, urgent, overdue in itertools.product(
                ("received", "closed"), categories[office][:2], (True, False), *[(True, False)] * 2
            ):
                n += 1
                reports.append(
                    {
                        "id": f"{n:032x}",
                        "lookup_id": n.to_bytes(32, "big"),
                        "source_public_key": bytes(32),
                        "designation": f"K-{n:04d}",
                        "office_code": office,
                        "category": category,
                        "status": status,
                        "urgent": urgent,
                        "received_at": received + timedelta(hours=n),
                        # Overdue: never acknowledged, and due before TODAY.
                        "acknowledge_due": (TODAY - timedelta(days=1))
                        if overdue
                        else TODAY + timedelta(days=5),
                        "feedback_due": TODAY + timedelta(days=30),
                        "acknowledged_at": None if overdue else received,
                        "last_activity_at": received + timedelta(hours=n % 7),
                        "assignee_id": me if mine else None,
                        "next_seq": 1,
                    }
                )
                shares.append({"report_id": reports[-1]["id"], "office_code": other})
        db.execute(insert(Report), reports)
        db.execute(insert(ReportShare), shares)
    return me


@pytest.mark.parametrize("codes", [["OIO"], ["ECO", "OIO"]])
@pytest.mark.parametrize("sort", list(inbox.SORTS))
def test_every_combination_of_filters_equals_the_plain_query(
    instance: Instance, every_kind: int, codes: list[str], sort: str
) -> None:
    """Each filter on or off, together: every query the inbox can build, on each engine.

    The fuzzing reaches some of these combinations at random, and not the same
    ones on both engines (tests/sql_sites.py, DRAWN_AT_RANDOM): here every one
    is sent, and its first page compared with the plain query.
    """
    category = next(c.code for c in instance.config.categories if c.office == codes[-1])
    with instance.sessions() as db:
        officer = db.get(Officer, every_kind)
        assert officer is not None
        matched = 0
        for status, chosen, mine, urgent, overdue in itertools.product(
            ("", "received"), ("", category), *[(False, True)] * 3
        ):
            filters = inbox.Filters(
                status=status,
                category=chosen,
                mine=mine,
                urgent=urgent,
                overdue=overdue,
                sort=sort,
            )
            page = inbox.list_reports(db, officer, codes, filters, TODAY)
            expected = plain_page(db, officer, codes, filters)
            assert (page.total, [r.id for r in page.rows]) == expected, filters
            matched += bool(page.total)
        assert matched == 32  # the world has a report for every combination
