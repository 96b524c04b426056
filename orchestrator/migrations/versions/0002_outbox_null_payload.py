"""outbox payload may be NULL (the DLQ record of a tombstone keeps its NULL value)

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.alter_column("event_outbox", "payload", existing_type=sa.LargeBinary(), nullable=True)


def downgrade() -> None:
    # A NULL payload (a tombstone's DLQ record) becomes empty bytes, as before this revision.
    op.execute("UPDATE event_outbox SET payload = ''::bytea WHERE payload IS NULL")
    op.alter_column("event_outbox", "payload", existing_type=sa.LargeBinary(), nullable=False)
