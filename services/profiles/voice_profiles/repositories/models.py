"""SQLAlchemy models of the profile service. Every tenant-owned row carries ``tenant_id``."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from voice_common.db import UTCDateTime


class Base(DeclarativeBase):
    pass


class ProfileRow(Base):
    __tablename__ = "profiles"
    __table_args__ = (
        # Names are unique per tenant regardless of case: "Alice" and "alice" would confuse people.
        UniqueConstraint("tenant_id", "name_key", name="uq_profiles_tenant_name"),
        Index("ix_profiles_tenant_created", "tenant_id", "created_at", "id"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(63), nullable=False)
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    name_key: Mapped[str] = mapped_column(String(100), nullable=False)
    description: Mapped[str] = mapped_column(Text, nullable=False, default="")
    language: Mapped[str] = mapped_column(String(8), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, index=True)


class SampleRow(Base):
    __tablename__ = "samples"
    __table_args__ = (
        Index("ix_samples_profile_created", "tenant_id", "profile_id", "created_at", "id"),
        # The transcript filler's query: the few samples still needing a transcript, among many that have one.
        Index("ix_samples_transcript_due", "transcript_state", "transcript_next_attempt_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(63), nullable=False)
    profile_id: Mapped[str] = mapped_column(String(36), ForeignKey("profiles.id"), nullable=False)
    reference_text: Mapped[str | None] = mapped_column(Text, nullable=True)
    transcript_state: Mapped[str] = mapped_column(String(16), nullable=False)
    # Bookkeeping of automatic transcription (see domain.transcripts): attempts made, and when the next may run
    # (NULL: now). Not part of the Sample entity: no client sees it.
    transcript_attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    transcript_next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    file_name: Mapped[str] = mapped_column(String(255), nullable=False, default="")
    mime_type: Mapped[str] = mapped_column(String(127), nullable=False, default="")
    original_size_bytes: Mapped[int] = mapped_column(BigInteger, nullable=False)
    original_key: Mapped[str] = mapped_column(String(512), nullable=False)
    audio_key: Mapped[str] = mapped_column(String(512), nullable=False)
    audio_sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    duration_seconds: Mapped[float] = mapped_column(Float, nullable=False)
    sample_rate: Mapped[int] = mapped_column(Integer, nullable=False)
    peak_dbfs: Mapped[float] = mapped_column(Float, nullable=False)
    rms_dbfs: Mapped[float] = mapped_column(Float, nullable=False)
    warnings: Mapped[list[dict[str, Any]]] = mapped_column(JSON, nullable=False, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)


class GenerationRow(Base):
    __tablename__ = "generations"
    __table_args__ = (
        Index("ix_generations_tenant_created", "tenant_id", "created_at", "id"),
        Index("ix_generations_tenant_profile", "tenant_id", "profile_id"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(63), nullable=False)
    # No foreign key: the history outlives a deleted profile and keeps its id and name.
    profile_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    profile_name: Mapped[str] = mapped_column(String(100), nullable=False, default="")
    text: Mapped[str] = mapped_column(Text, nullable=False)
    language: Mapped[str] = mapped_column(String(8), nullable=False)
    seed: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    parameters: Mapped[dict[str, float]] = mapped_column(JSON, nullable=False, default=dict)
    model_id: Mapped[str] = mapped_column(String(255), nullable=False, default="")
    duration_seconds: Mapped[float] = mapped_column(Float, nullable=False)
    sample_rate: Mapped[int] = mapped_column(Integer, nullable=False)
    audio_key: Mapped[str] = mapped_column(String(512), nullable=False)
    size_bytes: Mapped[int] = mapped_column(BigInteger, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, index=True)


class PendingObjectDeletionRow(Base):
    """Outbox of object deletions: written in the same transaction that deletes the rows owning the objects,
    so a failed delete in the store is retried by the sweeper instead of leaving an orphan."""

    __tablename__ = "pending_object_deletions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    object_key: Mapped[str] = mapped_column(String(512), nullable=False)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, index=True)


class UploadRequestRow(Base):
    """What an upload with a client-chosen request id created (domain.idempotency): a retry with the same id gets
    that resource back instead of a second copy. Written in the transaction that creates the resource; the
    sweeper forgets rows past the retention (PROFILES_REQUEST_ID_RETENTION_SECONDS)."""

    __tablename__ = "upload_requests"

    # The key is the uniqueness rule: one resource per (tenant, operation, request id), so of two concurrent
    # uploads with one id exactly one commits.
    tenant_id: Mapped[str] = mapped_column(String(63), primary_key=True)
    operation: Mapped[str] = mapped_column(String(32), primary_key=True)
    request_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    resource_id: Mapped[str] = mapped_column(String(36), nullable=False)
    # sha256 of the request's metadata and bytes: the same id with other content is refused, not answered.
    fingerprint: Mapped[str] = mapped_column(String(64), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, index=True)


class ApiKeyRow(Base):
    """An API key (domain.api_keys): the gateway finds it by the SHA-256 of the key a client sent; the secret
    itself is never stored. Not deleted when revoked or expired: lists show them, and a revoked key's answer says
    when it was revoked."""

    __tablename__ = "api_keys"
    __table_args__ = (
        UniqueConstraint("key_sha256", name="uq_api_keys_key_sha256"),
        # The prefix names a key in lists, logs and `voice-admin keys revoke`, so it must name one key.
        UniqueConstraint("prefix", name="uq_api_keys_prefix"),
        Index("ix_api_keys_tenant_created", "tenant_id", "created_at", "id"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    prefix: Mapped[str] = mapped_column(String(16), nullable=False)
    key_sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    tenant_id: Mapped[str] = mapped_column(String(63), nullable=False)
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    # Space-separated (scopes hold no spaces): one plain column that reads the same on SQLite and PostgreSQL.
    scopes: Mapped[str] = mapped_column(String(255), nullable=False)
    # Zero: the gateway's default.
    requests_per_second: Mapped[float] = mapped_column(Float, nullable=False, default=0.0)
    burst: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    max_concurrent_streams: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
