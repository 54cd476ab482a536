"""The statistics page: an office's figures for a year or some of its months, a CSV and a print.

The case server computes every figure from metadata and hides small
counts before anything leaves it (dropbox/statistics.py); this module only
lays the answer out. `sections` turns it into the tables the page shows,
as text, and the CSV is written from the very same text, so that a
download holds exactly what the page shows. Percentages, the change from
the year before and the charts (journalist_interface/charts.py) are made
from shown figures only: a hidden figure makes them "not shown" too.
Viewing is recorded by the case server (`statistics.view`), and so is each
download (`statistics.download`), asked for when the CSV is made.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Flask, Response, render_template, request
from flask_babel import gettext as _
from markupsafe import Markup

from dropbox.api_schema import Statistics, StatisticsCell, StatisticsQuery, StatisticsTable
from journalist_interface import vault
from journalist_interface.charts import Series, bar_chart
from journalist_interface.client import ApiError, Unreachable
from journalist_interface.signin import said

blueprint = Blueprint("statistics", __name__)

ALL = "all"
FIRST_YEAR = 2000
# Characters that make a spreadsheet read a cell as a formula.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def register_statistics(app: Flask) -> None:
    """Attach the statistics pages."""
    app.register_blueprint(blueprint)


def _month_names() -> list[str]:
    return [
        _("January"),
        _("February"),
        _("March"),
        _("April"),
        _("May"),
        _("June"),
        _("July"),
        _("August"),
        _("September"),
        _("October"),
        _("November"),
        _("December"),
    ]


@dataclass(frozen=True)
class Line:
    """A row of a table as shown: its label and the text of each cell."""

    label: str
    texts: list[str]
    values: list[int | None]
    charted: bool = True


@dataclass(frozen=True)
class Section:
    """A table of the page (with its chart, if it has one)."""

    key: str
    title: str
    hint: str
    columns: list[str]
    lines: list[Line]
    chart: Markup | None = None


def _count(cell: StatisticsCell, threshold: int) -> str:
    if cell.value is not None:
        return str(cell.value)
    if cell.shown == "fewer":
        return str(_("fewer than %(n)s", n=threshold))
    return str(_("not shown"))


def _share(part: StatisticsCell, whole: int | None) -> str:
    """A part as a percentage of a whole, if both are shown and the whole is not zero."""
    if part.value is None or whole is None:
        return str(_("not shown"))
    if whole == 0:
        return str(_("none due"))
    return f"{round(100 * part.value / whole)}%"


def _sum(*cells: StatisticsCell) -> int | None:
    if any(cell.value is None for cell in cells):
        return None
    return sum(cell.value or 0 for cell in cells)


def _change(before: StatisticsCell, now: StatisticsCell) -> str:
    """The change from the year before, in words (never starting with a sign)."""
    if before.value is None or now.value is None:
        return str(_("not shown"))
    difference = now.value - before.value
    percent = f" ({difference * 100 / before.value:+.0f}%)" if before.value else ""
    if difference > 0:
        return str(_("%(n)s more", n=difference)) + percent
    if difference < 0:
        return str(_("%(n)s fewer", n=-difference)) + percent
    return str(_("no change"))


def _column_label(code: str, names: dict[str, str]) -> str:
    return _("All offices") if code == ALL else code


class _Layout:
    """Lays out one answer: labels for its rows, and the text of its cells."""

    def __init__(self, answer: Statistics, labels: dict[str, dict[str, str]]) -> None:
        self.answer = answer
        self.labels = labels
        self.tables = {t.key: t for t in answer.tables}

    def table(self, key: str) -> StatisticsTable:
        return self.tables[key]

    def rows(self, key: str) -> dict[str, list[StatisticsCell]]:
        return {row.key: row.cells for row in self.tables[key].rows}

    def counts(
        self, key: str, label: str, cells: list[StatisticsCell], charted: bool = True
    ) -> Line:
        threshold = self.answer.threshold
        return Line(
            label,
            [_count(c, threshold) for c in cells],
            [c.value for c in cells],
            charted,
        )


def sections(
    answer: Statistics, labels: dict[str, dict[str, str]], office_names: dict[str, str]
) -> list[Section]:
    """The page's tables, as text, in order (the CSV writes the same)."""
    layout = _Layout(answer, labels)
    months = _month_names()
    out: list[Section] = []

    def columns(key: str) -> list[str]:
        return [_column_label(c, office_names) for c in layout.table(key).columns]

    received = layout.rows("received")
    out.append(
        Section(
            "received",
            _("Reports received, by category"),
            _("Reports received in the period that each office handles now."),
            columns("received"),
            [
                layout.counts("received", labels["category"].get(code, code), cells)
                for code, cells in received.items()
                if code != "total"
            ]
            + [layout.counts("received", _("Total received"), received["total"], False)],
        )
    )
    status = layout.rows("status")
    status_lines = [
        layout.counts("status", labels["status"].get(s, s.capitalize()), status[s])
        for s in ("received", "acknowledged", "under assessment", "referred", "reopened")
    ]
    status_lines.append(
        layout.counts("status", _("Still open (all of the above)"), status["open"], False)
    )
    status_lines.append(layout.counts("status", _("Closed"), status["closed"]))
    status_lines.append(layout.counts("status", _("Total received"), status["total"], False))
    out.append(
        Section(
            "status",
            _("Where those reports stand today"),
            _("The status of each report received in the period, as it is today."),
            columns("status"),
            status_lines,
        )
    )
    outcome = layout.rows("outcome")
    closed = outcome["closed"]
    outcome_lines = []
    for code, cells in outcome.items():
        if code == "closed":
            continue
        line = layout.counts("outcome", labels["outcome"].get(code, code.capitalize()), cells)
        texts = [
            text if cell.value is None else f"{text} ({_share(cell, whole.value)})"
            for text, cell, whole in zip(line.texts, cells, closed, strict=True)
        ]
        outcome_lines.append(Line(line.label, texts, line.values))
    outcome_lines.append(layout.counts("outcome", _("Total closed"), closed, False))
    out.append(
        Section(
            "outcome",
            _("Closed reports, by outcome"),
            _("Each outcome with its share of the reports closed."),
            columns("outcome"),
            outcome_lines,
        )
    )
    referrals = layout.rows("referrals")
    out.append(
        Section(
            "referrals",
            _("Referrals and exports"),
            _(
                "Reports of the period referred to another office, referred here by another"
                " office, and exported, encrypted, for an investigator."
            ),
            columns("referrals"),
            [
                layout.counts("referrals", _("Referred to another office"), referrals["sent"]),
                layout.counts(
                    "referrals", _("Referred here by another office"), referrals["received"]
                ),
                layout.counts(
                    "referrals", _("Exported for an investigator"), referrals["exported"]
                ),
            ],
        )
    )
    for key, title, hint, within_label, late_label, share_label in (
        (
            "acknowledgement",
            _("Acknowledgement within 7 days"),
            _("Acknowledged by a reply or by moving the report to acknowledged."),
            _("Acknowledged within 7 days"),
            _("Acknowledged late, or overdue today"),
            _("Share acknowledged within 7 days"),
        ),
        (
            "feedback",
            _("Feedback within 3 months"),
            _("Feedback is given when the report is closed, as the inbox counts it."),
            _("Closed within 3 months"),
            _("Closed late, or open and overdue today"),
            _("Share given feedback within 3 months"),
        ),
    ):
        rows = layout.rows(key)
        lines = [
            layout.counts(key, within_label, rows["within"]),
            layout.counts(key, late_label, rows["late"]),
            layout.counts(key, _("Not yet due"), rows["pending"]),
            layout.counts(key, _("Total received"), rows["total"], False),
        ]
        shares = [
            _share(within, _sum(within, late))
            for within, late in zip(rows["within"], rows["late"], strict=True)
        ]
        lines.append(Line(share_label, shares, [None] * len(shares), False))
        out.append(Section(key, title, hint, columns(key), lines))
    durations = layout.rows("durations")
    duration_lines = []
    for key, label in (
        ("acknowledge_median", _("Days to acknowledge, median")),
        ("acknowledge_p90", _("Days to acknowledge, 90th percentile")),
        ("close_median", _("Days to close, median")),
        ("close_p90", _("Days to close, 90th percentile")),
    ):
        cells = durations[key]
        duration_lines.append(
            Line(
                label,
                [
                    _("%(n)s days", n=c.value) if c.value is not None else _("too few reports")
                    for c in cells
                ],
                [None] * len(cells),
                False,
            )
        )
    out.append(
        Section(
            "durations",
            _("Time taken"),
            _(
                "Days from the day a report was received; shown only where at least"
                " %(n)s reports were acknowledged or closed.",
                n=answer.threshold,
            ),
            columns("durations"),
            duration_lines,
        )
    )
    overdue = layout.rows("overdue")
    out.append(
        Section(
            "overdue",
            _("Overdue today"),
            _("Every report each office handles, whenever it was received."),
            columns("overdue"),
            [
                layout.counts("overdue", _("Acknowledgement overdue"), overdue["acknowledge"]),
                layout.counts("overdue", _("Feedback overdue"), overdue["feedback"]),
            ],
        )
    )
    year = layout.rows("year")
    period = _period_words(answer, months)
    before = _period_words(answer, months, answer.year - 1)
    changes = [_change(b, n) for b, n in zip(year["previous"], year["current"], strict=True)]
    out.append(
        Section(
            "year",
            _("Compared with a year before"),
            _("Reports received in the same months of the year before."),
            columns("year"),
            [
                layout.counts("year", before, year["previous"]),
                layout.counts("year", period, year["current"]),
                Line(_("Change"), changes, [None] * len(changes), False),
            ],
        )
    )
    return [_with_chart(section) for section in out]


def _with_chart(section: Section) -> Section:
    charted = [line for line in section.lines if line.charted]
    if section.key in ("durations",) or not charted:
        return section
    series = [
        Series(column, [line.values[i] for line in charted], [line.texts[i] for line in charted])
        for i, column in enumerate(section.columns)
    ]
    chart = bar_chart(
        f"chart-{section.key}",
        _("Bar chart: %(title)s. The table beside it gives the same figures.", title=section.title),
        [line.label for line in charted],
        series,
    )
    return Section(section.key, section.title, section.hint, section.columns, section.lines, chart)


def mostly_hidden(answer: Statistics) -> bool:
    """Whether most of the figures the page shows are hidden: a period with few reports."""
    cells = [cell for table in answer.tables for row in table.rows for cell in row.cells]
    return 2 * sum(cell.value is None for cell in cells) > len(cells)


def _period_words(answer: Statistics, months: list[str], year: int | None = None) -> str:
    year = answer.year if year is None else year
    if (answer.from_month, answer.to_month) == (1, 12):
        return str(year)
    first, last = months[answer.from_month - 1], months[answer.to_month - 1]
    if answer.from_month == answer.to_month:
        return f"{first} {year}"
    return str(_("%(first)s to %(last)s %(year)s", first=first, last=last, year=year))


def _labels() -> dict[str, dict[str, str]]:
    entry = vault.current()
    assert entry is not None  # noqa: S101 - the decorator sent everyone else to sign in
    me = entry.me
    return {
        "category": dict(me.categories),
        "status": {s: s.capitalize() for s in me.statuses},
        "outcome": {o: o.capitalize() for o in me.outcomes},
    }


def _query(download: bool = False) -> tuple[StatisticsQuery, list[str]]:
    """The page's choices from the address, and what is wrong with them (in words)."""
    problems: list[str] = []
    this_year = datetime.now(UTC).year
    args = request.args
    raw_year = args.get("year", "").strip()
    year = this_year
    if raw_year:
        if (
            raw_year.isascii()
            and raw_year.isdigit()
            and FIRST_YEAR <= int(raw_year) <= this_year + 1
        ):
            year = int(raw_year)
        else:
            problems.append(
                _("Type a year from %(first)s to %(last)s.", first=FIRST_YEAR, last=this_year + 1)
            )
    months = []
    for name, default in (("from_month", 1), ("to_month", 12)):
        raw = args.get(name, "").strip()
        months.append(
            int(raw) if raw.isascii() and raw.isdigit() and 1 <= int(raw) <= 12 else default
        )
    first, last = months
    if first > last:
        problems.append(_("The first month must not come after the last; the whole year is shown."))
        first, last = 1, 12
    office = args.get("office", "").strip()
    if len(office) > 32 or not office.replace("-", "").replace("_", "").isalnum():
        office = ""
    return (
        StatisticsQuery(
            office=office, year=year, from_month=first, to_month=last, download=download
        ),
        problems,
    )


def _refused(error: ApiError) -> str:
    if isinstance(error, Unreachable) or error.status in (401, 404):
        raise error
    return said(error.message)


@blueprint.get("/statistics")
@vault.signed_in
def statistics_page() -> Any:
    """A period's statistics for one of the officer's offices (administrators: any, or all)."""
    entry = vault.current()
    assert entry is not None  # noqa: S101 - the decorator sent everyone else to sign in
    query, problems = _query()
    answer = None
    try:
        answer = entry.client.statistics(query)
    except ApiError as error:
        problems.append(_refused(error))
    names = {o.code: o.name for o in entry.me.offices}
    status = 400 if problems else 200
    return render_template(
        "statistics.html",
        answer=answer,
        query=query,
        problems=problems,
        sections=sections(answer, _labels(), names) if answer else [],
        few_reports=answer is not None and mostly_hidden(answer),
        months=list(enumerate(_month_names(), start=1)),
        years=list(range(datetime.now(UTC).year + 1, FIRST_YEAR - 1, -1)),
        office_choices=_office_choices(answer, names, entry.me.is_admin),
        office_label=_office_label(answer, names) if answer else "",
        period_label=_period_words(answer, _month_names()) if answer else "",
    ), status


def _office_choices(
    answer: Statistics | None, names: dict[str, str], admin: bool
) -> list[tuple[str, str]]:
    if answer is None:
        return []
    choices = [(code, names.get(code, code)) for code in answer.offices]
    if admin:
        choices.append((ALL, _("All offices")))
    return choices


def _office_label(answer: Statistics, names: dict[str, str]) -> str:
    return _("All offices") if answer.office == ALL else names.get(answer.office, answer.office)


def csv_text(answer: Statistics, shown: list[Section], office: str, period: str) -> str:
    """The page's tables as CSV: the same titles, rows and texts the page shows."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")

    def row(cells: list[str]) -> None:
        writer.writerow([f"'{c}" if c.startswith(_FORMULA_START) else c for c in cells])

    row([_("Statistics"), office, period])
    row([_("Counted at (UTC)"), answer.counted_at.strftime("%Y-%m-%d %H:%M")])
    row([_("Counts below %(n)s are shown as fewer than %(n)s.", n=answer.threshold)])
    for section in shown:
        row([])
        row([section.title, *section.columns])
        for line in section.lines:
            row([line.label, *line.texts])
    return out.getvalue()


@blueprint.get("/statistics.csv")
@vault.signed_in
def statistics_csv() -> Any:
    """The page's figures as a CSV file (the case server records the download)."""
    entry = vault.current()
    assert entry is not None  # noqa: S101 - the decorator sent everyone else to sign in
    query, problems = _query(download=True)
    if problems:
        return statistics_page()
    try:
        answer = entry.client.statistics(query)
    except ApiError as error:
        _refused(error)
        return statistics_page()
    names = {o.code: o.name for o in entry.me.offices}
    office = _office_label(answer, names)
    period = _period_words(answer, _month_names())
    body = csv_text(answer, sections(answer, _labels(), names), office, period)
    months = f"{answer.from_month:02d}-{answer.to_month:02d}"
    name = f"statistics-{answer.office}-{answer.year}-{months}.csv"
    sent = Response(body, mimetype="text/csv")
    sent.headers["Content-Disposition"] = f'attachment; filename="{name}"'
    return sent
