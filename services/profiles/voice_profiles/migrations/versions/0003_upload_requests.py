"""request ids of uploads (AddSample, CreateGeneration, ImportProfile retries return the first result)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30 14:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import voice_common.db

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "upload_requests",
        sa.Column("tenant_id", sa.String(length=63), nullable=False),
        sa.Column("operation", sa.String(length=32), nullable=False),
        sa.Column("request_id", sa.String(length=128), nullable=False),
        sa.Column("resource_id", sa.String(length=36), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("created_at", voice_common.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "operation", "request_id"),
    )
    with op.batch_alter_table("upload_requests", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_upload_requests_created_at"), ["created_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("upload_requests", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_upload_requests_created_at"))
    op.drop_table("upload_requests")
