"""What the domain needs from the database, as the domain defines it: a transaction over the service's tables, and
per table exactly the operations the domain calls.

The SQLAlchemy adapter satisfies these structurally and imports the domain's types, never the other way round; ``ProfilesApp.build`` hands it in, where mypy checks that it fits. Every
operation is scoped by tenant except those named ``*_any_tenant`` or ``all_*`` (the sweeper and the doctor).
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Any, Protocol

from voice_profiles.domain.entities import (
    Generation,
    GenerationFilter,
    GenerationStats,
    Profile,
    ProfileFilter,
    Sample,
)
from voice_profiles.domain.idempotency import RecordedUploads, UploadRequest
from voice_profiles.domain.paging import Cursor


class ProfileReads(Protocol):
    """The hot read (GetProfile, every TTS request), outside any transaction."""

    async def get(self, tenant_id: str, profile_id: str) -> Profile: ...


class ProfileRecords(ProfileReads, Protocol):
    async def add(
        self,
        tenant_id: str,
        *,
        profile_id: str,
        name: str,
        description: str,
        language: str,
        now: datetime,
        expires_at: datetime | None,
    ) -> Profile:
        """AlreadyExists when the tenant has a profile of that name (case-insensitive)."""
        ...

    async def lock(self, tenant_id: str, profile_id: str) -> None:
        """Hold the profile until the transaction ends (where the database can), so that a sample is never added
        to a profile being deleted; NotFound when there is none."""
        ...

    async def find_by_name(self, tenant_id: str, name: str) -> Profile | None: ...

    async def list_page(
        self, tenant_id: str, filters: ProfileFilter, cursor: Cursor | None, limit: int
    ) -> list[Profile]: ...

    async def update(
        self, tenant_id: str, profile_id: str, values: dict[str, Any], now: datetime
    ) -> None: ...

    async def delete(self, tenant_id: str, profile_id: str) -> None: ...

    async def all_ids(self) -> set[tuple[str, str]]: ...

    async def expired_any_tenant(self, now: datetime, limit: int) -> list[tuple[str, str]]: ...


class SampleRecords(Protocol):
    async def add(self, tenant_id: str, sample: Sample) -> Sample: ...

    async def get(self, tenant_id: str, sample_id: str) -> Sample: ...

    async def list_for_profile(
        self, tenant_id: str, profile_id: str, cursor: Cursor | None = None, limit: int | None = None
    ) -> list[Sample]: ...

    async def update(self, tenant_id: str, sample_id: str, values: dict[str, Any], now: datetime) -> None: ...

    async def delete(self, tenant_id: str, sample_id: str) -> None: ...

    async def all_object_keys(self) -> set[str]: ...

    # Automatic transcription: every write is conditional on the sample still needing a text, so a text the user
    # typed meanwhile is never overwritten (see domain.transcripts).

    async def needing_transcript(
        self, now: datetime, max_attempts: int, limit: int
    ) -> list[tuple[str, str, int]]: ...

    async def claim_transcript(
        self, tenant_id: str, sample_id: str, attempts_seen: int, retry_at: datetime
    ) -> bool: ...

    async def release_transcript_claim(self, tenant_id: str, sample_id: str, attempts_seen: int) -> None: ...

    async def store_machine_transcript(
        self, tenant_id: str, sample_id: str, text: str, now: datetime
    ) -> bool: ...


class GenerationRecords(Protocol):
    async def add(self, tenant_id: str, generation: Generation) -> Generation: ...

    async def get(self, tenant_id: str, generation_id: str) -> Generation: ...

    async def list_page(
        self, tenant_id: str, filters: GenerationFilter, cursor: Cursor | None, limit: int
    ) -> list[Generation]: ...

    async def list_for_profile(self, tenant_id: str, profile_id: str) -> list[Generation]: ...

    async def stats(self, tenant_id: str, filters: GenerationFilter) -> GenerationStats: ...

    async def delete(self, tenant_id: str, generation_id: str) -> None: ...

    async def expired_any_tenant(self, now: datetime, limit: int) -> list[tuple[str, str]]: ...

    async def all_object_keys(self) -> set[str]: ...


class PendingDeletions(Protocol):
    """The outbox of object deletions (see domain.object_cleanup): entries are ids with an object key."""

    async def add(self, keys: list[str], now: datetime) -> list[int]: ...

    async def lease(self, keys: list[str], now: datetime, until: datetime) -> list[int]: ...

    async def release(self, ids: list[int], now: datetime) -> bool: ...

    async def due(self, now: datetime, limit: int) -> list[tuple[int, str]]: ...

    async def done(self, ids: list[int]) -> None: ...

    async def failed(self, row_id: int, error: str, now: datetime) -> None: ...

    async def all_keys(self) -> set[str]: ...


class UploadRequests(RecordedUploads, Protocol):
    """Request ids of uploads and what they created (see domain.idempotency)."""

    async def add(self, request: UploadRequest, resource_id: str, now: datetime) -> None:
        """RequestIdTaken when another upload recorded the id first."""
        ...

    async def forget_older_than(self, cutoff: datetime) -> int: ...


class Transaction(Protocol):
    # Read-only properties, not plain attributes: a transaction's tables are never replaced, and read-only
    # members let an implementation hold its own (narrower) types.
    @property
    def profiles(self) -> ProfileRecords: ...

    @property
    def samples(self) -> SampleRecords: ...

    @property
    def generations(self) -> GenerationRecords: ...

    @property
    def pending_deletions(self) -> PendingDeletions: ...

    @property
    def upload_requests(self) -> UploadRequests: ...


class Database(Protocol):
    def transaction(self) -> AbstractAsyncContextManager[Transaction]:
        """Commits when the block ends normally, rolls back when it raises."""
        ...

    def read(self) -> AbstractAsyncContextManager[ProfileReads]:
        """Profile reads without a transaction of their own (a single read is atomic on its own)."""
        ...
