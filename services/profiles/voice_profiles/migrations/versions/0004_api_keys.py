"""API keys: what the gateway checks a client's key against (only the key's SHA-256 is stored)

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 17:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import voice_common.db

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("key_sha256", sa.String(length=64), nullable=False),
        sa.Column("tenant_id", sa.String(length=63), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("scopes", sa.String(length=255), nullable=False),
        sa.Column("requests_per_second", sa.Float(), nullable=False),
        sa.Column("burst", sa.Integer(), nullable=False),
        sa.Column("max_concurrent_streams", sa.Integer(), nullable=False),
        sa.Column("created_at", voice_common.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", voice_common.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", voice_common.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("expires_at", voice_common.db.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("key_sha256", name="uq_api_keys_key_sha256"),
        sa.UniqueConstraint("prefix", name="uq_api_keys_prefix"),
    )
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.create_index("ix_api_keys_tenant_created", ["tenant_id", "created_at", "id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_index("ix_api_keys_tenant_created")
    op.drop_table("api_keys")
