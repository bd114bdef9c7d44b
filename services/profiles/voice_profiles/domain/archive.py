"""Export a profile with its samples as a tar archive, and import such an archive as a new profile.

Layout: ``manifest.json`` plus ``samples/<n>/original`` and ``samples/<n>/normalized.wav`` for each sample.
An import trusts nothing in the archive: every original goes through the same checks as AddSample, and the whole
import commits at once or leaves nothing.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import tarfile
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from voice_common.errors import AlreadyExists, InvalidArgument
from voice_profiles.domain.database_ports import Transaction
from voice_profiles.domain.entities import Profile, Sample, TranscriptState
from voice_profiles.domain.idempotency import (
    RequestIdTaken,
    UploadOperation,
    check_request_id,
    earlier_result,
    upload_request,
)
from voice_profiles.domain.limits import Limits
from voice_profiles.domain.object_cleanup import ObjectCreate
from voice_profiles.domain.object_keys import sample_audio_key, sample_original_key
from voice_profiles.domain.profiles import MAX_DESCRIPTION_CHARS
from voice_profiles.domain.samples import check_reference_text, chunked, prepare_sample
from voice_profiles.domain.storage import StorageUser
from voice_profiles.domain.uploads import read_upload
from voice_profiles.domain.validation import check_id, check_language, check_name, check_text

FORMAT = "voice-profile-archive"
FORMAT_VERSION = 1
MIME_TYPE = "application/x-tar"


@dataclass(frozen=True)
class ExportedArchive:
    file_name: str
    mime_type: str
    chunks: AsyncIterator[bytes]


def _add_file(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def _archive_bytes(manifest: dict[str, Any], files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        _add_file(tar, "manifest.json", json.dumps(manifest, indent=2, ensure_ascii=False).encode())
        for name, data in files.items():
            _add_file(tar, name, data)
    return buffer.getvalue()


def _safe_file_stem(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.")[:60] or "profile"


def _sample_keys(tenant_id: str, sample_id: str) -> tuple[str, str]:
    return sample_original_key(tenant_id, sample_id), sample_audio_key(tenant_id, sample_id)


def _bad_archive(reason: str) -> InvalidArgument:
    return InvalidArgument(f"the archive is not a profile export: {reason}", field="chunk")


def _read_archive(data: bytes, limits: Limits) -> tuple[dict[str, Any], dict[str, bytes]]:
    try:
        tar = tarfile.open(fileobj=io.BytesIO(data), mode="r:*")  # noqa: SIM115 - closed by the with below
    except tarfile.TarError as error:
        raise _bad_archive(f"not a tar file ({error})") from None
    files: dict[str, bytes] = {}
    with tar:
        try:
            for member in tar:
                if not member.isfile():
                    continue  # links and devices are ignored, never followed
                if member.size > limits.max_sample_bytes + 1024 * 1024:
                    raise _bad_archive(f"{member.name} is larger than the sample limit")
                extracted = tar.extractfile(member)
                if extracted is not None:
                    files[member.name] = extracted.read()
        except tarfile.TarError as error:
            raise _bad_archive(f"the tar data is damaged ({error})") from None
    if "manifest.json" not in files:
        raise _bad_archive("manifest.json is missing")
    try:
        manifest = json.loads(files["manifest.json"])
    except ValueError as error:
        raise _bad_archive(f"manifest.json is not JSON ({error})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise _bad_archive(f"manifest.json does not say format {FORMAT!r}")
    if manifest.get("version") != FORMAT_VERSION:
        raise _bad_archive(
            f"version {manifest.get('version')!r} is not supported (this server reads {FORMAT_VERSION})"
        )
    return manifest, files


class ProfileArchiver(StorageUser):
    async def export(self, tenant_id: str, profile_id: str) -> ExportedArchive:
        profile_id = check_id("profile", profile_id)
        async with self._database.transaction() as tx:
            profile = await tx.profiles.get(tenant_id, profile_id)
            samples = await tx.samples.list_for_profile(tenant_id, profile_id)
        samples = sorted(samples, key=lambda s: (s.created_at, s.id))
        files: dict[str, bytes] = {}
        entries = []
        for index, sample in enumerate(samples):
            original, normalized = await asyncio.gather(
                self._store.get(sample.original_key), self._store.get(sample.audio_key)
            )
            files[f"samples/{index}/original"] = original
            files[f"samples/{index}/normalized.wav"] = normalized
            entries.append(
                {
                    "original": f"samples/{index}/original",
                    "normalized": f"samples/{index}/normalized.wav",
                    "reference_text": sample.reference_text,
                    "transcript_state": sample.transcript_state.value,
                    "file_name": sample.file_name,
                    "mime_type": sample.mime_type,
                    "duration_seconds": sample.duration_seconds,
                }
            )
        manifest = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "exported_at": self._clock().isoformat(),
            "profile": {
                "name": profile.name,
                "description": profile.description,
                "language": profile.language,
            },
            "samples": entries,
        }
        data = await asyncio.to_thread(_archive_bytes, manifest, files)
        return ExportedArchive(f"{_safe_file_stem(profile.name)}.voice.tar", MIME_TYPE, chunked(data))

    async def import_(
        self, tenant_id: str, name_override: str, chunks: AsyncIterator[bytes], request_id: str = ""
    ) -> Profile:
        if name_override:
            check_name(name_override)
        check_request_id(request_id)
        data = await read_upload(chunks, self._limits.max_import_bytes, "the archive")
        request = await upload_request(
            tenant_id, UploadOperation.IMPORT_PROFILE, request_id, {"name": name_override}, data
        )
        if request is not None:
            # Before the name check: a retry's first attempt made the profile that now holds the name.
            async with self._database.transaction() as tx:
                earlier = await earlier_result(tx.upload_requests, request, "profile", tx.profiles.get)
            if earlier is not None:
                return earlier
        manifest, files = await asyncio.to_thread(_read_archive, data, self._limits)
        profile_info = manifest.get("profile")
        entries = manifest.get("samples")
        if not isinstance(profile_info, dict) or not isinstance(entries, list):
            raise _bad_archive("manifest.json needs a 'profile' object and a 'samples' list")
        if len(entries) > self._limits.max_samples_per_profile:
            raise _bad_archive(
                f"{len(entries)} samples; a profile holds at most {self._limits.max_samples_per_profile}"
            )
        name = check_name(name_override or str(profile_info.get("name", "")))
        description = check_text(
            str(profile_info.get("description", "")), "description", max_chars=MAX_DESCRIPTION_CHARS
        )
        language = check_language(str(profile_info.get("language", "")))
        async with self._database.transaction() as tx:
            if await tx.profiles.find_by_name(tenant_id, name) is not None:
                raise AlreadyExists(
                    f"a profile named {name!r} already exists; pass metadata.name to import under another name"
                )
        uploads: list[tuple[dict[str, Any], bytes]] = []
        for index, entry in enumerate(entries):
            if not isinstance(entry, dict) or not isinstance(entry.get("original"), str):
                raise _bad_archive(f"sample {index} has no 'original' path")
            if entry["original"] not in files:
                raise _bad_archive(f"sample {index}'s file {entry['original']!r} is missing")
            uploads.append((entry, files[entry["original"]]))
        profile_id = str(uuid.uuid4())
        now = self._clock()
        sample_ids = [str(uuid.uuid4()) for _ in uploads]
        keys = [key for sample_id in sample_ids for key in _sample_keys(tenant_id, sample_id)]
        try:
            async with self._cleanup.creating(keys) as create:
                samples = [
                    await self._store_sample(create, tenant_id, profile_id, sample_id, entry, original, now)
                    for sample_id, (entry, original) in zip(sample_ids, uploads, strict=True)
                ]

                async def write_rows(tx: Transaction) -> Profile:
                    if request is not None:
                        await tx.upload_requests.add(request, profile_id, now)
                    profile = await tx.profiles.add(
                        tenant_id,
                        profile_id=profile_id,
                        name=name,
                        description=description,
                        language=language,
                        now=now,
                        expires_at=None,
                    )
                    for sample in samples:
                        await tx.samples.add(tenant_id, sample)
                    return await tx.profiles.get(tenant_id, profile.id)

                return await create.commit(write_rows)
        except RequestIdTaken:
            assert request is not None
            async with self._database.transaction() as tx:
                winner = await earlier_result(tx.upload_requests, request, "profile", tx.profiles.get)
            assert winner is not None  # the record that beat ours is committed
            return winner

    async def _store_sample(
        self,
        create: ObjectCreate,
        tenant_id: str,
        profile_id: str,
        sample_id: str,
        entry: dict[str, Any],
        original: bytes,
        now: datetime,
    ) -> Sample:
        prepared = await asyncio.to_thread(prepare_sample, original, self._limits)
        raw_text = entry.get("reference_text")
        reference_text = check_reference_text(raw_text if isinstance(raw_text, str) else None, self._limits)
        state = TranscriptState.NEEDED
        if reference_text:
            machine = entry.get("transcript_state") == TranscriptState.MACHINE.value
            state = TranscriptState.MACHINE if machine else TranscriptState.PROVIDED
        original_key, audio_key = _sample_keys(tenant_id, sample_id)
        await asyncio.gather(
            create.put(original_key, original, "application/octet-stream"),
            create.put(audio_key, prepared.normalized_wav, "audio/wav"),
        )
        return prepared.to_sample(
            tenant_id,
            sample_id,
            profile_id,
            reference_text=reference_text,
            transcript_state=state,
            file_name=check_text(
                str(entry.get("file_name", "")), "file_name", max_chars=255, single_line=True
            ),
            mime_type=check_text(
                str(entry.get("mime_type", "")), "mime_type", max_chars=127, single_line=True
            ),
            sample_rate=self._limits.sample_rate,
            now=now,
        )
