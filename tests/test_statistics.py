"""Statistics on the case server: the figures, who sees them, the audit, and small counts hidden.

Reports are written as rows (metadata is all statistics read), except where
a referral or a source's report must be real. The reader who tries to work
hidden counts out is tests/disclosure_helpers.py, which knows nothing of
dropbox/suppression.py: it is given what the pages show and the sums a
reader can see on them, written here from the pages' meaning.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from nacl.public import PrivateKey
from sqlalchemy import insert, select, update

from crypto import envelope
from crypto.keys import public_key_from_bytes
from dropbox import statistics
from dropbox.api_schema import Statistics, StatisticsQuery
from dropbox.instance import Instance
from dropbox.models import AuditEvent, Item, ItemKind, Report, StatusChange
from dropbox.suppression import Relation, Shown
from journalist_interface.client import ApiError
from tests.case_helpers import CaseWorld, audit_events, make_case_world, seal, submit
from tests.disclosure_helpers import recovered

pytestmark = pytest.mark.database_engine

OFFICES = ("OIO", "ECO")
OPEN = ("received", "acknowledged", "under assessment", "referred", "reopened")
OUTCOMES = (
    "substantiated",
    "not substantiated",
    "no prima facie evidence",
    "out of scope",
    "withdrawn",
)


@pytest.fixture
def case_world(instance: Instance, office_keys: dict[str, PrivateKey]) -> Iterator[CaseWorld]:
    world = make_case_world(instance, office_keys)
    yield world
    world.close()


def _days(at: datetime, received: datetime) -> int:
    return (at.date() - received.date()).days


def _row(
    number: int,
    office: str,
    category: str,
    received: datetime,
    *,
    status: str = "received",
    outcome: str | None = None,
    acknowledged: datetime | None = None,
    closed: datetime | None = None,
) -> dict[str, Any]:
    """A report row as `reports.submit` dates it (deadlines from the received day), with the
    days taken and the deadlines met as `cases` stores them when it acknowledges and closes."""
    acknowledge_due = received.date() + timedelta(days=7)
    feedback_due = received.date() + timedelta(days=92)
    return {
        "id": f"{number:032x}",
        "lookup_id": number.to_bytes(32, "big"),
        "source_public_key": bytes(32),
        "designation": f"label {number}",
        "office_code": office,
        "category": category,
        "status": status,
        "outcome": outcome,
        "urgent": False,
        "received_at": received,
        "acknowledge_due": acknowledge_due,
        "feedback_due": feedback_due,
        "acknowledged_at": acknowledged,
        "last_activity_at": received,
        "closed_at": closed,
        "acknowledge_days": None if acknowledged is None else _days(acknowledged, received),
        "close_days": None if closed is None else _days(closed, received),
        "acknowledged_in_time": None
        if acknowledged is None
        else acknowledged.date() <= acknowledge_due,
        "feedback_in_time": None if closed is None else closed.date() <= feedback_due,
        "assignee_id": None,
        "next_seq": 1,
    }


def _insert(instance: Instance, rows: list[dict[str, Any]]) -> None:
    with instance.sessions.begin() as db:
        db.execute(insert(Report).execution_options(render_nulls=True), rows)


def _compute(instance: Instance, period: statistics.Period, today: date) -> statistics.Figures:
    config = instance.config
    with instance.readers() as db:
        return statistics.compute_configured(db, config, period, today)


def _cells(answer: Statistics) -> dict[tuple[str, str, str], tuple[int | None, str]]:
    """(table, row, column) -> (value, how shown), from an answer."""
    out = {}
    for table in answer.tables:
        for row in table.rows:
            for column, cell in zip(table.columns, row.cells, strict=True):
                out[(table.key, row.key, column)] = (cell.value, cell.shown)
    return out


# --- the figures ------------------------------------------------------------------------------


def test_figures_count_the_periods_reports_by_category_status_outcome_and_deadline(
    instance: Instance, office_keys: dict[str, PrivateKey]
) -> None:
    day = datetime(2025, 3, 10)
    rows = []
    n = 0

    def add(office: str, category: str, count: int, **fields: Any) -> None:
        nonlocal n
        received = fields.pop("received", day)
        for _ in range(count):
            n += 1
            rows.append(_row(n, office, category, received, **fields))

    add("OIO", "fraud", 5, status="closed", outcome="substantiated",
        acknowledged=day + timedelta(days=2), closed=day + timedelta(days=30))  # fmt: skip
    add("OIO", "fraud", 4, status="closed", outcome="withdrawn",
        acknowledged=day + timedelta(days=9), closed=day + timedelta(days=120))  # fmt: skip
    add("OIO", "harassment", 6, status="under assessment", acknowledged=day + timedelta(days=3))
    add("OIO", "harassment", 3)  # never acknowledged: overdue by now
    add("ECO", "retaliation", 7, status="acknowledged", acknowledged=day + timedelta(days=1))
    add("ECO", "retaliation", 1, received=datetime(2025, 12, 30))  # not yet due on 2026-01-02
    add("OIO", "fraud", 4, received=datetime(2024, 5, 1))  # the year before
    add("OIO", "fraud", 2, received=datetime(2026, 1, 1))  # the year after
    _insert(instance, rows)

    figures = _compute(instance, statistics.Period(2025), date(2026, 1, 2))
    v = figures.values
    assert v["received:fraud:OIO"] == 9 and v["received:harassment:OIO"] == 9
    assert v["received:retaliation:ECO"] == 8 and v["total:all"] == 26
    assert v["status:closed:OIO"] == 9 and v["open:OIO"] == 9
    assert v["outcome:substantiated:OIO"] == 5 and v["outcome:withdrawn:OIO"] == 4
    assert (v["ack:within:OIO"], v["ack:late:OIO"], v["ack:pending:OIO"]) == (11, 7, 0)
    assert (v["ack:within:ECO"], v["ack:late:ECO"], v["ack:pending:ECO"]) == (7, 0, 1)
    # Feedback is given by closing: 5 closed in time, 4 closed late, 9 open and overdue.
    assert (v["fb:within:OIO"], v["fb:late:OIO"], v["fb:pending:OIO"]) == (5, 13, 0)
    assert v["previous:OIO"] == 4 and v["previous:ECO"] == 0
    # Overdue now counts every report, whatever its period (the inbox's definition).
    assert v["overdue:ack:OIO"] == 3 + 4 and v["overdue:fb:OIO"] == 9 + 4
    assert figures.duration("acknowledge", "OIO", 50) == statistics.Cell(3, Shown.VALUE)
    assert figures.duration("acknowledge", "OIO", 90) == statistics.Cell(9, Shown.VALUE)
    assert figures.duration("close", "OIO", 50) == statistics.Cell(30, Shown.VALUE)
    assert figures.duration("close", "ECO", 50).shown is Shown.FEWER

    spring = _compute(instance, statistics.Period(2025, 1, 3), date(2026, 1, 2))
    assert spring.values["total:all"] == 25 and spring.values["total:ECO"] == 7


def _counted(
    instance: Instance, count: Any, period: statistics.Period, today: date
) -> tuple[Any, list[tuple[str, int]], dict[tuple[str, str], Counter[int]]]:
    """What one way of counting returns, and the figures it adds, in the order it adds them."""
    config = instance.config
    figures = statistics.Figures(
        period,
        today,
        config.statistics.suppress_below,
        tuple(o.code for o in config.offices),
        tuple(c.code for c in config.categories),
    )
    with instance.readers() as db:
        answer = count(db, figures)
    return answer, list(figures.values.items()), figures.days


def test_counting_by_index_ranges_gives_what_grouping_gives_and_falls_back_to_it(
    instance: Instance, office_keys: dict[str, PrivateKey]
) -> None:
    """SQLite counts each class and each number of days as a range of an index; grouping
    (PostgreSQL's way) must give the same figures in the same order, and does the counting
    when a report is of a class the ranges do not list."""
    with instance.readers() as db:
        if db.get_bind().dialect.name != "sqlite":
            pytest.skip("counting by index ranges is how SQLite counts")
    rows = _random_rows(random.Random(8), 400, 2025)  # noqa: S311 - test data, not secrets
    _insert(instance, rows)
    for period, today in [
        (statistics.Period(2025), date(2025, 9, 1)),  # some deadlines still ahead
        (statistics.Period(2025, 2, 4), date(2027, 1, 1)),
        (statistics.Period(2024), date(2026, 1, 1)),
    ]:
        by_range = _counted(instance, statistics._count_classes_by_range, period, today)
        grouped = _counted(instance, statistics._count_classes_grouped, period, today)
        assert by_range[0] is True
        assert by_range[1] == grouped[1] and sum(n for _, n in grouped[1]) > 0
        days = _counted(instance, statistics._count_days_by_range, period, today)[2]
        assert days == _counted(instance, statistics._count_days_grouped, period, today)[2]
        assert days

    # A category no longer configured, and a closed report without an outcome.
    received = datetime(2025, 6, 1)
    _insert(
        instance,
        [
            _row(1001, "OIO", "a-category-since-removed", received),
            _row(1002, "OIO", "fraud", received, status="closed", closed=received),
        ],
    )
    period, today = statistics.Period(2025), date(2026, 1, 1)
    by_range = _counted(instance, statistics._count_classes_by_range, period, today)
    assert by_range[0] is False and by_range[1] == []
    v = _compute(instance, period, today).values
    assert v["received:a-category-since-removed:OIO"] == 1
    assert v[f"outcome:{statistics.UNRECORDED}:OIO"] == 1
    assert v["total:all"] == len([r for r in rows if r["received_at"].year == 2025]) + 2


def test_a_referral_counts_for_the_office_that_sent_it_and_the_one_that_took_it(
    case_world: CaseWorld,
) -> None:
    report_id = submit(case_world, "retaliation", "My manager moved me after I reported fraud.")
    eco = case_world.client("eco")
    bundle = eco.report(report_id)
    held = case_world.office_keys["ECO"]
    blocks = {
        i.id: envelope.remove_recipient(
            envelope.add_recipient(i.key_block, held, case_world.office_public("OIO")),
            held.public_key,
        )
        for i in bundle.items
    }
    eco.refer(report_id, "OIO", False, blocks)

    with case_world.instance.readers() as db:
        change = db.execute(
            select(StatusChange).where(StatusChange.to_status == "referred")
        ).scalar_one()
        received = db.get(Report, report_id)
        assert received is not None
        year = received.received_at.year
    assert (change.from_office, change.to_office) == ("ECO", "OIO")
    figures = _compute(case_world.instance, statistics.Period(year), date(year, 12, 31))
    assert figures.values["sent:ECO"] == 1 and figures.values["taken:OIO"] == 1
    assert figures.values["sent:OIO"] == 0 and figures.values["received:retaliation:OIO"] == 1


def _days_taken(world: CaseWorld, report_id: str) -> tuple[int | None, int | None]:
    """The days stored with the report, checked against its stored times."""
    with world.instance.readers() as db:
        report = db.get(Report, report_id)
        assert report is not None
        received = report.received_at
        expected = tuple(
            None if at is None else _days(at, received)
            for at in (report.acknowledged_at, report.closed_at)
        )
        stored = (report.acknowledge_days, report.close_days)
    assert stored == expected
    return stored


def _deadlines_met(world: CaseWorld, report_id: str) -> tuple[bool | None, bool | None]:
    """The deadlines met as stored with the report, checked against its stored times and dates."""
    with world.instance.readers() as db:
        report = db.get(Report, report_id)
        assert report is not None
        expected = tuple(
            None if at is None else at.date() <= due
            for at, due in (
                (report.acknowledged_at, report.acknowledge_due),
                (report.closed_at, report.feedback_due),
            )
        )
        stored = (report.acknowledged_in_time, report.feedback_in_time)
    assert stored == expected
    return stored


def _time_passes(world: CaseWorld, report_id: str, days: int) -> None:
    """Move the report's stored times `days` back, as if they had happened that much earlier."""
    with world.instance.sessions.begin() as db:
        report = db.get(Report, report_id)
        assert report is not None
        report.received_at -= timedelta(days=days)
        report.acknowledge_due -= timedelta(days=days)
        report.feedback_due -= timedelta(days=days)
        if report.acknowledged_at is not None:
            report.acknowledged_at -= timedelta(days=days)


def test_the_days_taken_are_stored_when_a_report_is_acknowledged_closed_and_reopened(
    case_world: CaseWorld,
) -> None:
    eco = case_world.client("eco")
    by_status = submit(case_world, "retaliation", "My manager moved me after I reported fraud.")
    by_reply = submit(case_world, "retaliation", "I was left off the rota after I complained.")
    _time_passes(case_world, by_status, 10)
    _time_passes(case_world, by_reply, 12)
    assert _days_taken(case_world, by_status) == (None, None)

    eco.change_status(by_status, "acknowledged")
    assert _days_taken(case_world, by_status) == (10, None)
    source = public_key_from_bytes(eco.report(by_reply).source_public_key)
    reply = seal(by_reply, "Thank you.", ItemKind.REPLY, [case_world.office_public("ECO"), source])
    eco.add_item(by_reply, "reply", reply, acknowledge=True)
    assert _days_taken(case_world, by_reply) == (12, None)

    eco.change_status(by_status, "closed", "withdrawn")
    assert _days_taken(case_world, by_status) == (10, 10)
    eco.change_status(by_status, "reopened")
    assert _days_taken(case_world, by_status) == (10, None)
    _time_passes(case_world, by_status, 5)
    eco.change_status(by_status, "closed", "out of scope")
    assert _days_taken(case_world, by_status) == (10, 15)

    # The statistics count those stored days.
    taken: dict[str, Counter[int]] = {"acknowledge": Counter(), "close": Counter()}
    with case_world.instance.readers() as db:
        years = {r.received_at.year for r in db.execute(select(Report)).scalars()}
    for year in years:
        figures = _compute(case_world.instance, statistics.Period(year), date(year, 12, 31))
        for what, counted in taken.items():
            counted.update(figures.days.get((what, "ECO"), Counter()))
    assert taken == {"acknowledge": Counter({10: 1, 12: 1}), "close": Counter({15: 1})}


def test_whether_each_deadline_was_met_is_stored_when_it_happens_and_reopening_forgets_it(
    case_world: CaseWorld,
) -> None:
    eco = case_world.client("eco")
    on_time = submit(case_world, "retaliation", "My manager moved me after I reported fraud.")
    late = submit(case_world, "retaliation", "I was left off the rota after I complained.")
    _time_passes(case_world, late, 8)  # received 8 days ago: the acknowledgement was due by 7
    assert _deadlines_met(case_world, on_time) == (None, None)

    eco.change_status(on_time, "acknowledged")
    source = public_key_from_bytes(eco.report(late).source_public_key)
    reply = seal(late, "Thank you.", ItemKind.REPLY, [case_world.office_public("ECO"), source])
    eco.add_item(late, "reply", reply, acknowledge=True)
    assert _deadlines_met(case_world, on_time) == (True, None)
    assert _deadlines_met(case_world, late) == (False, None)

    eco.change_status(on_time, "closed", "withdrawn")  # feedback the same day: in time
    assert _deadlines_met(case_world, on_time) == (True, True)
    eco.change_status(on_time, "reopened")
    assert _deadlines_met(case_world, on_time) == (True, None)
    _time_passes(case_world, on_time, 100)  # past the 3 months of feedback_due
    eco.change_status(on_time, "closed", "out of scope")
    assert _deadlines_met(case_world, on_time) == (True, False)

    # The statistics count those stored flags.
    with case_world.instance.readers() as db:
        years = {r.received_at.year for r in db.execute(select(Report)).scalars()}
    counted: Counter[str] = Counter()
    for year in years:
        figures = _compute(case_world.instance, statistics.Period(year), date(year + 1, 6, 30))
        counted.update(
            {
                f"{what}:{part}": figures.values.get(f"{what}:{part}:ECO", 0)
                for what in ("ack", "fb")
                for part in ("within", "late")
            }
        )
    assert counted == {"ack:within": 1, "ack:late": 1, "fb:within": 0, "fb:late": 2}


def test_statistics_read_metadata_only_not_a_key_block_or_a_stored_body(
    case_world: CaseWorld,
) -> None:
    """The figures do not change when every key block and every stored body is destroyed."""
    for _ in range(4):
        submit(case_world, "fraud", "Invoices for deliveries that never arrived.")
    query = StatisticsQuery(office="OIO", year=datetime.now(UTC).year)
    before = case_world.client("oio").statistics(query)
    instance = case_world.instance
    with instance.sessions.begin() as db:
        blobs = list(db.execute(select(Item.blob)).scalars())
        db.execute(update(Item).values(key_block=b"\x00"))
    for blob in blobs:
        instance.store.delete(blob)
    case_world.app.extensions["dropbox.statistics"].forget()  # count again, not reuse
    after = case_world.client("oio").statistics(query)
    assert after.counted_at >= before.counted_at
    assert _cells(after) == _cells(before)
    assert _cells(after)[("received", "total", "OIO")] == (4, "value")


def test_a_worker_reuses_a_periods_figures_for_a_minute_and_says_when_they_were_counted(
    case_world: CaseWorld,
) -> None:
    year = datetime.now(UTC).year
    oio = case_world.client("oio")
    first = oio.statistics(StatisticsQuery(year=year))
    for _ in range(3):
        submit(case_world, "fraud", "Invoices for deliveries that never arrived.")
    again = oio.statistics(StatisticsQuery(year=year))
    assert again.counted_at == first.counted_at and _cells(again) == _cells(first)
    case_world.app.extensions["dropbox.statistics"].forget()
    fresh = oio.statistics(StatisticsQuery(year=year))
    assert _cells(fresh) != _cells(first)  # the three reports are counted now


# --- who sees what, and the audit log -----------------------------------------------------------


def test_an_officer_sees_their_own_offices_only_and_an_administrator_every_one(
    case_world: CaseWorld,
) -> None:
    year = datetime.now(UTC).year
    oio = case_world.client("oio")
    answer = oio.statistics(StatisticsQuery(year=year))
    assert answer.office == "OIO" and answer.offices == ["OIO"]
    assert {t.key: t.columns for t in answer.tables}["status"] == ["OIO"]
    for office in ("ECO", "all"):
        with pytest.raises(ApiError) as refused:
            oio.statistics(StatisticsQuery(office=office, year=year))
        assert refused.value.status == 403
    admin = case_world.client("admin")
    everything = admin.statistics(StatisticsQuery(office="all", year=year))
    assert everything.offices == ["OIO", "ECO"]
    assert {t.key: t.columns for t in everything.tables}["status"] == ["OIO", "ECO", "all"]
    assert admin.statistics(StatisticsQuery(office="ECO", year=year)).office == "ECO"
    with pytest.raises(ApiError) as ended:
        case_world.client("gone").statistics(StatisticsQuery(year=year))
    assert ended.value.status == 401


def test_unusable_periods_are_refused_in_plain_words(case_world: CaseWorld) -> None:
    with case_world.http("oio") as http:
        for params in (
            {"year": "1999"},
            {"year": "twenty"},
            {"from_month": "13"},
            {"from_month": "5", "to_month": "4"},
            {"download": "perhaps"},
        ):
            response = http.get("/statistics", params=params)
            assert response.status_code == 400, params
            assert "'" in response.json()["error"]


def test_viewing_and_downloading_statistics_are_recorded_in_the_audit_log(
    case_world: CaseWorld,
) -> None:
    year = datetime.now(UTC).year
    case_world.client("eco").statistics(StatisticsQuery(year=year, from_month=2, to_month=4))
    case_world.client("admin").statistics(StatisticsQuery(office="all", year=year, download=True))
    events = audit_events(case_world.instance)
    assert ("eco-officer", "statistics.view", f"ECO {year}-02 to {year}-04") in events
    assert ("admin", "statistics.download", f"all {year}-01 to {year}-12") in events
    with case_world.instance.readers() as db:
        recorded = db.execute(
            select(AuditEvent.action).where(AuditEvent.action.like("statistics.%"))
        ).scalars()
        assert sorted(recorded) == ["statistics.download", "statistics.view"]


# --- small counts ------------------------------------------------------------------------------


def _random_rows(rng: random.Random, count: int, year: int) -> list[dict[str, Any]]:
    categories = ["fraud", "harassment", "sexual-harassment", "abuse-of-authority", "retaliation"]
    rows = []
    for number in range(1, count + 1):
        category = rng.choice(categories)
        office = "ECO" if category == "retaliation" else "OIO"
        if rng.random() < 0.1:
            office = "OIO" if office == "ECO" else "ECO"
        received = datetime(year - (rng.random() < 0.3), rng.randint(1, 12), rng.randint(1, 28))
        status = rng.choice([*OPEN, "closed", "closed", "closed"])
        acknowledged = None
        if status != "received" or rng.random() < 0.2:
            acknowledged = received + timedelta(days=rng.randint(0, 12), hours=9)
        closed = received + timedelta(days=rng.randint(5, 150)) if status == "closed" else None
        outcome = rng.choice(OUTCOMES) if closed else None
        rows.append(
            _row(
                number,
                office,
                category,
                received,
                status=status,
                outcome=outcome,
                acknowledged=acknowledged,
                closed=closed,
            )
        )
    return rows


def reader_relations(categories: list[str]) -> list[Relation]:
    """The sums a reader sees on the pages (and knows from what the rows mean).

    Figures are named (row, column) with one name for the same count in two
    tables: "total" (reports of the period, in five tables) and "closed".
    """
    columns = [*OFFICES, "all"]
    relations = []

    def add(total: str, parts: list[str]) -> None:
        relations.append(Relation(total, tuple(parts)))

    for c in OFFICES:
        add(f"total|{c}", [f"received:{k}|{c}" for k in categories])
    for c in columns:
        add(f"open|{c}", [f"status:{s}|{c}" for s in OPEN])
        add(f"total|{c}", [f"open|{c}", f"closed|{c}"])
        add(f"closed|{c}", [f"outcome:{o}|{c}" for o in OUTCOMES])
        for what in ("acknowledgement", "feedback"):
            add(f"total|{c}", [f"{what}:{p}|{c}" for p in ("within", "late", "pending")])
    for c in OFFICES:
        # A closed report was closed in time or late; an open one is late or not yet due.
        add(f"closed|{c}", [f"feedback:within|{c}", f"closed-late|{c}"])
        add(f"feedback:late|{c}", [f"closed-late|{c}", f"open-late|{c}"])
        add(f"open|{c}", [f"open-late|{c}", f"feedback:pending|{c}"])
    # Two offices: what one sent, the other took.
    add("referrals:sent|OIO", ["referrals:received|ECO"])
    add("referrals:sent|ECO", ["referrals:received|OIO"])
    add("referrals:sent|all", ["referrals:received|all"])
    rows = [
        "total",
        "open",
        "closed",
        "previous",
        *(f"status:{s}" for s in OPEN),
        *(f"outcome:{o}" for o in OUTCOMES),
        *(
            f"{w}:{p}"
            for w in ("acknowledgement", "feedback")
            for p in ("within", "late", "pending")
        ),
        *(f"referrals:{r}" for r in ("sent", "received", "exported")),
        *(f"overdue:{r}" for r in ("acknowledge", "feedback")),
    ]
    for row in rows:
        add(f"{row}|all", [f"{row}|{c}" for c in OFFICES])
    return relations


def reader_names(table: str, row: str) -> str:
    """The reader's one name for a figure, whichever table shows it."""
    if row == "total" or (table, row) == ("year", "current"):
        return "total"
    if row == "closed":
        return "closed"
    if (table, row) == ("status", "open"):
        return "open"
    if table == "year":
        return "previous"
    if table in ("received", "status", "outcome"):
        return f"{table}:{row}"
    return f"{table}:{row}"


def what_the_pages_show(answers: list[Statistics]) -> dict[str, tuple[int | None, Shown]]:
    """Every figure the answers show, by the reader's names; one figure shown alike everywhere."""
    seen: dict[str, tuple[int | None, Shown]] = {}
    for answer in answers:
        for table in answer.tables:
            if table.key == "durations":
                continue
            for row in table.rows:
                for column, cell in zip(table.columns, row.cells, strict=True):
                    name = f"{reader_names(table.key, row.key)}|{column}"
                    figure = (cell.value, Shown(cell.shown))
                    assert seen.setdefault(name, figure) == figure, name
    return seen


def assert_nothing_hidden_can_be_worked_out(
    seen: dict[str, tuple[int | None, Shown]], relations: list[Relation], threshold: int
) -> None:
    names = {n for r in relations for n in (r.total, *r.parts)} | set(seen)
    states = {n: seen[n][1] if n in seen else Shown.INTERNAL for n in names}
    shown = {n: seen[n][0] if n in seen else None for n in names}
    hidden = [n for n, s in states.items() if s in (Shown.FEWER, Shown.WITHHELD)]
    assert hidden, "the data should hide something"
    largest = max((v for v, _ in seen.values() if v is not None), default=0)
    found = recovered(shown, states, relations, threshold, largest + 40)
    assert not found, f"worked out from the pages: {found}"


@pytest.mark.parametrize("seed", range(4))
def test_no_hidden_count_can_be_worked_out_from_every_page_an_administrator_sees(
    case_world: CaseWorld, seed: int
) -> None:
    year = datetime.now(UTC).year - 1
    _insert(case_world.instance, _random_rows(random.Random(seed), 45, year))  # noqa: S311 - test data, not secrets
    admin = case_world.client("admin")
    answers = [
        admin.statistics(StatisticsQuery(office=office, year=year)) for office in (*OFFICES, "all")
    ]
    categories = [r.key for r in answers[0].tables[0].rows if r.key != "total"]
    seen = what_the_pages_show(answers)
    fewer = [n for n, (_, s) in seen.items() if s is Shown.FEWER]
    assert all(seen[n][0] is None for n in fewer)
    assert_nothing_hidden_can_be_worked_out(
        seen, reader_relations(categories), answers[0].threshold
    )


def test_showing_only_the_small_counts_hidden_would_let_them_be_worked_out(
    instance: Instance, office_keys: dict[str, PrivateKey]
) -> None:
    """The reader finds something when only counts below the threshold are hidden."""
    year = 2024
    _insert(instance, _random_rows(random.Random(7), 45, year))  # noqa: S311 - test data, not secrets
    figures = _compute(instance, statistics.Period(year), date(year + 1, 6, 1))
    figures.states = {
        k: Shown.INTERNAL if k in figures.internal else Shown.FEWER if v < 3 else Shown.VALUE
        for k, v in figures.values.items()
    }
    answers = []
    for office in (*OFFICES, "all"):
        shown = statistics.view(figures, office)
        answers.append(
            Statistics(
                office=office,
                year=year,
                from_month=1,
                to_month=12,
                today=figures.today,
                counted_at=datetime(year + 1, 6, 1),
                threshold=3,
                offices=list(OFFICES),
                tables=[_api_table(t) for t in shown.tables],
            )
        )
    categories = list(figures.categories)
    seen = what_the_pages_show(answers)
    names = {n for r in reader_relations(categories) for n in (r.total, *r.parts)} | set(seen)
    states = {n: seen[n][1] if n in seen else Shown.INTERNAL for n in names}
    values = {n: seen[n][0] if n in seen else None for n in names}
    assert recovered(values, states, reader_relations(categories), 3, 200)


def _api_table(table: statistics.Table) -> Any:
    from dropbox.api_schema import StatisticsCell, StatisticsRow, StatisticsTable

    return StatisticsTable(
        key=table.key,
        columns=list(table.columns),
        rows=[
            StatisticsRow(
                key=row.key,
                cells=[StatisticsCell(value=c.value, shown=c.shown.value) for c in row.cells],  # type: ignore[arg-type]
            )
            for row in table.rows
        ],
    )


def test_a_threshold_of_two_hides_single_reports(
    instance: Instance, office_keys: dict[str, PrivateKey]
) -> None:
    rows = [_row(n, "OIO", "fraud", datetime(2025, 4, 2)) for n in range(1, 6)]
    rows.append(_row(6, "OIO", "harassment", datetime(2025, 4, 2)))
    _insert(instance, rows)
    config = instance.config
    with instance.readers() as db:
        figures = statistics.compute(
            db,
            statistics.Period(2025),
            date(2025, 4, 3),
            offices=["OIO", "ECO"],
            categories=[c.code for c in config.categories],
            threshold=2,
        )
    assert figures.cell("received:harassment:OIO") == statistics.Cell(None, Shown.FEWER)
    # A category nobody chose is hidden alike: otherwise "fewer than 2" would mean 1.
    assert figures.cell("received:discrimination:OIO") == statistics.Cell(None, Shown.FEWER)
    assert figures.cell("received:fraud:OIO") == statistics.Cell(5, Shown.VALUE)
    assert figures.cell("total:OIO") == statistics.Cell(6, Shown.VALUE)
