"""Statistics: referrals name their offices, and indexes for counting a period.

`status_changes.from_office` and `to_office` name the offices of a
referral (filled in here for earlier referrals from their `report.refer`
audit events, which name them); `ix_reports_received_statistics` holds
every column dropbox/statistics.py groups a period's reports by, so that
it reads no table row; `ix_status_changes_referrals` and
`ix_audit_events_action_report` let it count referrals and exports.
`reports.acknowledge_days` and `close_days` hold the whole days a report
took to be acknowledged and closed (counted here from the stored times for
the reports that were already), so that the percentiles of days are counts
by small integers.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-20 10:00:00
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# How cases.refer writes a referral's audit detail: "OIO -> ECO", maybe followed by a note.
_REFERRAL = re.compile(r"^(\S+) -> (\S+)")


def _name_earlier_referrals() -> None:
    """Each earlier referral row gets the offices its audit event names, in order per report."""
    bind = op.get_bind()
    events = sa.table(
        "audit_events",
        sa.column("id", sa.Integer),
        sa.column("action", sa.String),
        sa.column("report_id", sa.String),
        sa.column("detail", sa.Text),
    )
    changes = sa.table(
        "status_changes",
        sa.column("id", sa.Integer),
        sa.column("report_id", sa.String),
        sa.column("to_status", sa.String),
        sa.column("from_office", sa.String),
        sa.column("to_office", sa.String),
    )
    named: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for report_id, detail in bind.execute(
        sa.select(events.c.report_id, events.c.detail)
        .where(events.c.action == "report.refer")
        .order_by(events.c.id)
    ):
        found = _REFERRAL.match(detail or "")
        if report_id and found:
            named[report_id].append((found.group(1), found.group(2)))
    rows: dict[str, list[int]] = defaultdict(list)
    for change_id, report_id in bind.execute(
        sa.select(changes.c.id, changes.c.report_id)
        .where(changes.c.to_status == "referred")
        .order_by(changes.c.id)
    ):
        rows[report_id].append(change_id)
    for report_id, ids in rows.items():
        for change_id, (from_office, to_office) in zip(ids, named.get(report_id, []), strict=False):
            bind.execute(
                changes.update()
                .where(changes.c.id == change_id)
                .values(from_office=from_office, to_office=to_office)
            )


def _days(later: sa.ColumnElement[Any], earlier: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
    """Whole days from one stored time's day to another's (SQLite keeps times as text)."""
    if op.get_bind().dialect.name == "sqlite":
        return sa.cast(
            sa.func.julianday(sa.func.substr(later, 1, 10))
            - sa.func.julianday(sa.func.substr(earlier, 1, 10)),
            sa.Integer,
        )
    return sa.cast(later, sa.Date) - sa.cast(earlier, sa.Date)


def _count_days_taken() -> None:
    """Each report acknowledged or closed already gets the days it took, from its times."""
    reports = sa.table(
        "reports",
        sa.column("status", sa.String),
        sa.column("received_at", sa.DateTime),
        sa.column("acknowledged_at", sa.DateTime),
        sa.column("closed_at", sa.DateTime),
        sa.column("acknowledge_days", sa.Integer),
        sa.column("close_days", sa.Integer),
    )
    bind = op.get_bind()
    bind.execute(
        reports.update()
        .where(reports.c.acknowledged_at.is_not(None))
        .values(acknowledge_days=_days(reports.c.acknowledged_at, reports.c.received_at))
    )
    bind.execute(
        reports.update()
        .where(reports.c.status == "closed", reports.c.closed_at.is_not(None))
        .values(close_days=_days(reports.c.closed_at, reports.c.received_at))
    )


def upgrade() -> None:
    op.add_column("status_changes", sa.Column("from_office", sa.String(length=32), nullable=True))
    op.add_column("status_changes", sa.Column("to_office", sa.String(length=32), nullable=True))
    op.add_column("reports", sa.Column("acknowledge_days", sa.Integer(), nullable=True))
    op.add_column("reports", sa.Column("close_days", sa.Integer(), nullable=True))
    _count_days_taken()
    op.create_index(
        "ix_status_changes_referrals",
        "status_changes",
        ["to_status", "report_id", "from_office", "to_office"],
    )
    op.create_index(
        "ix_reports_received_statistics",
        "reports",
        [
            "received_at",
            "office_code",
            "category",
            "status",
            "outcome",
            "acknowledged_at",
            "acknowledge_due",
            "closed_at",
            "feedback_due",
            "acknowledge_days",
            "close_days",
        ],
    )
    op.create_index("ix_audit_events_action_report", "audit_events", ["action", "report_id"])
    _name_earlier_referrals()


def downgrade() -> None:
    op.drop_index("ix_audit_events_action_report", table_name="audit_events")
    op.drop_index("ix_reports_received_statistics", table_name="reports")
    op.drop_index("ix_status_changes_referrals", table_name="status_changes")
    with op.batch_alter_table("status_changes") as batch:
        batch.drop_column("to_office")
        batch.drop_column("from_office")
    with op.batch_alter_table("reports") as batch:
        batch.drop_column("close_days")
        batch.drop_column("acknowledge_days")
