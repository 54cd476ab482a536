"""Statistics under /api/v2: a period's figures for an office, from metadata only.

An officer may see the statistics of the offices they belong to;
administrators those of every office and of all of them together (`all`).
Figures are computed and small counts hidden by dropbox/statistics.py, here
on the server, so that a hidden count never leaves it. Each answer is
recorded in the audit log: `statistics.view`, or `statistics.download`
when the reviewer app asks for a download.

Computing a year of 100,000 reports takes about 100 ms on SQLite
(bench/stats.py), more on a busy server or on PostgreSQL, so each worker
keeps the figures of a period for `FRESH_SECONDS` (`Recent`): opening the
page again, changing the office, downloading the CSV or printing within
that time reuses them.
The answer says when its figures were counted.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from datetime import UTC, date, datetime
from typing import Any

from flask import Blueprint, Flask, request
from sqlalchemy.orm import Session

from case_server import tokens, wire
from case_server.errors import ApiError
from dropbox import access, statistics
from dropbox import api_schema as schema
from dropbox.api_schema import dump
from dropbox.config import Config
from dropbox.models import Officer

PREFIX = "/api/v2"
# How long a worker reuses the figures of a period, and for how many periods at most.
FRESH_SECONDS = 60
KEPT_PERIODS = 16


class Recent:
    """The figures of the periods asked for lately, each with when it was counted."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._kept: OrderedDict[tuple[Any, ...], tuple[float, datetime, statistics.Figures]] = (
            OrderedDict()
        )

    def forget(self) -> None:
        """Count every period anew at its next request."""
        with self._lock:
            self._kept.clear()

    def figures(
        self, db: Session, config: Config, period: statistics.Period, today: date
    ) -> tuple[datetime, statistics.Figures]:
        """The period's figures, counted now or less than FRESH_SECONDS ago."""
        key = (period, today, config.statistics.suppress_below)
        now = time.monotonic()
        with self._lock:
            found = self._kept.get(key)
            if found is not None and now - found[0] < FRESH_SECONDS:
                return found[1], found[2]
        counted_at = datetime.now(UTC).replace(microsecond=0)
        figures = statistics.compute_configured(db, config, period, today)
        with self._lock:
            self._kept[key] = (now, counted_at, figures)
            self._kept.move_to_end(key)
            while len(self._kept) > KEPT_PERIODS:
                self._kept.popitem(last=False)
        return counted_at, figures


def allowed_offices(db: Session, config: Config, officer: Officer) -> list[str]:
    """The views the officer may see: their offices; for administrators every one, and all."""
    if officer.is_admin:
        return [*(o.code for o in config.offices), statistics.ALL]
    held = set(access.office_codes(db, officer))
    return [o.code for o in config.offices if o.code in held]


def _number(name: str, default: int, low: int, high: int) -> int:
    raw = request.args.get(name, "")
    if raw == "":
        return default
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 4) or not low <= int(raw) <= high:
        raise ApiError(400, f"'{name}' must be a whole number from {low} to {high}")
    return int(raw)


def _period(today_year: int) -> statistics.Period:
    """The period the query names; 400 for months or a year that make none."""
    year = _number("year", 0, 0, today_year + 1) or today_year
    if year < statistics.FIRST_YEAR:
        raise ApiError(400, f"'year' must be from {statistics.FIRST_YEAR} to {today_year + 1}")
    first = _number("from_month", 1, 1, 12)
    last = _number("to_month", 12, 1, 12)
    if first > last:
        raise ApiError(400, "'from_month' must not come after 'to_month'")
    return statistics.Period(year, first, last)


def _table(table: statistics.Table) -> schema.StatisticsTable:
    return schema.StatisticsTable(
        key=table.key,
        columns=list(table.columns),
        rows=[
            schema.StatisticsRow(
                key=row.key,
                cells=[
                    schema.StatisticsCell(value=cell.value, shown=cell.shown.value)  # type: ignore[arg-type]
                    for cell in row.cells
                ],
            )
            for row in table.rows
        ],
    )


def register_statistics(app: Flask, config: Config) -> None:
    """Attach the statistics route under /api/v2."""
    bp = Blueprint("statistics", __name__, url_prefix=PREFIX)
    recent = Recent()
    app.extensions["dropbox.statistics"] = recent

    @bp.get("/statistics")
    def statistics_for() -> dict[str, Any]:
        """A period's statistics for one of the caller's offices, or all (administrators)."""
        today = datetime.now(UTC).date()
        period = _period(today.year)
        download = wire.flag("download")
        asked = request.args.get("office", "")
        instance = tokens.instance()
        with instance.readers() as db:
            officer = tokens.current_officer(db)
            allowed = allowed_offices(db, config, officer)
            office = asked or (allowed[0] if allowed else "")
            if office not in allowed:
                raise ApiError(403, "you may see the statistics of your own offices only")
            counted_at, figures = recent.figures(db, config, period, today)
            shown = statistics.view(figures, office)
            actor = officer.username
        with instance.sessions.begin() as db:
            # Recorded before the figures leave: an answer the log does not show is never sent.
            tokens.current_officer(db)
            statistics.record(db, actor, shown, download=download)
        return dump(
            schema.Statistics(
                office=office,
                year=period.year,
                from_month=period.first_month,
                to_month=period.last_month,
                today=today,
                counted_at=counted_at,
                threshold=shown.threshold,
                offices=[code for code in allowed if code != statistics.ALL],
                tables=[_table(t) for t in shown.tables],
            )
        )

    app.register_blueprint(bp)
