"""Reference samples: ingest (decode, check, normalise, store), list, edit, delete, stream back."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from voice_common.audio import (
    AudioEncoding,
    ReferenceLimits,
    decode_audio,
    decode_reference_audio,
    encode_audio,
    mime_type_for,
)
from voice_common.audio.encoding import check_output_rate
from voice_common.errors import FailedPrecondition, InvalidArgument
from voice_common.object_store import ObjectStore
from voice_profiles.domain.database_ports import Transaction
from voice_profiles.domain.entities import Page, Sample, SampleWarningInfo, TranscriptState
from voice_profiles.domain.idempotency import (
    RequestIdTaken,
    UploadOperation,
    check_request_id,
    earlier_result,
    upload_request,
)
from voice_profiles.domain.limits import Limits
from voice_profiles.domain.object_keys import sample_audio_key, sample_original_key
from voice_profiles.domain.paging import decode_token, page_of, page_size
from voice_profiles.domain.storage import StorageUser
from voice_profiles.domain.uploads import read_upload
from voice_profiles.domain.validation import check_id, check_text, check_ttl

STREAM_CHUNK_BYTES = 64 * 1024


@dataclass(frozen=True)
class SampleUpload:
    profile_id: str
    reference_text: str | None
    file_name: str = ""
    mime_type: str = ""
    request_id: str = ""  # "" for none; see domain.idempotency


@dataclass(frozen=True)
class PreparedSample:
    """A decoded, checked and normalised upload, ready to be stored."""

    original: bytes
    normalized_wav: bytes
    normalized_sha256: str  # identifies the audio a voice prompt is made from (TTS caches prompts by it)
    duration_seconds: float
    peak_dbfs: float
    rms_dbfs: float
    warnings: tuple[SampleWarningInfo, ...]

    def to_sample(
        self,
        tenant_id: str,
        sample_id: str,
        profile_id: str,
        *,
        reference_text: str | None,
        transcript_state: TranscriptState,
        file_name: str,
        mime_type: str,
        sample_rate: int,
        now: datetime,
    ) -> Sample:
        """The row describing this audio once stored under the sample's keys."""
        return Sample(
            id=sample_id,
            profile_id=profile_id,
            reference_text=reference_text,
            transcript_state=transcript_state,
            file_name=file_name,
            mime_type=mime_type,
            original_size_bytes=len(self.original),
            original_key=sample_original_key(tenant_id, sample_id),
            audio_key=sample_audio_key(tenant_id, sample_id),
            audio_sha256=self.normalized_sha256,
            duration_seconds=self.duration_seconds,
            sample_rate=sample_rate,
            peak_dbfs=self.peak_dbfs,
            rms_dbfs=self.rms_dbfs,
            warnings=self.warnings,
            created_at=now,
            updated_at=now,
        )


DEFAULT_URL_TTL = timedelta(minutes=15)
MAX_URL_TTL = timedelta(days=7)  # the longest a presigned S3 URL may live


@dataclass(frozen=True)
class DownloadLink:
    url: str
    expires_at: datetime
    mime_type: str


async def download_link(
    store: ObjectStore, key: str, mime_type: str, ttl: timedelta | None, now: datetime
) -> DownloadLink:
    ttl = check_ttl(ttl, DEFAULT_URL_TTL, MAX_URL_TTL)
    if ttl < timedelta(seconds=1):
        raise InvalidArgument("ttl must be at least 1 second", field="ttl")
    url = await store.presigned_get_url(key, ttl)
    return DownloadLink(url, now + ttl, mime_type)


@dataclass(frozen=True)
class AudioStream:
    """Header facts plus the bytes, for the servicer to send."""

    encoding: AudioEncoding | None  # None: the original upload, whatever it is
    sample_rate: int
    mime_type: str
    duration_seconds: float
    chunks: AsyncIterator[bytes]


def prepare_sample(data: bytes, limits: Limits) -> PreparedSample:
    """Blocking: decode any supported container, enforce the reference rules, normalise to mono 24 kHz WAV."""
    reference = decode_reference_audio(
        data,
        ReferenceLimits(limits.min_sample_seconds, limits.max_sample_seconds),
        sample_rate=limits.sample_rate,
        field="chunk",
    )
    decoded, analysis = reference.decoded, reference.analysis
    normalized_wav = encode_audio(decoded.samples, decoded.sample_rate, AudioEncoding.WAV)
    return PreparedSample(
        original=data,
        normalized_wav=normalized_wav,
        normalized_sha256=hashlib.sha256(normalized_wav).hexdigest(),
        duration_seconds=decoded.duration_seconds,
        peak_dbfs=analysis.peak_dbfs,
        rms_dbfs=analysis.rms_dbfs,
        warnings=tuple(SampleWarningInfo(w.code.value, w.message) for w in reference.warnings),
    )


def check_reference_text(text: str | None, limits: Limits) -> str | None:
    if text is None:
        return None
    return check_text(text.strip(), "reference_text", max_chars=limits.max_reference_text_chars) or None


async def chunked(data: bytes, size: int = STREAM_CHUNK_BYTES) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def transcode_stream(
    store: ObjectStore, key: str, duration: float, encoding: AudioEncoding, rate: int, stored_rate: int
) -> AudioStream:
    """Stream a stored normalised WAV in the requested encoding and rate (the stored WAV itself when equal)."""
    if encoding is AudioEncoding.WAV and rate == stored_rate:
        chunks = store.iter_chunks(key, STREAM_CHUNK_BYTES)
    else:
        wav = await store.get(key)
        encoded = await asyncio.to_thread(_transcode, wav, stored_rate, encoding, rate)
        chunks = chunked(encoded)
    return AudioStream(encoding, rate, mime_type_for(encoding), duration, chunks)


def _transcode(wav: bytes, stored_rate: int, encoding: AudioEncoding, rate: int) -> bytes:
    decoded = decode_audio(wav, target_rate=stored_rate)
    return encode_audio(decoded.samples, stored_rate, encoding, target_rate=rate)


def check_output_format(
    encoding: AudioEncoding | None, rate: int, stored_rate: int
) -> tuple[AudioEncoding, int]:
    encoding = encoding or AudioEncoding.WAV
    rate = rate or stored_rate
    # Reject a rate the codec cannot take before any byte is streamed.
    check_output_rate(encoding, rate, field="format.sample_rate_hertz")
    return encoding, rate


class SampleManager(StorageUser):
    async def add(self, tenant_id: str, upload: SampleUpload, chunks: AsyncIterator[bytes]) -> Sample:
        profile_id = check_id("profile", upload.profile_id, "metadata.profile_id")
        reference_text = check_reference_text(upload.reference_text, self._limits)
        file_name = check_text(upload.file_name, "metadata.file_name", max_chars=255, single_line=True)
        mime_type = check_text(upload.mime_type, "metadata.mime_type", max_chars=127, single_line=True)
        request_id = check_request_id(upload.request_id)
        # Fail fast on a wrong profile, before the client streams megabytes; not for a retry, whose first
        # attempt may have filled the profile (its answer is that attempt's sample).
        await self._check_room(tenant_id, profile_id, request_id)
        data = await read_upload(chunks, self._limits.max_sample_bytes, "the sample")
        request = await upload_request(
            tenant_id,
            UploadOperation.ADD_SAMPLE,
            request_id,
            {
                "profile_id": profile_id,
                "reference_text": reference_text,
                "file_name": file_name,
                "mime_type": mime_type,
            },
            data,
        )
        if request is not None:
            async with self._database.transaction() as tx:
                earlier = await earlier_result(tx.upload_requests, request, "sample", tx.samples.get)
            if earlier is not None:
                return earlier
        sample_id = str(uuid.uuid4())
        original_key = sample_original_key(tenant_id, sample_id)
        audio_key = sample_audio_key(tenant_id, sample_id)
        try:
            async with self._cleanup.creating([original_key, audio_key]) as create:
                # The original is stored while it is decoded: the overlap keeps AddSample close to a bare
                # put_object (see `make bench`).
                original = create.put(original_key, data, "application/octet-stream")
                prepared = await asyncio.to_thread(prepare_sample, data, self._limits)
                await create.put(audio_key, prepared.normalized_wav, "audio/wav")
                await original
                sample = prepared.to_sample(
                    tenant_id,
                    sample_id,
                    profile_id,
                    reference_text=reference_text,
                    transcript_state=TranscriptState.PROVIDED if reference_text else TranscriptState.NEEDED,
                    file_name=file_name,
                    mime_type=mime_type,
                    sample_rate=self._limits.sample_rate,
                    now=self._clock(),
                )

                async def write_rows(tx: Transaction) -> None:
                    if request is not None:
                        # First: of two uploads with one id, the second waits here for the first and then
                        # finds the id taken (not a profile the first one filled).
                        await tx.upload_requests.add(request, sample.id, sample.created_at)
                    await tx.profiles.lock(tenant_id, profile_id)
                    await self._check_count(tx.samples.list_for_profile, tenant_id, profile_id)
                    await tx.samples.add(tenant_id, sample)

                await create.commit(write_rows)
        except RequestIdTaken:
            assert request is not None
            async with self._database.transaction() as tx:
                winner = await earlier_result(tx.upload_requests, request, "sample", tx.samples.get)
            assert winner is not None  # the record that beat ours is committed
            return winner
        self._profile_cache.invalidate(tenant_id, profile_id)  # its sample count and length changed
        return sample

    async def _check_room(self, tenant_id: str, profile_id: str, request_id: str) -> None:
        async with self._database.transaction() as tx:
            if request_id and await tx.upload_requests.find(
                tenant_id, UploadOperation.ADD_SAMPLE, request_id
            ):
                return
            await tx.profiles.get(tenant_id, profile_id)
            await self._check_count(tx.samples.list_for_profile, tenant_id, profile_id)

    async def _check_count(
        self, list_samples: Callable[[str, str], Any], tenant_id: str, profile_id: str
    ) -> None:
        existing = await list_samples(tenant_id, profile_id)
        if len(existing) >= self._limits.max_samples_per_profile:
            raise FailedPrecondition(
                f"the profile already has {len(existing)} samples, the most it may hold; delete one first"
            )

    async def list_page(
        self, tenant_id: str, profile_id: str, requested_page_size: int, page_token: str
    ) -> Page[Sample]:
        profile_id = check_id("profile", profile_id, "profile_id")
        limit = page_size(requested_page_size)
        cursor = decode_token(page_token, ("samples", profile_id))
        async with self._database.transaction() as tx:
            await tx.profiles.get(tenant_id, profile_id)
            items = await tx.samples.list_for_profile(tenant_id, profile_id, cursor, limit + 1)
        return page_of(items, limit, ("samples", profile_id))

    async def get(self, tenant_id: str, sample_id: str) -> Sample:
        sample_id = check_id("sample", sample_id)
        async with self._database.transaction() as tx:
            return await tx.samples.get(tenant_id, sample_id)

    async def update_reference_text(
        self, tenant_id: str, sample_id: str, text: str, *, machine_made: bool = False
    ) -> Sample:
        sample_id = check_id("sample", sample_id, "sample.id")
        cleaned = check_reference_text(text, self._limits)
        if cleaned is None:
            state = TranscriptState.NEEDED
        else:
            state = TranscriptState.MACHINE if machine_made else TranscriptState.PROVIDED
        now = self._clock()
        async with self._database.transaction() as tx:
            # A fresh start for automatic transcription: a user who clears the text asks for one anew, even if
            # earlier attempts gave up.
            values = {
                "reference_text": cleaned,
                "transcript_state": state.value,
                "transcript_attempts": 0,
                "transcript_next_attempt_at": None,
            }
            await tx.samples.update(tenant_id, sample_id, values, now)
            sample = await tx.samples.get(tenant_id, sample_id)
        return replace(sample, reference_text=cleaned, transcript_state=state)

    async def delete(self, tenant_id: str, sample_id: str) -> None:
        sample_id = check_id("sample", sample_id)
        async with self._database.transaction() as tx:
            sample = await tx.samples.get(tenant_id, sample_id)
            await tx.samples.delete(tenant_id, sample_id)
            keys = [sample.original_key, sample.audio_key]
            ids = await tx.pending_deletions.add(keys, self._clock())
        self._profile_cache.invalidate(tenant_id, sample.profile_id)
        await self._cleanup.delete_committed(list(zip(ids, keys, strict=True)))

    async def download_link(
        self, tenant_id: str, sample_id: str, *, original: bool, ttl: timedelta | None
    ) -> DownloadLink:
        sample = await self.get(tenant_id, check_id("sample", sample_id, "sample_id"))
        if original:
            return await download_link(
                self._store,
                sample.original_key,
                sample.mime_type or "application/octet-stream",
                ttl,
                self._clock(),
            )
        return await download_link(self._store, sample.audio_key, "audio/wav", ttl, self._clock())

    async def audio(
        self, tenant_id: str, sample_id: str, *, original: bool, encoding: AudioEncoding | None, rate: int
    ) -> AudioStream:
        sample = await self.get(tenant_id, sample_id)
        if original:
            return AudioStream(
                None,
                0,
                sample.mime_type or "application/octet-stream",
                sample.duration_seconds,
                self._store.iter_chunks(sample.original_key, STREAM_CHUNK_BYTES),
            )
        encoding, rate = check_output_format(encoding, rate, sample.sample_rate)
        return await transcode_stream(
            self._store, sample.audio_key, sample.duration_seconds, encoding, rate, sample.sample_rate
        )
