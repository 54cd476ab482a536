"""Offline review bundles: which items an export carried, and each bundle written or imported.

`items.exported_in` names the export bundle that first carried an item, so
that the next export carries only what is new; `bundle_transfers` holds one
row per bundle exported or imported (ids and counts, never content).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-08 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("items", sa.Column("exported_in", sa.String(length=32), nullable=True))
    op.create_table(
        "bundle_transfers",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("bundle_id", sa.String(length=32), nullable=False),
        sa.Column("direction", sa.String(length=8), nullable=False),
        sa.Column("office_code", sa.String(length=32), nullable=False),
        sa.Column("answers", sa.String(length=32), nullable=True),
        sa.Column("reports", sa.Integer(), nullable=False),
        sa.Column("items", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["office_code"], ["offices.code"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_bundle_transfers_bundle_id", "bundle_transfers", ["bundle_id"])


def downgrade() -> None:
    op.drop_index("ix_bundle_transfers_bundle_id", table_name="bundle_transfers")
    op.drop_table("bundle_transfers")
    op.drop_column("items", "exported_in")
