"""Voice profiles: create, read, list, update, delete (with their samples' objects)."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from voice_common.errors import InvalidArgument
from voice_common.prompt_keys import profile_prompts_prefix
from voice_profiles.domain.database_ports import Transaction
from voice_profiles.domain.entities import Page, Profile, ProfileFilter
from voice_profiles.domain.paging import decode_token, page_of, page_size
from voice_profiles.domain.storage import Storage, StorageUser
from voice_profiles.domain.validation import (
    check_id,
    check_language,
    check_name,
    check_search,
    check_text,
    check_ttl,
)

UPDATABLE_PROFILE_FIELDS = ("name", "description", "language", "expire_time")
MAX_DESCRIPTION_CHARS = 2000


@dataclass(frozen=True)
class ProfileChanges:
    """Fields named by an update mask; ``expires_at`` None with ``set_expiry`` True makes a profile permanent."""

    paths: frozenset[str]
    name: str = ""
    description: str = ""
    language: str = ""
    expires_at: datetime | None = None


@dataclass(frozen=True)
class DeletedCounts:
    samples: int
    generations: int


class ProfileManager(StorageUser):
    def __init__(self, storage: Storage) -> None:
        super().__init__(storage)
        self._reads_in_flight: dict[tuple[str, str, int], asyncio.Future[Profile]] = {}

    async def create(
        self,
        tenant_id: str,
        *,
        name: str,
        description: str = "",
        language: str = "",
        temporary: bool = False,
        ttl: timedelta | None = None,
    ) -> Profile:
        name = check_name(name)
        description = check_text(description, "description", max_chars=MAX_DESCRIPTION_CHARS)
        language = check_language(language)
        if ttl is not None and not temporary:
            # A ttl alone would make an expiring profile that nobody asked to be temporary, and the sweeper would
            # delete the voice while its owner thinks it permanent.
            raise InvalidArgument(
                "ttl applies to temporary profiles only: set temporary=true for a profile that expires after ttl, "
                "or leave ttl unset for a permanent one",
                field="ttl",
            )
        now = self._clock()
        expires_at = None
        if temporary:
            expires_at = now + check_ttl(ttl, self._limits.temporary_profile_ttl, self._limits.max_ttl)
        async with self._database.transaction() as tx:
            return await tx.profiles.add(
                tenant_id,
                profile_id=str(uuid.uuid4()),
                name=name,
                description=description,
                language=language,
                now=now,
                expires_at=expires_at,
            )

    async def get(self, tenant_id: str, profile_id: str) -> Profile:
        profile_id = check_id("profile", profile_id)
        cached = self._profile_cache.get(tenant_id, profile_id)
        if cached is not None:
            return cached
        # When an entry expires under load, every caller would miss at once: one reads, the others wait for it.
        # Only reads begun since the last local write are shared, so a caller never gets data older than a write
        # that finished before it asked.
        epoch = self._profile_cache.epoch()
        key = (tenant_id, profile_id, epoch)
        pending = self._reads_in_flight.get(key)
        if pending is None:
            pending = asyncio.ensure_future(self._read_through(tenant_id, profile_id, epoch))
            self._reads_in_flight[key] = pending
            pending.add_done_callback(lambda _: self._reads_in_flight.pop(key, None))
        return await asyncio.shield(pending)

    async def _read_through(self, tenant_id: str, profile_id: str, epoch: int) -> Profile:
        async with self._database.read() as reads:
            profile = await reads.get(tenant_id, profile_id)
        self._profile_cache.put(tenant_id, profile_id, profile, epoch)
        return profile

    async def list_page(
        self, tenant_id: str, filters: ProfileFilter, requested_page_size: int, page_token: str
    ) -> Page[Profile]:
        if filters.language:
            check_language(filters.language)
        check_search(filters.name_contains, "name_contains")
        limit = page_size(requested_page_size)
        cursor = decode_token(page_token, filters)
        async with self._database.transaction() as tx:
            items = await tx.profiles.list_page(tenant_id, filters, cursor, limit + 1)
        return page_of(items, limit, filters)

    async def update(self, tenant_id: str, profile_id: str, changes: ProfileChanges) -> Profile:
        profile_id = check_id("profile", profile_id, "profile.id")
        unknown = sorted(changes.paths - set(UPDATABLE_PROFILE_FIELDS))
        if unknown:
            raise InvalidArgument(
                f"update_mask names fields that cannot be updated: {', '.join(unknown)}; "
                f"updatable: {', '.join(UPDATABLE_PROFILE_FIELDS)}",
                field="update_mask",
            )
        if not changes.paths:
            raise InvalidArgument("update_mask must name at least one field", field="update_mask")
        values: dict[str, Any] = {}
        if "name" in changes.paths:
            values["name"] = check_name(changes.name)
        if "description" in changes.paths:
            values["description"] = check_text(
                changes.description, "profile.description", max_chars=MAX_DESCRIPTION_CHARS
            )
        if "language" in changes.paths:
            values["language"] = check_language(changes.language, "profile.language")
        now = self._clock()
        if "expire_time" in changes.paths:
            if changes.expires_at is not None and changes.expires_at <= now:
                raise InvalidArgument(
                    "profile.expire_time must be in the future", field="profile.expire_time"
                )
            if changes.expires_at is not None and changes.expires_at - now > self._limits.max_ttl:
                raise InvalidArgument(
                    f"profile.expire_time must be within {self._limits.max_ttl} from now",
                    field="profile.expire_time",
                )
            values["expires_at"] = changes.expires_at
        async with self._database.transaction() as tx:
            await tx.profiles.update(tenant_id, profile_id, values, now)
            profile = await tx.profiles.get(tenant_id, profile_id)
        self._profile_cache.invalidate(tenant_id, profile_id)
        return profile

    async def delete(
        self, tenant_id: str, profile_id: str, *, delete_generations: bool = False
    ) -> DeletedCounts:
        profile_id = check_id("profile", profile_id)
        async with self._database.transaction() as tx:
            pending, counts = await self.delete_in(tx, tenant_id, profile_id, delete_generations)
        self._profile_cache.invalidate(tenant_id, profile_id)
        await self._cleanup.delete_committed(pending)
        return counts

    async def delete_in(
        self, tx: Transaction, tenant_id: str, profile_id: str, delete_generations: bool
    ) -> tuple[list[tuple[int, str]], DeletedCounts]:
        """Delete rows inside ``tx`` and queue their objects; the caller removes them after the commit."""
        await tx.profiles.lock(tenant_id, profile_id)
        samples = await tx.samples.list_for_profile(tenant_id, profile_id)
        keys = [key for sample in samples for key in (sample.original_key, sample.audio_key)]
        for sample in samples:
            await tx.samples.delete(tenant_id, sample.id)
        generation_count = 0
        if delete_generations:
            generations = await tx.generations.list_for_profile(tenant_id, profile_id)
            for generation in generations:
                await tx.generations.delete(tenant_id, generation.id)
                keys.append(generation.audio_key)
            generation_count = len(generations)
        await tx.profiles.delete(tenant_id, profile_id)
        # The TTS service's voice prompts of this profile: a prefix entry, whatever objects lie under it then.
        keys.append(profile_prompts_prefix(tenant_id, profile_id))
        ids = await tx.pending_deletions.add(keys, self._clock())
        return list(zip(ids, keys, strict=True)), DeletedCounts(len(samples), generation_count)
