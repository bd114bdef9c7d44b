"""Generation history: audio the TTS service produced, with what produced it."""

from __future__ import annotations

import asyncio
import math
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import timedelta

from voice_common.audio import AudioEncoding, decode_audio, decode_linear16, encode_audio
from voice_common.errors import ErrorList, InvalidArgument, quoted
from voice_profiles.domain.database_ports import Transaction
from voice_profiles.domain.entities import Generation, GenerationFilter, GenerationStats, Page
from voice_profiles.domain.idempotency import (
    RequestIdTaken,
    UploadOperation,
    check_request_id,
    earlier_result,
    upload_request,
)
from voice_profiles.domain.limits import Limits
from voice_profiles.domain.object_keys import generation_audio_key
from voice_profiles.domain.paging import decode_token, page_of, page_size
from voice_profiles.domain.samples import (
    AudioStream,
    DownloadLink,
    check_output_format,
    download_link,
    transcode_stream,
)
from voice_profiles.domain.storage import StorageUser
from voice_profiles.domain.uploads import read_upload
from voice_profiles.domain.validation import check_id, check_language, check_search, check_text, check_ttl

# How far the producer's own duration may differ from the decoded audio before the upload is called truncated.
DURATION_TOLERANCE_SECONDS = 0.05
MAX_PARAMETERS = 32


@dataclass(frozen=True)
class GenerationUpload:
    profile_id: str
    text: str
    language: str
    seed: int = 0
    parameters: dict[str, float] = field(default_factory=dict)
    model_id: str = ""
    encoding: AudioEncoding | None = None  # None: a container that describes itself
    sample_rate: int = 0
    claimed_duration_seconds: float = 0.0
    preview: bool = False
    ttl: timedelta | None = None
    request_id: str = ""  # "" for none; see domain.idempotency


def _fingerprinted(upload: GenerationUpload) -> dict[str, object]:
    """Every field of the metadata that shapes the stored generation (see domain.idempotency)."""
    return {
        "profile_id": upload.profile_id,
        "text": upload.text,
        "language": upload.language,
        "seed": upload.seed,
        "parameters": upload.parameters,
        "model_id": upload.model_id,
        "encoding": upload.encoding.value if upload.encoding is not None else None,
        "sample_rate": upload.sample_rate,
        "duration_seconds": upload.claimed_duration_seconds,
        "preview": upload.preview,
        "ttl_seconds": upload.ttl.total_seconds() if upload.ttl is not None else None,
    }


def _decode_generation(data: bytes, upload: GenerationUpload, limits: Limits) -> tuple[bytes, float]:
    if upload.encoding is AudioEncoding.LINEAR16:
        decoded = decode_linear16(data, upload.sample_rate, target_rate=limits.sample_rate)
    else:
        decoded = decode_audio(
            data, target_rate=limits.sample_rate, max_seconds=limits.max_generation_seconds
        )
    if decoded.duration_seconds > limits.max_generation_seconds:
        raise InvalidArgument(
            f"the audio is {decoded.duration_seconds:.1f} s long; the limit is {limits.max_generation_seconds:g} s",
            field="chunk",
        )
    claimed = upload.claimed_duration_seconds
    if claimed and abs(claimed - decoded.duration_seconds) > DURATION_TOLERANCE_SECONDS:
        raise InvalidArgument(
            f"metadata.duration_seconds says {claimed:.3f} s but the audio decodes to "
            f"{decoded.duration_seconds:.3f} s; the upload may be truncated",
            field="metadata.duration_seconds",
        )
    return encode_audio(decoded.samples, limits.sample_rate, AudioEncoding.WAV), decoded.duration_seconds


class GenerationHistory(StorageUser):
    def check_upload(self, upload: GenerationUpload) -> tuple[str | None, str, str]:
        """Every problem with the metadata at once, so the producer can fix them in one go: the profile id, the
        language and the text, checked. The servicer also calls it alone to list these beside a field it could not
        map (an AudioEncoding number the API does not define)."""
        errors = ErrorList()

        def collect(check: Callable[[], str]) -> str:
            try:
                return check()
            except InvalidArgument as error:
                errors.violations.extend(error.violations)
                return ""

        text = collect(
            lambda: check_text(
                upload.text, "metadata.text", max_chars=self._limits.max_generation_text_chars, required=True
            )
        )
        language = collect(lambda: check_language(upload.language, "metadata.language"))
        collect(lambda: check_request_id(upload.request_id))
        collect(lambda: check_text(upload.model_id, "metadata.model_id", max_chars=255, single_line=True))
        if len(upload.parameters) > MAX_PARAMETERS:
            errors.add("metadata.parameters", f"at most {MAX_PARAMETERS} parameters")
        for name, value in upload.parameters.items():
            if not name or len(name) > 64 or not name.replace("_", "").isalnum():
                errors.add(
                    "metadata.parameters",
                    f"parameter name {quoted(name)} must be 1-64 letters, digits or '_'",
                )
            elif not math.isfinite(value):
                errors.add(f"metadata.parameters[{name}]", "must be a finite number")
        if upload.encoding is AudioEncoding.LINEAR16 and not 8000 <= upload.sample_rate <= 48000:
            errors.add(
                "metadata.format.sample_rate_hertz",
                f"LINEAR16 audio needs its sample rate, 8000 to 48000 (got {upload.sample_rate})",
            )
        if upload.claimed_duration_seconds < 0 or not math.isfinite(upload.claimed_duration_seconds):
            errors.add("metadata.duration_seconds", "must be a non-negative number")
        if upload.ttl is not None and not upload.preview:
            errors.add(
                "metadata.ttl",
                "ttl applies to previews only: set preview=true for a generation that expires after ttl, or leave "
                "ttl unset to keep it",
            )
        profile_id = (
            errors.collect(lambda: check_id("profile", upload.profile_id, "metadata.profile_id"))
            if upload.profile_id
            else None
        )
        errors.raise_if_any()
        return profile_id, language, text

    async def create(
        self, tenant_id: str, upload: GenerationUpload, chunks: AsyncIterator[bytes]
    ) -> Generation:
        profile_id, language, text = self.check_upload(upload)
        profile_name = ""
        if profile_id is not None:
            async with self._database.transaction() as tx:
                # A retry whose first attempt was stored gets that generation even if the profile is gone by now
                # (the history outlives it).
                if not (
                    upload.request_id
                    and await tx.upload_requests.find(
                        tenant_id, UploadOperation.CREATE_GENERATION, upload.request_id
                    )
                ):
                    profile_name = (await tx.profiles.get(tenant_id, profile_id)).name
        now = self._clock()
        expires_at = None
        if upload.preview:
            expires_at = now + check_ttl(
                upload.ttl, self._limits.preview_ttl, self._limits.max_ttl, "metadata.ttl"
            )
        data = await read_upload(chunks, self._limits.max_generation_bytes, "the audio")
        request = await upload_request(
            tenant_id, UploadOperation.CREATE_GENERATION, upload.request_id, _fingerprinted(upload), data
        )
        if request is not None:
            async with self._database.transaction() as tx:
                earlier = await earlier_result(tx.upload_requests, request, "generation", tx.generations.get)
            if earlier is not None:
                return earlier
        wav, duration = await asyncio.to_thread(_decode_generation, data, upload, self._limits)
        generation_id = str(uuid.uuid4())
        key = generation_audio_key(tenant_id, generation_id)
        generation = Generation(
            id=generation_id,
            profile_id=profile_id,
            profile_name=profile_name,
            text=text,
            language=language,
            seed=upload.seed,
            parameters=dict(upload.parameters),
            model_id=upload.model_id,
            duration_seconds=duration,
            sample_rate=self._limits.sample_rate,
            audio_key=key,
            size_bytes=len(wav),
            created_at=now,
            expires_at=expires_at,
        )

        async def write_rows(tx: Transaction) -> None:
            if request is not None:
                await tx.upload_requests.add(request, generation.id, now)
            await tx.generations.add(tenant_id, generation)

        try:
            async with self._cleanup.creating([key]) as create:
                await create.put(key, wav, "audio/wav")
                await create.commit(write_rows)
        except RequestIdTaken:
            assert request is not None
            async with self._database.transaction() as tx:
                winner = await earlier_result(tx.upload_requests, request, "generation", tx.generations.get)
            assert winner is not None  # the record that beat ours is committed
            return winner
        return generation

    async def get(self, tenant_id: str, generation_id: str) -> Generation:
        generation_id = check_id("generation", generation_id)
        async with self._database.transaction() as tx:
            return await tx.generations.get(tenant_id, generation_id)

    async def list_page(
        self, tenant_id: str, filters: GenerationFilter, requested_page_size: int, page_token: str
    ) -> Page[Generation]:
        self._check_filters(filters)
        limit = page_size(requested_page_size)
        cursor = decode_token(page_token, filters)
        async with self._database.transaction() as tx:
            items = await tx.generations.list_page(tenant_id, filters, cursor, limit + 1)
        return page_of(items, limit, filters)

    def _check_filters(self, filters: GenerationFilter) -> None:
        if filters.profile_id:
            check_id("profile", filters.profile_id, "profile_id")
        check_search(filters.text_contains, "text_contains")
        if (
            filters.created_from is not None
            and filters.created_before is not None
            and filters.created_from >= filters.created_before
        ):
            raise InvalidArgument(
                "create_time_start must be before create_time_end", field="create_time_start"
            )

    async def stats(self, tenant_id: str, filters: GenerationFilter) -> GenerationStats:
        self._check_filters(filters)
        async with self._database.transaction() as tx:
            return await tx.generations.stats(tenant_id, filters)

    async def delete(self, tenant_id: str, generation_id: str) -> None:
        generation_id = check_id("generation", generation_id)
        async with self._database.transaction() as tx:
            generation = await tx.generations.get(tenant_id, generation_id)
            await tx.generations.delete(tenant_id, generation_id)
            ids = await tx.pending_deletions.add([generation.audio_key], self._clock())
        await self._cleanup.delete_committed([(ids[0], generation.audio_key)])

    async def download_link(self, tenant_id: str, generation_id: str, ttl: timedelta | None) -> DownloadLink:
        generation = await self.get(tenant_id, check_id("generation", generation_id, "generation_id"))
        return await download_link(self._store, generation.audio_key, "audio/wav", ttl, self._clock())

    async def audio(
        self, tenant_id: str, generation_id: str, encoding: AudioEncoding | None, rate: int
    ) -> AudioStream:
        generation = await self.get(tenant_id, generation_id)
        encoding, rate = check_output_format(encoding, rate, generation.sample_rate)
        return await transcode_stream(
            self._store,
            generation.audio_key,
            generation.duration_seconds,
            encoding,
            rate,
            generation.sample_rate,
        )
