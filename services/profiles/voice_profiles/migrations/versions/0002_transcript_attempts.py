"""transcript attempts of the automatic transcription

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import voice_common.db

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("samples", schema=None) as batch_op:
        # server_default: existing rows start with no attempt made (samples still needing a text get filled).
        batch_op.add_column(
            sa.Column("transcript_attempts", sa.Integer(), server_default="0", nullable=False)
        )
        batch_op.add_column(
            sa.Column("transcript_next_attempt_at", voice_common.db.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.create_index(
            "ix_samples_transcript_due", ["transcript_state", "transcript_next_attempt_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("samples", schema=None) as batch_op:
        batch_op.drop_index("ix_samples_transcript_due")
        batch_op.drop_column("transcript_next_attempt_at")
        batch_op.drop_column("transcript_attempts")
