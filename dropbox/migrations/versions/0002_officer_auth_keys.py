"""Officers sign in with an auth key derived on their own machine: officers made before re-enrol.

The case server no longer hashes passphrases or unwraps keys. An officer's
row keeps a verifier of the auth key their reviewer app derives
(`auth_verifier`) instead of an Argon2id passphrase hash, and their TOTP
secret is encrypted under an instance secret instead of sealed to their key.
Credentials made before cannot be converted (the server never had the
passphrase to derive from), so every officer keeps their row, name, role and
audit history but loses their key pair, wrapped key, TOTP secret, office
grants and sessions: an administrator invites them again (a new enrolment
code), they enrol in the reviewer app and are granted their offices anew.
The unused failed-sign-in columns go (sign-ins are counted in the limiter's
storage).

On SQLite the columns are dropped with ALTER TABLE ... DROP COLUMN (SQLite
3.35 or newer), not by copying the table: the copy would have to drop a
table other tables' foreign keys point at.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("officers", sa.Column("auth_verifier", sa.LargeBinary(), nullable=True))
    # Key material first (sealed grants, then the officers' own), then the sessions
    # holding secret keys of the old reviewer interface.
    op.execute(sa.text("DELETE FROM office_grants"))
    op.execute(sa.text("DELETE FROM officer_sessions"))
    op.execute(
        sa.text(
            "UPDATE officers SET public_key = NULL, wrapped_secret_key = NULL,"
            " totp_secret_sealed = NULL, totp_last_counter = 0,"
            " enrolment_code_hash = NULL, enrolment_expires_at = NULL"
        )
    )
    op.drop_column("officers", "password_hash")
    op.drop_column("officers", "failed_logins")
    op.drop_column("officers", "failed_window_start")


def downgrade() -> None:
    # The officers stay un-enrolled: credentials made under 0002 have no passphrase hash.
    op.add_column("officers", sa.Column("failed_window_start", sa.DateTime(), nullable=True))
    op.add_column(
        "officers",
        sa.Column("failed_logins", sa.Integer(), nullable=False, server_default="0"),
    )
    op.add_column("officers", sa.Column("password_hash", sa.String(length=255), nullable=True))
    op.execute(sa.text("DELETE FROM office_grants"))
    op.execute(sa.text("DELETE FROM officer_sessions"))
    op.execute(
        sa.text(
            "UPDATE officers SET public_key = NULL, wrapped_secret_key = NULL,"
            " totp_secret_sealed = NULL, totp_last_counter = 0,"
            " enrolment_code_hash = NULL, enrolment_expires_at = NULL"
        )
    )
    op.drop_column("officers", "auth_verifier")
