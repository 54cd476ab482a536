"""Items remember whether the source's thread page has shown them (office replies marked new once).

A boolean, never a time (the project keeps no times it does not need). Rows
that exist already get false: a reply the source has not opened since this
revision shows as new once, which is right for a reply not yet read and
harmless for one that was.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07 04:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "items",
        sa.Column("seen_by_source", sa.Boolean(), server_default=sa.false(), nullable=False),
    )


def downgrade() -> None:
    op.drop_column("items", "seen_by_source")
