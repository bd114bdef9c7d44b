"""voice.profiles.v1.ProfileService and the internal GenerationIngestService: map protobuf messages to the domain and
back, nothing more."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

from google.protobuf import timestamp_pb2
from grpc import aio

from voice.audio.v1 import audio_pb2
from voice.profiles.v1 import generation_ingest_service_pb2 as ingest_pb
from voice.profiles.v1 import generation_ingest_service_pb2_grpc as ingest_pb_grpc
from voice.profiles.v1 import profiles_service_pb2 as pb
from voice.profiles.v1 import profiles_service_pb2_grpc as pb_grpc
from voice_common.audio import AudioWarningCode
from voice_common.audio_messages import encoding_from_proto, encoding_to_proto
from voice_common.errors import ErrorList, InvalidArgument
from voice_common.server.durations import optional_timedelta
from voice_common.server.request_streams import first_message, payloads
from voice_common.tenancy import current_tenant
from voice_profiles.domain.archive import ProfileArchiver
from voice_profiles.domain.entities import (
    Generation,
    GenerationFilter,
    Profile,
    ProfileFilter,
    Sample,
    TranscriptState,
)
from voice_profiles.domain.generations import GenerationHistory, GenerationUpload
from voice_profiles.domain.profiles import ProfileChanges, ProfileManager
from voice_profiles.domain.samples import AudioStream, SampleManager, SampleUpload
from voice_profiles.domain.validation import check_id

Context = aio.ServicerContext[Any, Any]

_TRANSCRIPT_STATES = {
    TranscriptState.PROVIDED: pb.TRANSCRIPT_STATE_PROVIDED,
    TranscriptState.NEEDED: pb.TRANSCRIPT_STATE_NEEDED,
    TranscriptState.MACHINE: pb.TRANSCRIPT_STATE_MACHINE,
}
_WARNING_CODES = {
    AudioWarningCode.CLIPPING.value: pb.SAMPLE_WARNING_CODE_CLIPPING,
    AudioWarningCode.LOW_LEVEL.value: pb.SAMPLE_WARNING_CODE_LOW_LEVEL,
    AudioWarningCode.TRUNCATED.value: pb.SAMPLE_WARNING_CODE_TRUNCATED,
}


def _timestamp(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value)
    return stamp


def _datetime(message: Any, field: str) -> datetime | None:
    if not message.HasField(field):
        return None
    stamp: timestamp_pb2.Timestamp = getattr(message, field)
    try:
        value: datetime = stamp.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError):
        # Outside Timestamp's range (years 1 to 9999, nanos 0 to 999999999): protobuf refuses to convert it.
        raise InvalidArgument(
            f"{field} ({stamp.seconds} s, {stamp.nanos} ns) is not a valid Timestamp: it must lie in the years "
            "1 to 9999, with nanos from 0 to 999999999",
            field=field,
        ) from None
    return value


def _refuse_with_the_rest(errors: ErrorList, *checks: Callable[[], object]) -> None:
    """If mapping the message found bad fields (an AudioEncoding number the API does not define), refuse the
    request with those and with whatever the domain's ``checks`` find in the other fields, in one answer."""
    if errors.violations:
        for check in checks:
            errors.collect(check)
        errors.raise_if_any()


def profile_to_proto(profile: Profile) -> pb.Profile:
    return pb.Profile(
        id=profile.id,
        name=profile.name,
        description=profile.description,
        language=profile.language,
        create_time=_timestamp(profile.created_at),
        update_time=_timestamp(profile.updated_at),
        expire_time=_timestamp(profile.expires_at),
        sample_count=profile.sample_count,
        total_sample_seconds=profile.total_sample_seconds,
    )


def sample_to_proto(sample: Sample) -> pb.Sample:
    return pb.Sample(
        id=sample.id,
        profile_id=sample.profile_id,
        reference_text=sample.reference_text or "",
        transcript_state=_TRANSCRIPT_STATES[sample.transcript_state],
        file_name=sample.file_name,
        mime_type=sample.mime_type,
        original_size_bytes=sample.original_size_bytes,
        duration_seconds=sample.duration_seconds,
        sample_rate_hertz=sample.sample_rate,
        peak_dbfs=sample.peak_dbfs,
        rms_dbfs=sample.rms_dbfs,
        warnings=[
            pb.SampleWarning(
                code=_WARNING_CODES.get(w.code, pb.SAMPLE_WARNING_CODE_UNSPECIFIED), message=w.message
            )
            for w in sample.warnings
        ],
        create_time=_timestamp(sample.created_at),
        update_time=_timestamp(sample.updated_at),
        audio_sha256=sample.audio_sha256,
    )


def generation_to_proto(generation: Generation) -> pb.Generation:
    return pb.Generation(
        id=generation.id,
        profile_id=generation.profile_id or "",
        profile_name=generation.profile_name,
        text=generation.text,
        language=generation.language,
        seed=generation.seed,
        parameters=generation.parameters,
        model_id=generation.model_id,
        duration_seconds=generation.duration_seconds,
        sample_rate_hertz=generation.sample_rate,
        create_time=_timestamp(generation.created_at),
        expire_time=_timestamp(generation.expires_at),
    )


async def _split_upload(requests: AsyncIterator[Any], metadata_type: str) -> tuple[Any, AsyncIterator[bytes]]:
    """First message must carry metadata; the chunks that follow are handed on lazily."""
    first, rest = await first_message(
        requests,
        "metadata",
        field="metadata",
        if_empty=f"the stream was empty: send a {metadata_type} message first, then the bytes",
        if_other=f"the first message must carry metadata ({metadata_type})",
    )
    chunks = payloads(
        rest, "chunk", field="metadata", if_other="metadata may only be sent once, in the first message"
    )
    return first.metadata, chunks


async def _audio_messages(stream: AudioStream, response_type: Any) -> AsyncIterator[Any]:
    header = pb.AudioStreamHeader(
        format=audio_pb2.AudioFormat(
            encoding=encoding_to_proto(stream.encoding),
            sample_rate_hertz=stream.sample_rate,
            channels=1,
        ),
        mime_type=stream.mime_type,
        duration_seconds=stream.duration_seconds,
    )
    yield response_type(header=header)
    offset = 0
    async for data in stream.chunks:
        yield response_type(chunk=audio_pb2.AudioChunk(data=data, offset_bytes=offset))
        offset += len(data)


class ProfileServicer(pb_grpc.ProfileServiceServicer):
    def __init__(
        self,
        profiles: ProfileManager,
        samples: SampleManager,
        generations: GenerationHistory,
        archiver: ProfileArchiver,
        *,
        on_transcript_needed: Callable[[], None] = lambda: None,
    ) -> None:
        self._profiles = profiles
        self._on_transcript_needed = on_transcript_needed  # wakes the transcript filler; never blocks
        self._samples = samples
        self._generations = generations
        self._archiver = archiver

    # Profiles

    async def CreateProfile(
        self, request: pb.CreateProfileRequest, context: Context
    ) -> pb.CreateProfileResponse:
        profile = await self._profiles.create(
            current_tenant(),
            name=request.name,
            description=request.description,
            language=request.language,
            temporary=request.temporary,
            ttl=optional_timedelta(request, "ttl"),
        )
        return pb.CreateProfileResponse(profile=profile_to_proto(profile))

    async def GetProfile(self, request: pb.GetProfileRequest, context: Context) -> pb.GetProfileResponse:
        profile = await self._profiles.get(current_tenant(), request.id)
        return pb.GetProfileResponse(profile=profile_to_proto(profile))

    async def ListProfiles(
        self, request: pb.ListProfilesRequest, context: Context
    ) -> pb.ListProfilesResponse:
        page = await self._profiles.list_page(
            current_tenant(),
            ProfileFilter(name_contains=request.name_contains, language=request.language),
            request.page_size,
            request.page_token,
        )
        return pb.ListProfilesResponse(
            profiles=[profile_to_proto(p) for p in page.items], next_page_token=page.next_page_token
        )

    async def UpdateProfile(
        self, request: pb.UpdateProfileRequest, context: Context
    ) -> pb.UpdateProfileResponse:
        changes = ProfileChanges(
            paths=frozenset(request.update_mask.paths),
            name=request.profile.name,
            description=request.profile.description,
            language=request.profile.language,
            expires_at=_datetime(request.profile, "expire_time"),
        )
        profile = await self._profiles.update(current_tenant(), request.profile.id, changes)
        return pb.UpdateProfileResponse(profile=profile_to_proto(profile))

    async def DeleteProfile(
        self, request: pb.DeleteProfileRequest, context: Context
    ) -> pb.DeleteProfileResponse:
        counts = await self._profiles.delete(
            current_tenant(), request.id, delete_generations=request.delete_generations
        )
        return pb.DeleteProfileResponse(
            deleted_sample_count=counts.samples, deleted_generation_count=counts.generations
        )

    # Samples

    async def AddSample(
        self, request_iterator: AsyncIterator[pb.AddSampleRequest], context: Context
    ) -> pb.AddSampleResponse:
        metadata, chunks = await _split_upload(request_iterator, "SampleMetadata")
        upload = SampleUpload(
            profile_id=metadata.profile_id,
            reference_text=metadata.reference_text if metadata.HasField("reference_text") else None,
            file_name=metadata.file_name,
            mime_type=metadata.mime_type,
            request_id=metadata.request_id,
        )
        sample = await self._samples.add(current_tenant(), upload, chunks)
        if sample.transcript_state is TranscriptState.NEEDED:
            self._on_transcript_needed()  # committed: the filler transcribes it while we answer
        return pb.AddSampleResponse(sample=sample_to_proto(sample))

    async def ListSamples(self, request: pb.ListSamplesRequest, context: Context) -> pb.ListSamplesResponse:
        page = await self._samples.list_page(
            current_tenant(), request.profile_id, request.page_size, request.page_token
        )
        return pb.ListSamplesResponse(
            samples=[sample_to_proto(s) for s in page.items], next_page_token=page.next_page_token
        )

    async def UpdateSample(
        self, request: pb.UpdateSampleRequest, context: Context
    ) -> pb.UpdateSampleResponse:
        paths = set(request.update_mask.paths)
        if paths != {"reference_text"}:
            raise InvalidArgument(
                "update_mask must name exactly: reference_text (the only editable field of a sample)",
                field="update_mask",
            )
        sample = await self._samples.update_reference_text(
            current_tenant(), request.sample.id, request.sample.reference_text
        )
        if sample.transcript_state is TranscriptState.NEEDED:
            self._on_transcript_needed()  # the text was cleared: transcribe it anew
        return pb.UpdateSampleResponse(sample=sample_to_proto(sample))

    async def DeleteSample(
        self, request: pb.DeleteSampleRequest, context: Context
    ) -> pb.DeleteSampleResponse:
        await self._samples.delete(current_tenant(), request.id)
        return pb.DeleteSampleResponse()

    async def GetSampleAudio(
        self, request: pb.GetSampleAudioRequest, context: Context
    ) -> AsyncIterator[pb.GetSampleAudioResponse]:
        errors = ErrorList()
        encoding = errors.collect(lambda: encoding_from_proto(request.format.encoding, "format.encoding"))
        _refuse_with_the_rest(errors, lambda: check_id("sample", request.id))
        stream = await self._samples.audio(
            current_tenant(),
            request.id,
            original=request.original,
            encoding=encoding,
            rate=request.format.sample_rate_hertz,
        )
        async for message in _audio_messages(stream, pb.GetSampleAudioResponse):
            yield message

    # Generations

    async def GetGeneration(
        self, request: pb.GetGenerationRequest, context: Context
    ) -> pb.GetGenerationResponse:
        generation = await self._generations.get(current_tenant(), request.id)
        return pb.GetGenerationResponse(generation=generation_to_proto(generation))

    async def ListGenerations(
        self, request: pb.ListGenerationsRequest, context: Context
    ) -> pb.ListGenerationsResponse:
        filters = GenerationFilter(
            profile_id=request.profile_id,
            text_contains=request.text_contains,
            created_from=_datetime(request, "create_time_start"),
            created_before=_datetime(request, "create_time_end"),
        )
        page = await self._generations.list_page(
            current_tenant(), filters, request.page_size, request.page_token
        )
        return pb.ListGenerationsResponse(
            generations=[generation_to_proto(g) for g in page.items], next_page_token=page.next_page_token
        )

    async def DeleteGeneration(
        self, request: pb.DeleteGenerationRequest, context: Context
    ) -> pb.DeleteGenerationResponse:
        await self._generations.delete(current_tenant(), request.id)
        return pb.DeleteGenerationResponse()

    async def GetGenerationStats(
        self, request: pb.GetGenerationStatsRequest, context: Context
    ) -> pb.GetGenerationStatsResponse:
        filters = GenerationFilter(
            profile_id=request.profile_id,
            created_from=_datetime(request, "create_time_start"),
            created_before=_datetime(request, "create_time_end"),
        )
        stats = await self._generations.stats(current_tenant(), filters)
        return pb.GetGenerationStatsResponse(
            count=stats.count,
            total_duration_seconds=stats.total_duration_seconds,
            by_profile=[
                pb.ProfileGenerationStats(
                    profile_id=row.profile_id or "",
                    profile_name=row.profile_name,
                    count=row.count,
                    total_duration_seconds=row.total_duration_seconds,
                )
                for row in stats.by_profile
            ],
        )

    async def GetGenerationAudio(
        self, request: pb.GetGenerationAudioRequest, context: Context
    ) -> AsyncIterator[pb.GetGenerationAudioResponse]:
        errors = ErrorList()
        encoding = errors.collect(lambda: encoding_from_proto(request.format.encoding, "format.encoding"))
        _refuse_with_the_rest(errors, lambda: check_id("generation", request.id))
        stream = await self._generations.audio(
            current_tenant(),
            request.id,
            encoding,
            request.format.sample_rate_hertz,
        )
        async for message in _audio_messages(stream, pb.GetGenerationAudioResponse):
            yield message

    async def GetDownloadUrl(
        self, request: pb.GetDownloadUrlRequest, context: Context
    ) -> pb.GetDownloadUrlResponse:
        ttl = optional_timedelta(request, "ttl")
        target = request.WhichOneof("target")
        if target == "sample_id":
            link = await self._samples.download_link(
                current_tenant(), request.sample_id, original=request.original, ttl=ttl
            )
        elif target == "generation_id":
            if request.original:
                raise InvalidArgument(
                    "original applies to samples only; a generation has one stored file", field="original"
                )
            link = await self._generations.download_link(current_tenant(), request.generation_id, ttl)
        else:
            raise InvalidArgument("name the audio: set sample_id or generation_id", field="target")
        return pb.GetDownloadUrlResponse(
            url=link.url, expire_time=_timestamp(link.expires_at), mime_type=link.mime_type
        )

    # Archives

    async def ExportProfile(
        self, request: pb.ExportProfileRequest, context: Context
    ) -> AsyncIterator[pb.ExportProfileResponse]:
        archive = await self._archiver.export(current_tenant(), request.id)
        yield pb.ExportProfileResponse(
            header=pb.ExportHeader(file_name=archive.file_name, mime_type=archive.mime_type)
        )
        async for data in archive.chunks:
            yield pb.ExportProfileResponse(chunk=data)

    async def ImportProfile(
        self, request_iterator: AsyncIterator[pb.ImportProfileRequest], context: Context
    ) -> pb.ImportProfileResponse:
        metadata, chunks = await _split_upload(request_iterator, "ImportProfileMetadata")
        profile = await self._archiver.import_(
            current_tenant(), metadata.name, chunks, request_id=metadata.request_id
        )
        return pb.ImportProfileResponse(profile=profile_to_proto(profile), sample_count=profile.sample_count)


class GenerationIngestServicer(ingest_pb_grpc.GenerationIngestServiceServicer):
    """Internal: the TTS service stores what it synthesised here. A service of its own (not a ProfileService RPC) so
    that the gateway, which exposes only the public services, cannot reach it; clients read generations through
    ProfileService."""

    def __init__(self, generations: GenerationHistory) -> None:
        self._generations = generations

    async def CreateGeneration(
        self, request_iterator: AsyncIterator[ingest_pb.CreateGenerationRequest], context: Context
    ) -> ingest_pb.CreateGenerationResponse:
        metadata, chunks = await _split_upload(request_iterator, "GenerationMetadata")
        errors = ErrorList()
        encoding = errors.collect(
            lambda: encoding_from_proto(metadata.format.encoding, "metadata.format.encoding")
        )
        upload = GenerationUpload(
            profile_id=metadata.profile_id,
            text=metadata.text,
            language=metadata.language,
            seed=metadata.seed,
            parameters=dict(metadata.parameters),
            model_id=metadata.model_id,
            encoding=encoding,
            sample_rate=metadata.format.sample_rate_hertz,
            claimed_duration_seconds=metadata.duration_seconds,
            preview=metadata.preview,
            ttl=optional_timedelta(metadata, "ttl"),
            request_id=metadata.request_id,
        )
        _refuse_with_the_rest(errors, lambda: self._generations.check_upload(upload))
        generation = await self._generations.create(current_tenant(), upload, chunks)
        return ingest_pb.CreateGenerationResponse(generation=generation_to_proto(generation))
