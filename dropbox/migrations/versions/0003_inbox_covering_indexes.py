"""The inbox's sort indexes hold the id and the filtered columns: deep pages read no table row.

The inbox (dropbox/inbox.py) reaches a deep page by walking an office's
reports in the index of the sort column and skipping the pages before it.
With only (office_code, sort column) in the index, each row skipped was also
looked up in the table, for its id (the tie-break of the order) and for the
columns the filters test: at 100,000 reports a page in the middle took some
100 ms. Each sort index now holds (office_code, sort column, id, and the
filtered columns), and the default sort's index by status holds the id, so
those walks read the index alone.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07 01:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# As in dropbox/models.py at this revision (a migration does not import the models).
FILTERS = (
    "status",
    "category",
    "urgent",
    "assignee_id",
    "acknowledged_at",
    "acknowledge_due",
    "feedback_due",
)
SORTS = {
    "ix_reports_office_activity": "last_activity_at",
    "ix_reports_office_received": "received_at",
    "ix_reports_office_acknowledge_due": "acknowledge_due",
    "ix_reports_office_feedback_due": "feedback_due",
}
STATUS = "ix_reports_office_status_received"


def upgrade() -> None:
    for name, column in SORTS.items():
        op.drop_index(name, table_name="reports")
        held = [c for c in FILTERS if c != column]
        op.create_index(name, "reports", ["office_code", column, "id", *held], unique=False)
    op.drop_index(STATUS, table_name="reports")
    op.create_index(STATUS, "reports", ["office_code", "status", "received_at", "id"], unique=False)


def downgrade() -> None:
    for name, column in SORTS.items():
        op.drop_index(name, table_name="reports")
        op.create_index(name, "reports", ["office_code", column], unique=False)
    op.drop_index(STATUS, table_name="reports")
    op.create_index(STATUS, "reports", ["office_code", "status", "received_at"], unique=False)
