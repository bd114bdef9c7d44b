"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-25 20:12:19.089098
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import voice_common.db

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "generations",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("tenant_id", sa.String(length=63), nullable=False),
        sa.Column("profile_id", sa.String(length=36), nullable=True),
        sa.Column("profile_name", sa.String(length=100), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("language", sa.String(length=8), nullable=False),
        sa.Column("seed", sa.BigInteger(), nullable=False),
        sa.Column("parameters", sa.JSON(), nullable=False),
        sa.Column("model_id", sa.String(length=255), nullable=False),
        sa.Column("duration_seconds", sa.Float(), nullable=False),
        sa.Column("sample_rate", sa.Integer(), nullable=False),
        sa.Column("audio_key", sa.String(length=512), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("created_at", voice_common.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", voice_common.db.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("generations", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_generations_expires_at"), ["expires_at"], unique=False)
        batch_op.create_index(
            "ix_generations_tenant_created", ["tenant_id", "created_at", "id"], unique=False
        )
        batch_op.create_index("ix_generations_tenant_profile", ["tenant_id", "profile_id"], unique=False)

    op.create_table(
        "pending_object_deletions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("object_key", sa.String(length=512), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", voice_common.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("next_attempt_at", voice_common.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("pending_object_deletions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_pending_object_deletions_next_attempt_at"), ["next_attempt_at"], unique=False
        )

    op.create_table(
        "profiles",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("tenant_id", sa.String(length=63), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("name_key", sa.String(length=100), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("language", sa.String(length=8), nullable=False),
        sa.Column("created_at", voice_common.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", voice_common.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", voice_common.db.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("tenant_id", "name_key", name="uq_profiles_tenant_name"),
    )
    with op.batch_alter_table("profiles", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_profiles_expires_at"), ["expires_at"], unique=False)
        batch_op.create_index("ix_profiles_tenant_created", ["tenant_id", "created_at", "id"], unique=False)

    op.create_table(
        "samples",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("tenant_id", sa.String(length=63), nullable=False),
        sa.Column("profile_id", sa.String(length=36), nullable=False),
        sa.Column("reference_text", sa.Text(), nullable=True),
        sa.Column("transcript_state", sa.String(length=16), nullable=False),
        sa.Column("file_name", sa.String(length=255), nullable=False),
        sa.Column("mime_type", sa.String(length=127), nullable=False),
        sa.Column("original_size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("original_key", sa.String(length=512), nullable=False),
        sa.Column("audio_key", sa.String(length=512), nullable=False),
        sa.Column("audio_sha256", sa.String(length=64), nullable=False),
        sa.Column("duration_seconds", sa.Float(), nullable=False),
        sa.Column("sample_rate", sa.Integer(), nullable=False),
        sa.Column("peak_dbfs", sa.Float(), nullable=False),
        sa.Column("rms_dbfs", sa.Float(), nullable=False),
        sa.Column("warnings", sa.JSON(), nullable=False),
        sa.Column("created_at", voice_common.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", voice_common.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["profile_id"],
            ["profiles.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("samples", schema=None) as batch_op:
        batch_op.create_index(
            "ix_samples_profile_created", ["tenant_id", "profile_id", "created_at", "id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("samples", schema=None) as batch_op:
        batch_op.drop_index("ix_samples_profile_created")

    op.drop_table("samples")
    with op.batch_alter_table("profiles", schema=None) as batch_op:
        batch_op.drop_index("ix_profiles_tenant_created")
        batch_op.drop_index(batch_op.f("ix_profiles_expires_at"))

    op.drop_table("profiles")
    with op.batch_alter_table("pending_object_deletions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_pending_object_deletions_next_attempt_at"))

    op.drop_table("pending_object_deletions")
    with op.batch_alter_table("generations", schema=None) as batch_op:
        batch_op.drop_index("ix_generations_tenant_profile")
        batch_op.drop_index("ix_generations_tenant_created")
        batch_op.drop_index(batch_op.f("ix_generations_expires_at"))

    op.drop_table("generations")
