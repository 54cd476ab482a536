"""Statistics: whether each deadline was met, stored, and indexes that need no sorting.

`reports.acknowledged_in_time` and `feedback_in_time` say whether a report
was acknowledged by its `acknowledge_due` and closed (its feedback given) by
its `feedback_due` (filled in here from the stored times for the reports
that were already), so that statistics count deadlines met by a column.
`ix_reports_received_statistics` holds them instead of the two times;
`ix_reports_statistics_classes`, `ix_reports_acknowledge_days` and
`ix_reports_close_days` let SQLite count a period's reports as ranges of
indexes instead of sorting them (dropbox/statistics.py).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-21 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_RECEIVED_BEFORE = [
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
]
_RECEIVED = [
    "received_at",
    "office_code",
    "category",
    "status",
    "outcome",
    "acknowledged_in_time",
    "feedback_in_time",
    "acknowledge_due",
    "feedback_due",
    "acknowledge_days",
    "close_days",
]
_CLASSES = [
    "office_code",
    "status",
    "category",
    "outcome",
    "acknowledged_in_time",
    "feedback_in_time",
    "received_at",
    "acknowledge_due",
    "feedback_due",
]


def _day(column: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
    """The day of a stored time, comparable with a stored date (SQLite keeps both as text)."""
    if op.get_bind().dialect.name == "sqlite":
        return sa.func.substr(column, 1, 10)
    return sa.cast(column, sa.Date)


def _mark_deadlines_met() -> None:
    """Each report acknowledged or closed already: whether that was by its due date."""
    reports = sa.table(
        "reports",
        sa.column("status", sa.String),
        sa.column("acknowledged_at", sa.DateTime),
        sa.column("acknowledge_due", sa.Date),
        sa.column("closed_at", sa.DateTime),
        sa.column("feedback_due", sa.Date),
        sa.column("acknowledged_in_time", sa.Boolean),
        sa.column("feedback_in_time", sa.Boolean),
    )
    bind = op.get_bind()
    bind.execute(
        reports.update()
        .where(reports.c.acknowledged_at.is_not(None))
        .values(acknowledged_in_time=_day(reports.c.acknowledged_at) <= reports.c.acknowledge_due)
    )
    # As 0007 counted the days to close: only a report closed now, with its closing time.
    bind.execute(
        reports.update()
        .where(reports.c.status == "closed", reports.c.closed_at.is_not(None))
        .values(feedback_in_time=_day(reports.c.closed_at) <= reports.c.feedback_due)
    )


def upgrade() -> None:
    op.add_column("reports", sa.Column("acknowledged_in_time", sa.Boolean(), nullable=True))
    op.add_column("reports", sa.Column("feedback_in_time", sa.Boolean(), nullable=True))
    _mark_deadlines_met()
    op.drop_index("ix_reports_received_statistics", table_name="reports")
    op.create_index("ix_reports_received_statistics", "reports", _RECEIVED)
    op.create_index("ix_reports_statistics_classes", "reports", _CLASSES)
    op.create_index(
        "ix_reports_acknowledge_days", "reports", ["office_code", "acknowledge_days", "received_at"]
    )
    op.create_index(
        "ix_reports_close_days", "reports", ["office_code", "close_days", "received_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_reports_close_days", table_name="reports")
    op.drop_index("ix_reports_acknowledge_days", table_name="reports")
    op.drop_index("ix_reports_statistics_classes", table_name="reports")
    op.drop_index("ix_reports_received_statistics", table_name="reports")
    op.create_index("ix_reports_received_statistics", "reports", _RECEIVED_BEFORE)
    with op.batch_alter_table("reports") as batch:
        batch.drop_column("feedback_in_time")
        batch.drop_column("acknowledged_in_time")
