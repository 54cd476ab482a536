"""Statistics of a period, from metadata only: what an office publishes in its annual report.

Nothing here reads an item, a key block or a blob: every figure is a count
of report rows (category, status, outcome, office, dates), of referral rows
in `status_changes`, and of `report.export` events in the audit log. The
case server could not decrypt anything anyway.

**Whose reports.** The reports of a period are those received in its
months (`Period`). An office's column counts the ones it handles now: the
reports its officers can see. A referral counts for the office that made it
("sent to another office") and the one that received it ("received from
another office"). The column of all offices (`ALL`) is the sum of the
offices' columns.

**Deadlines** are the inbox's (`dropbox.inbox.acknowledge_overdue`,
`feedback_overdue`) and the dates stored with each report: acknowledged
within 7 days means acknowledged on or before `acknowledge_due`; feedback
within 3 months means closed on or before `feedback_due`, since the inbox
counts a report's feedback as given when it is closed. A report whose date
is still ahead and that has not met it is "not yet due".

**Small counts.** Every figure of every office and of all offices is
computed first, with the sums a reader can see between them (`relations`),
and `dropbox.suppression.suppress` decides, for all of them at once, which
are shown. A view of one office is a part of that one set of figures, so
two views can never be put together to work out what either hides. Times
(median and 90th percentile of days) are shown only for groups of at least
the threshold.

**How they are counted.** Whether each deadline was met is stored with
each report when it is acknowledged and closed (`Report.acknowledged_in_time`,
`feedback_in_time`), and so are the days it took (`acknowledge_days`,
`close_days`), so nothing works out a date per row. On PostgreSQL the
period's rows are grouped by class and by days (`_count_classes_grouped`,
`_count_days_grouped`). SQLite has no hash aggregation: a GROUP BY sorts
every row of the period, about 130 ms for a year of 100,000 reports. So
there, each class a report can be in is a range of an index, and so is each
number of days (`_count_classes_by_range`, `_count_days_by_range`): index
seeks and counts, nothing sorted; if the classes listed do not add up to
the period's reports (a category no longer configured...), the period is
grouped instead. bench/stats.py measures both against counting report by
report.
"""

from __future__ import annotations

import calendar
import json
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import case, func, literal, select, true
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.selectable import ScalarSelect

from dropbox import audit, inbox
from dropbox.models import AuditEvent, Outcome, Report, Status, StatusChange
from dropbox.suppression import Relation, Shown, suppress

if TYPE_CHECKING:
    from dropbox.config import Config

ALL = "all"  # the column of every office together
# Statuses of a report that is still open, in lifecycle order.
OPEN_STATUSES = (
    Status.RECEIVED,
    Status.ACKNOWLEDGED,
    Status.UNDER_ASSESSMENT,
    Status.REFERRED,
    Status.REOPENED,
)
# A closed report without an outcome (none should exist) is counted in a row of this name.
UNRECORDED = "unrecorded"
PERCENTILES = (("median", 50), ("p90", 90))
# The earliest year a period may be asked for (before any instance existed).
FIRST_YEAR = 2000


@dataclass(frozen=True)
class Period:
    """Some months of a year (all of it by default), by the day a report was received."""

    year: int
    first_month: int = 1
    last_month: int = 12

    def __post_init__(self) -> None:
        if not 1 <= self.first_month <= self.last_month <= 12:
            raise ValueError("the months must run from 1 to 12, the first not after the last")

    @property
    def start(self) -> datetime:
        """The first moment of the period."""
        return datetime(self.year, self.first_month, 1)

    @property
    def end(self) -> datetime:
        """The first moment after the period."""
        if self.last_month == 12:
            return datetime(self.year + 1, 1, 1)
        return datetime(self.year, self.last_month + 1, 1)

    @property
    def last_day(self) -> date:
        """The period's last day."""
        return date(self.year, self.last_month, calendar.monthrange(self.year, self.last_month)[1])

    def previous(self) -> Period:
        """The same months a year earlier."""
        return Period(self.year - 1, self.first_month, self.last_month)


@dataclass(frozen=True)
class Cell:
    """One figure as a view shows it: its value, or None when hidden."""

    value: int | None
    shown: Shown


@dataclass(frozen=True)
class Row:
    """A row of a table: its key (a category, a status...) and one cell a column."""

    key: str
    cells: tuple[Cell, ...]


@dataclass(frozen=True)
class Table:
    """A table of a view: which columns (office codes, `ALL`) and its rows."""

    key: str
    columns: tuple[str, ...]
    rows: tuple[Row, ...]


@dataclass(frozen=True)
class View:
    """What one statistics page shows: one office's column, or every office's and all of them."""

    office: str
    period: Period
    today: date
    threshold: int
    tables: tuple[Table, ...]


@dataclass
class Figures:
    """Every figure of a period for every office, and how each is shown."""

    period: Period
    today: date
    threshold: int
    offices: tuple[str, ...]
    categories: tuple[str, ...]
    outcomes: tuple[str, ...] = tuple(o.value for o in Outcome)
    values: dict[str, int] = field(default_factory=dict)
    relations: list[Relation] = field(default_factory=list)
    internal: set[str] = field(default_factory=set)
    states: dict[str, Shown] = field(default_factory=dict)
    # (what, column) -> {days: how many reports}; what is "acknowledge" or "close".
    days: dict[tuple[str, str], Counter[int]] = field(default_factory=dict)

    @property
    def columns(self) -> tuple[str, ...]:
        """Every office, then all of them."""
        return (*self.offices, ALL)

    def cell(self, key: str) -> Cell:
        """The figure as shown: hidden ones carry no value."""
        shown = self.states[key]
        return Cell(self.values[key] if shown is Shown.VALUE else None, shown)

    def duration(self, what: str, column: str, percent: int) -> Cell:
        """A percentile of days, shown only for a group of at least the threshold."""
        counts = self.days.get((what, column), Counter())
        n = sum(counts.values())
        if n < self.threshold:
            return Cell(None, Shown.FEWER)
        rank = max(1, math.ceil(percent / 100 * n))  # nearest rank
        seen = 0
        for days in sorted(counts):
            seen += counts[days]
            if seen >= rank:
                return Cell(days, Shown.VALUE)
        raise AssertionError("unreachable: the ranks add up to n")  # pragma: no cover


# --- the figures and the sums a reader can see between them ---------------------------------


def _add(figures: Figures, total: str, parts: Iterable[str]) -> None:
    """Record that `total` is the sum of `parts` (a total not counted is that sum)."""
    parts = tuple(parts)
    for part in parts:
        figures.values.setdefault(part, 0)
    figures.values.setdefault(total, sum(figures.values[p] for p in parts))
    figures.relations.append(Relation(total, parts))


def _across(figures: Figures, family: str) -> None:
    """The `ALL` figure of a family is the sum of the offices' figures."""
    for office in figures.offices:
        figures.values.setdefault(f"{family}:{office}", 0)
    figures.values[f"{family}:{ALL}"] = sum(
        figures.values[f"{family}:{office}"] for office in figures.offices
    )
    _add(figures, f"{family}:{ALL}", (f"{family}:{office}" for office in figures.offices))


def table_keys(figures: Figures) -> dict[str, tuple[tuple[str, ...], tuple[tuple[str, str], ...]]]:
    """Each table: its columns, and its rows as (row key, figure family); `{}` is the column."""
    offices = figures.offices
    return {
        "received": (
            offices,
            (
                *((c, f"received:{c}:{{}}") for c in figures.categories),
                ("total", "total:{}"),
            ),
        ),
        "status": (
            figures.columns,
            (
                *((s.value, f"status:{s.value}:{{}}") for s in OPEN_STATUSES),
                ("open", "open:{}"),
                ("closed", "status:closed:{}"),
                ("total", "total:{}"),
            ),
        ),
        "outcome": (
            figures.columns,
            (
                *((o, f"outcome:{o}:{{}}") for o in figures.outcomes),
                ("closed", "status:closed:{}"),
            ),
        ),
        "referrals": (
            figures.columns,
            (("sent", "sent:{}"), ("received", "taken:{}"), ("exported", "exported:{}")),
        ),
        "acknowledgement": (
            figures.columns,
            (
                ("within", "ack:within:{}"),
                ("late", "ack:late:{}"),
                ("pending", "ack:pending:{}"),
                ("total", "total:{}"),
            ),
        ),
        "feedback": (
            figures.columns,
            (
                ("within", "fb:within:{}"),
                ("late", "fb:late:{}"),
                ("pending", "fb:pending:{}"),
                ("total", "total:{}"),
            ),
        ),
        "overdue": (
            figures.columns,
            (("acknowledge", "overdue:ack:{}"), ("feedback", "overdue:fb:{}")),
        ),
        "year": (
            figures.columns,
            (("previous", "previous:{}"), ("current", "total:{}")),
        ),
    }


DURATION_ROWS = tuple(
    (f"{what}_{name}", what, percent)
    for what in ("acknowledge", "close")
    for name, percent in PERCENTILES
)


def _relations(figures: Figures) -> None:
    """Every sum between figures that a reader of the pages can see or knows."""
    for office in figures.offices:
        cats = [f"received:{c}:{office}" for c in figures.categories]
        _add(figures, f"total:{office}", cats)
        opened = [f"status:{s.value}:{office}" for s in OPEN_STATUSES]
        _add(figures, f"open:{office}", opened)
        _add(figures, f"total:{office}", (f"open:{office}", f"status:closed:{office}"))
        _add(
            figures, f"status:closed:{office}", (f"outcome:{o}:{office}" for o in figures.outcomes)
        )
        # What a reader knows of feedback: a closed report was closed in time or late,
        # an open one is overdue or not yet due, and "late" is both kinds of late.
        closed_late, open_late = f"fb:closedlate:{office}", f"fb:openlate:{office}"
        figures.internal.update((closed_late, open_late))
        _add(figures, f"status:closed:{office}", (f"fb:within:{office}", closed_late))
        _add(figures, f"fb:late:{office}", (closed_late, open_late))
        _add(figures, f"open:{office}", (open_late, f"fb:pending:{office}"))
        for what in ("ack", "fb"):
            _add(
                figures,
                f"total:{office}",
                (f"{what}:{part}:{office}" for part in ("within", "late", "pending")),
            )
        # Referrals between offices: each pair a figure no page shows.
        pairs_out = [f"pair:{office}:{other}" for other in figures.offices if other != office]
        pairs_in = [f"pair:{other}:{office}" for other in figures.offices if other != office]
        figures.internal.update(pairs_out)
        _add(figures, f"sent:{office}", pairs_out)
        _add(figures, f"taken:{office}", pairs_in)
    families = [
        "total",
        "open",
        "sent",
        "taken",
        "exported",
        "previous",
        "overdue:ack",
        "overdue:fb",
        *(f"status:{s.value}" for s in Status),
        *(f"outcome:{o}" for o in figures.outcomes),
        *(f"{what}:{part}" for what in ("ack", "fb") for part in ("within", "late", "pending")),
    ]
    for family in families:
        _across(figures, family)
    # Seen from the column of all offices, the same sums hold.
    _add(figures, f"open:{ALL}", (f"status:{s.value}:{ALL}" for s in OPEN_STATUSES))
    _add(figures, f"total:{ALL}", (f"open:{ALL}", f"status:closed:{ALL}"))
    _add(figures, f"status:closed:{ALL}", (f"outcome:{o}:{ALL}" for o in figures.outcomes))
    for what in ("ack", "fb"):
        _add(
            figures,
            f"total:{ALL}",
            (f"{what}:{part}:{ALL}" for part in ("within", "late", "pending")),
        )
    _add(figures, f"taken:{ALL}", (f"sent:{ALL}",))


# --- the queries -----------------------------------------------------------------------------


def _in(period: Period) -> ColumnElement[bool]:
    return (Report.received_at >= period.start) & (Report.received_at < period.end)


# How a report of the period stands with each deadline (the names of `table_keys`).
ACK_CLASSES = ("within", "late", "pending")
CLOSE_CLASSES = ("within", "closedlate", "openlate", "pending")

# A class of reports (office, category, status, outcome) -> how many of them stand in each
# of the `ACK_CLASSES` and in each of the `CLOSE_CLASSES`.
Classes = dict[tuple[str, str, str, str | None], tuple[list[int], list[int]]]


def _met(classes: Classes, key: tuple[str, str, str, str | None]) -> tuple[list[int], list[int]]:
    return classes.setdefault(key, ([0] * len(ACK_CLASSES), [0] * len(CLOSE_CLASSES)))


def _tally(figures: Figures, classes: Classes) -> None:
    """Add the classes' counts to the figures, in the order of the classes.

    The same counts give the same figures in the same order whichever query
    counted them: `suppress` settles the hidden figures in that order.
    """
    v = figures.values
    for (office, category, status, outcome), (ack, fb) in sorted(
        classes.items(), key=lambda item: (*item[0][:3], item[0][3] or "")
    ):
        n = sum(ack)
        keys = [
            (f"received:{category}:{office}", n),
            (f"status:{status}:{office}", n),
            *((f"ack:{name}:{office}", k) for name, k in zip(ACK_CLASSES, ack, strict=True)),
            *((f"fb:{name}:{office}", k) for name, k in zip(CLOSE_CLASSES, fb, strict=True)),
        ]
        if status == Status.CLOSED:
            keys.append((f"outcome:{outcome or UNRECORDED}:{office}", n))
        for key, k in keys:
            if k:
                v[key] = v.get(key, 0) + k


def _count_classes_grouped(session: Session, figures: Figures) -> None:
    """The period's reports by office, category, status, outcome and deadline, grouped.

    One pass through the period's range of `ix_reports_received_statistics`,
    grouped by every class a figure counts (a few hundred groups). A
    deadline not met is late once its date is behind `today`, pending before.
    """
    period, today = figures.period, figures.today
    columns = (
        Report.office_code,
        Report.category,
        Report.status,
        Report.outcome,
        Report.acknowledged_in_time,
        Report.feedback_in_time,
        Report.acknowledge_due >= today,
        Report.feedback_due >= today,
    )
    classes: Classes = {}
    for (
        office,
        category,
        status,
        outcome,
        ack_met,
        fb_met,
        ack_ahead,
        fb_ahead,
        n,
    ) in session.execute(select(*columns, func.count()).where(_in(period)).group_by(*columns)):
        if office not in figures.offices:
            continue
        ack, fb = _met(classes, (office, category, status, outcome))
        if ack_met is not None:
            ack[0 if ack_met else 1] += n
        else:
            ack[2 if ack_ahead else 1] += n
        if status == Status.CLOSED:
            fb[0 if fb_met else 1] += n
        else:
            fb[3 if fb_ahead else 2] += n
    _tally(figures, classes)


def _count_classes_by_range(session: Session, figures: Figures) -> bool:
    """The same counts as `_count_classes_grouped`, each class a range of an index; True if
    they are every report of the period.

    SQLite has no hash aggregation: grouping a year of 100,000 reports sorts
    them all (about 130 ms). Here each class an office's report can be in
    (every configured category by every status, by every outcome when
    closed, and by the deadlines met) is a range of
    `ix_reports_statistics_classes` ending with the period: about a thousand
    index seeks, nothing sorted, and only the classes whose deadlines may
    still be ahead compare a date in each row (about 15 ms in all). A report
    of any other class (a category no longer configured, a closed report
    without an outcome) is not counted here: then the counts do not add up
    to the period's reports, and the caller groups them instead.
    """
    period, today = figures.period, figures.today
    # Every class as a join of three lists, each passed as one JSON text so that the
    # statement is the same at every request (compiled once).
    offices = func.json_each(json.dumps(figures.offices)).table_valued("value", name="offices")
    categories = func.json_each(json.dumps(figures.categories)).table_valued(
        "value", name="categories"
    )
    met = (None, False, True)
    kinds = func.json_each(
        json.dumps(
            [
                *((status.value, None, ack, None) for status in OPEN_STATUSES for ack in met),
                *(
                    (Status.CLOSED.value, outcome, ack, fb)
                    for outcome in figures.outcomes
                    for ack in met
                    for fb in met
                ),
            ]
        )
    ).table_valued("value", name="kinds")
    office, category = offices.c.value, categories.c.value
    status, outcome, acknowledged, fed_back = (
        func.json_extract(kinds.c.value, f"$[{n}]") for n in range(4)
    )

    def counted(ack_ahead: bool, fb_ahead: bool) -> ScalarSelect[Any]:
        """How many reports of the class, and of them how many deadlines are still ahead."""
        return (
            select(
                func.json_array(
                    func.count(),
                    func.total(Report.acknowledge_due >= today) if ack_ahead else 0,
                    func.total(Report.feedback_due >= today) if fb_ahead else 0,
                )
            )
            .where(
                Report.office_code == office,
                Report.status == status,
                Report.category == category,
                Report.outcome.is_not_distinct_from(outcome),
                Report.acknowledged_in_time.is_not_distinct_from(acknowledged),
                Report.feedback_in_time.is_not_distinct_from(fed_back),
                _in(period),
            )
            .scalar_subquery()
        )

    # SQLite evaluates only the subquery of the case that holds: a date is compared only
    # where a deadline not met may still be ahead (not acknowledged; not closed).
    not_acknowledged = acknowledged.is_(None)
    open_ = status != Status.CLOSED.value
    found = case(
        (not_acknowledged & open_, counted(True, True)),
        (not_acknowledged, counted(True, False)),
        (open_, counted(False, True)),
        else_=counted(False, False),
    )
    enumerated = (
        select(office, category, status, outcome, acknowledged, fed_back, found)
        .select_from(offices)
        .join(categories, true())
        .join(kinds, true())
    )
    classes: Classes = {}
    for code, category_, status_, outcome_, ack_met, fb_met, answer in session.execute(enumerated):
        if answer.startswith("[0,"):
            continue  # most classes have no report: not worth decoding
        n, ack_ahead, fb_ahead = map(int, json.loads(answer))
        ack, fb = _met(classes, (code, category_, status_, outcome_))
        if ack_met is None:
            ack[1] += n - ack_ahead
            ack[2] += ack_ahead
        else:
            ack[0 if ack_met else 1] += n
        if status_ == Status.CLOSED:
            fb[0 if fb_met else 1] += n
        else:
            fb[2] += n - fb_ahead
            fb[3] += fb_ahead
    everyone = session.execute(
        select(func.count()).where(_in(period), Report.office_code.in_(figures.offices))
    ).scalar_one()
    if sum(sum(ack) for ack, _ in classes.values()) != everyone:
        return False
    _tally(figures, classes)
    return True


def _add_days(figures: Figures, what: str, office: str, days: int, n: int) -> None:
    if office in figures.offices and n:
        for column in (office, ALL):
            figures.days.setdefault((what, column), Counter())[int(days)] += n


def _count_days_grouped(session: Session, figures: Figures) -> None:
    """The stored days taken to acknowledge and to close, grouped (a few thousand groups)."""
    taken = (Report.office_code, Report.acknowledge_days, Report.close_days)
    for office, to_acknowledge, to_close, n in session.execute(
        select(*taken, func.count())
        .where(
            _in(figures.period),
            Report.acknowledge_days.is_not(None) | Report.close_days.is_not(None),
        )
        .group_by(*taken)
    ):
        for what, days in (("acknowledge", to_acknowledge), ("close", to_close)):
            if days is not None:
                _add_days(figures, what, office, days, n)


def _count_days_by_range(session: Session, figures: Figures) -> None:
    """The same counts as `_count_days_grouped`, each number of days a range of an index.

    For each office, the numbers of days any of its reports took are found
    by stepping through `ix_reports_acknowledge_days` (for the days to
    close, `ix_reports_close_days`) from one value to the next, a seek each
    (a few hundred values, whatever the number of reports), and the period's
    reports of each value are a range of it: nothing is sorted (SQLite has
    no hash aggregation).
    """
    offices = func.json_each(json.dumps(figures.offices)).table_valued("value", name="offices")
    for what, days in (("acknowledge", Report.acknowledge_days), ("close", Report.close_days)):
        first = (
            select(func.min(days))
            .where(Report.office_code == offices.c.value, days.is_not(None))
            .scalar_subquery()
        )
        seen = select(offices.c.value.label("code"), first.label("days")).cte(
            "seen", recursive=True
        )
        following = (
            select(func.min(days))
            .where(Report.office_code == seen.c.code, days > seen.c.days)
            .scalar_subquery()
        )
        seen = seen.union_all(select(seen.c.code, following).where(seen.c.days.is_not(None)))
        counted = (
            select(func.count())
            .where(Report.office_code == seen.c.code, days == seen.c.days, _in(figures.period))
            .scalar_subquery()
        )
        for office, value, n in session.execute(
            select(seen.c.code, seen.c.days, counted).where(seen.c.days.is_not(None))
        ):
            _add_days(figures, what, office, value, n)


def _count_reports(session: Session, figures: Figures, dialect: str) -> None:
    """The period's reports by class and deadline, then the days taken.

    By ranges of indexes on SQLite (falling back to grouping when a report
    is of a class not enumerated), grouped elsewhere: a database with hash
    aggregation groups without sorting.
    """
    if dialect == "sqlite":
        if not _count_classes_by_range(session, figures):
            _count_classes_grouped(session, figures)
        _count_days_by_range(session, figures)
    else:
        _count_classes_grouped(session, figures)
        _count_days_grouped(session, figures)


def _count_overdue(session: Session, figures: Figures) -> None:
    """What is overdue today, among every report (the inbox's definitions).

    Counted per office and status, so that the closed reports, most of them,
    are read only where one was never acknowledged: each is a range of
    `ix_reports_office_filters` (office, status, then the acknowledgement),
    which the office's code lets SQLite seek to instead of reading it whole.
    """
    today, v = figures.today, figures.values
    offices = set(figures.offices)
    overdue_ack = func.sum(case((inbox.acknowledge_overdue(today), 1), else_=0))
    overdue_fb = func.sum(case((inbox.feedback_overdue(today), 1), else_=0))
    open_rows = session.execute(
        select(Report.office_code, overdue_ack, overdue_fb)
        .where(
            Report.office_code.in_(figures.offices),
            Report.status.in_([s.value for s in OPEN_STATUSES]),
        )
        .group_by(Report.office_code)
    ).all()
    closed_rows = session.execute(
        select(Report.office_code, func.count(), literal(0))
        .where(
            Report.office_code.in_(figures.offices),
            Report.status == Status.CLOSED,
            inbox.acknowledge_overdue(today),
        )
        .group_by(Report.office_code)
    ).all()
    for office, ack, fb in [*open_rows, *closed_rows]:
        if office in offices:
            v[f"overdue:ack:{office}"] = v.get(f"overdue:ack:{office}", 0) + int(ack or 0)
            v[f"overdue:fb:{office}"] = v.get(f"overdue:fb:{office}", 0) + int(fb or 0)


def _count_the_rest(session: Session, figures: Figures) -> None:
    """The previous year's months, referrals and exports."""
    period, v = figures.period, figures.values
    offices = set(figures.offices)
    before = period.previous()
    for office, n in session.execute(
        select(Report.office_code, func.count()).where(_in(before)).group_by(Report.office_code)
    ):
        if office in offices:
            v[f"previous:{office}"] = n
    # From the few referral and export rows to their reports (by primary key), never the
    # other way: the period may hold 100,000 reports.
    pairs: dict[tuple[str, str], int] = defaultdict(int)
    for from_office, to_office, n in session.execute(
        select(StatusChange.from_office, StatusChange.to_office, func.count())
        .join(Report, Report.id == StatusChange.report_id)
        .where(
            StatusChange.to_status == Status.REFERRED,
            StatusChange.from_office.is_not(None),
            _in(period),
        )
        .group_by(StatusChange.from_office, StatusChange.to_office)
    ):
        if from_office in offices and to_office in offices and from_office != to_office:
            pairs[(from_office, to_office)] += n
    for (from_office, to_office), n in pairs.items():
        v[f"pair:{from_office}:{to_office}"] = n
    exported = (
        select(AuditEvent.report_id)
        .where(AuditEvent.action == "report.export")
        .distinct()
        .subquery()
    )
    for office, n in session.execute(
        select(Report.office_code, func.count())
        .select_from(exported)
        .join(Report, Report.id == exported.c.report_id)
        .where(_in(period))
        .group_by(Report.office_code)
    ):
        if office in offices:
            v[f"exported:{office}"] = n


def compute(
    session: Session,
    period: Period,
    today: date,
    *,
    offices: Sequence[str],
    categories: Sequence[str],
    threshold: int,
) -> Figures:
    """Every figure of the period for every office, with small counts hidden (once, for all)."""
    dialect = session.get_bind().dialect.name
    figures = Figures(period, today, threshold, tuple(offices), tuple(categories))
    _count_reports(session, figures, dialect)
    _count_overdue(session, figures)
    _count_the_rest(session, figures)
    # A category no longer configured still has its reports counted, in a row of its own.
    found = {key.split(":")[1] for key in figures.values if key.startswith("received:")}
    figures.categories = (*figures.categories, *sorted(found - set(figures.categories)))
    if any(key.startswith(f"outcome:{UNRECORDED}:") for key in figures.values):
        figures.outcomes = (*figures.outcomes, UNRECORDED)
    _relations(figures)
    # Between figures of equal value, one of the column of all offices is withheld first:
    # the offices' own columns are what most officers see.
    rank = {key: 0 if key.endswith(f":{ALL}") else 1 for key in figures.values}
    figures.states = suppress(
        figures.values, figures.relations, threshold, frozenset(figures.internal), rank
    )
    return figures


def compute_configured(session: Session, config: Config, period: Period, today: date) -> Figures:
    """`compute` for the configured offices and categories, at the configured threshold."""
    return compute(
        session,
        period,
        today,
        offices=[o.code for o in config.offices],
        categories=[c.code for c in config.categories],
        threshold=config.statistics.suppress_below,
    )


def view(figures: Figures, office: str) -> View:
    """The tables of one office's page (`office` a code), or of every office (`ALL`)."""
    tables = []
    for key, (columns, rows) in table_keys(figures).items():
        shown_columns = columns if office == ALL else (office,)
        tables.append(
            Table(
                key,
                shown_columns,
                tuple(
                    Row(row, tuple(figures.cell(family.format(c)) for c in shown_columns))
                    for row, family in rows
                ),
            )
        )
    shown_columns = figures.columns if office == ALL else (office,)
    tables.append(
        Table(
            "durations",
            shown_columns,
            tuple(
                Row(row, tuple(figures.duration(what, c, percent) for c in shown_columns))
                for row, what, percent in DURATION_ROWS
            ),
        )
    )
    return View(office, figures.period, figures.today, figures.threshold, tuple(tables))


def record(session: Session, actor: str, shown: View, *, download: bool) -> None:
    """Record that statistics were viewed (or downloaded): which office and which months."""
    period = shown.period
    audit.record(
        session,
        actor,
        "statistics.download" if download else "statistics.view",
        detail=f"{shown.office} {period.year}-{period.first_month:02d}"
        f" to {period.year}-{period.last_month:02d}",
    )
