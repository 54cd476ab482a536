"""Notification e-mails: officers' preferences, the queue of mails, the reminders already sent.

The queue holds only counts and dates, never a report's id or content; the
reminders hold the report ids whose deadlines an officer was told about, so
that no reminder goes twice.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07 07:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "notification_preferences",
        sa.Column("officer_id", sa.Integer(), nullable=False),
        sa.Column("email", sa.String(length=254), nullable=False),
        sa.Column("mode", sa.String(length=16), nullable=False),
        sa.Column("openpgp_key", sa.Text(), nullable=True),
        sa.Column("openpgp_fingerprint", sa.String(length=64), nullable=True),
        sa.Column("last_daily_on", sa.Date(), nullable=True),
        sa.ForeignKeyConstraint(["officer_id"], ["officers.id"]),
        sa.PrimaryKeyConstraint("officer_id"),
    )
    op.create_table(
        "notifications",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("officer_id", sa.Integer(), nullable=False),
        sa.Column("new_reports", sa.Integer(), nullable=False),
        sa.Column("new_answers", sa.Integer(), nullable=False),
        sa.Column("acknowledge_soon", sa.Integer(), nullable=False),
        sa.Column("feedback_soon", sa.Integer(), nullable=False),
        sa.Column("overdue", sa.Integer(), nullable=False),
        sa.Column("created_on", sa.Date(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(), nullable=True),
        sa.Column("last_error", sa.String(length=300), nullable=False),
        sa.Column("gave_up_on", sa.Date(), nullable=True),
        sa.ForeignKeyConstraint(["officer_id"], ["officers.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_notifications_officer_id", "notifications", ["officer_id"])
    op.create_table(
        "reminders_sent",
        sa.Column("officer_id", sa.Integer(), nullable=False),
        sa.Column("report_id", sa.String(length=32), nullable=False),
        sa.Column("stage", sa.String(length=24), nullable=False),
        sa.ForeignKeyConstraint(["officer_id"], ["officers.id"]),
        sa.PrimaryKeyConstraint("officer_id", "report_id", "stage"),
    )
    op.create_index("ix_reminders_sent_report_id", "reminders_sent", ["report_id"])


def downgrade() -> None:
    op.drop_index("ix_reminders_sent_report_id", table_name="reminders_sent")
    op.drop_table("reminders_sent")
    op.drop_index("ix_notifications_officer_id", table_name="notifications")
    op.drop_table("notifications")
    op.drop_table("notification_preferences")
