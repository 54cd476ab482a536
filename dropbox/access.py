"""The one place that decides which officer may see which report, and with which office key.

An officer sees a report when they hold a grant for the office handling it,
or for an office that kept a copy after referring it. Anyone else is told the
report does not exist, so that ids cannot be probed.
"""

from __future__ import annotations

from sqlalchemy import or_, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from dropbox import offices
from dropbox.errors import NotFound
from dropbox.items import is_id
from dropbox.models import Officer, Report, ReportShare


def office_codes(session: Session, officer: Officer) -> list[str]:
    """The offices whose reports the officer may see."""
    return offices.granted_codes(session, officer) if officer.active else []


def visible_condition(codes: list[str]) -> ColumnElement[bool]:
    """A WHERE clause: reports handled by, or shared with, one of these offices."""
    shared = select(ReportShare.report_id).where(ReportShare.office_code.in_(codes))
    return or_(Report.office_code.in_(codes), Report.id.in_(shared))


def report_for(session: Session, officer: Officer, report_id: str) -> Report:
    """The report, if the officer may see it; NotFound otherwise (whether or not it exists)."""
    if not is_id(report_id):
        raise NotFound("there is no such report")
    codes = office_codes(session, officer)
    report = session.execute(
        select(Report).where(Report.id == report_id, visible_condition(codes))
    ).scalar_one_or_none()
    if report is None:
        raise NotFound("there is no such report")
    return report


def reading_office(session: Session, officer: Officer, report: Report) -> str:
    """Which of the officer's offices opens the report: the handling one if they hold it."""
    codes = office_codes(session, officer)
    if report.office_code in codes:
        return report.office_code
    for code in codes:
        if session.get(ReportShare, (report.id, code)) is not None:
            return code
    raise NotFound("there is no such report")


def handles(session: Session, officer: Officer, report: Report) -> bool:
    """True if the officer belongs to the office handling the report (not just a copy)."""
    return report.office_code in office_codes(session, officer)
