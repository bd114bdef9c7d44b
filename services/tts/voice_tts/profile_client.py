"""The TTS service's adapter to the profile service over gRPC.

:class:`ProfileClient` fetches a profile's reference clips (for voice-clone prompts) through the public
``voice.profiles.v1.ProfileService`` and stores finished speech in the generation history through the internal
``voice.profiles.v1.GenerationIngestService`` (which only services reach; the gateway never exposes it). It is the one place in the TTS service that talks to the profile service, so it is
also where that service's gRPC errors become domain errors (:func:`voice_common.remote_errors.translate_error`:
NOT_FOUND with the profile service's message and resource, INVALID_ARGUMENT, FAILED_PRECONDITION, and UNAVAILABLE
for anything else), which the TTS servicer's status mapping then answers precisely.

Every call carries the tenant in the ``x-voice-tenant`` metadata key and a deadline of ``timeout_seconds``.
"""

from __future__ import annotations

import asyncio
import functools
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any, TypeVar

import numpy as np
from grpc import aio

from voice.audio.v1 import audio_pb2
from voice.profiles.v1 import generation_ingest_service_pb2 as ingest_pb
from voice.profiles.v1 import generation_ingest_service_pb2_grpc as ingest_pb_grpc
from voice.profiles.v1 import profiles_service_pb2 as pb
from voice.profiles.v1 import profiles_service_pb2_grpc as pb_grpc
from voice_client.stream_call_status import StreamCallStatuses, real_error
from voice_common.audio import AudioDecodeError, decode_linear16
from voice_common.audio.encoding import to_s16
from voice_common.audio_messages import read_linear16_stream
from voice_common.errors import FailedPrecondition, Unavailable
from voice_common.remote_errors import translate_error
from voice_common.tenancy import TENANT_METADATA_KEY
from voice_tts.prompts import ClipIdentity, ReferenceClip
from voice_tts.voices import VoiceSample

SAMPLE_RATE = 24_000
UPLOAD_CHUNK_BYTES = 64 * 1024
LIST_PAGE_SIZE = 100
DEFAULT_CONCURRENCY = 4

_TRANSCRIBED_STATES = (pb.TRANSCRIPT_STATE_PROVIDED, pb.TRANSCRIPT_STATE_MACHINE)
_LINEAR16_24K = audio_pb2.AudioFormat(
    encoding=audio_pb2.AUDIO_ENCODING_LINEAR16, sample_rate_hertz=SAMPLE_RATE, channels=1
)

T = TypeVar("T")


def sample_identity(sample: pb.Sample) -> ClipIdentity:
    """What the prompt cache key needs of a sample, from its metadata alone: the hash of its audio and its transcript
    (only a provided or machine-made one counts)."""
    text = sample.reference_text.strip()
    transcript = sample.reference_text if text and sample.transcript_state in _TRANSCRIBED_STATES else None
    return ClipIdentity(sha256=sample.audio_sha256, transcript=transcript)


class ProfileClient:
    """Reads reference clips from, and writes generations to, the profile service over an injected channel."""

    def __init__(
        self,
        channel: aio.Channel,
        timeout_seconds: float = 10.0,
        *,
        max_concurrent_downloads: int = DEFAULT_CONCURRENCY,
    ) -> None:
        if timeout_seconds <= 0:
            raise ValueError(f"timeout_seconds must be positive, got {timeout_seconds}")
        if max_concurrent_downloads < 1:
            raise ValueError(f"max_concurrent_downloads must be at least 1, got {max_concurrent_downloads}")
        self._stub: Any = pb_grpc.ProfileServiceStub(channel)
        self._ingest_stub: Any = ingest_pb_grpc.GenerationIngestServiceStub(channel)
        self._timeout = timeout_seconds
        self._max_concurrent = max_concurrent_downloads

    @staticmethod
    def _metadata(tenant: str) -> tuple[tuple[str, str], ...]:
        return ((TENANT_METADATA_KEY, tenant),)

    async def _call(self, make: Callable[[], Awaitable[T]], *, action: str, kind: str, resource_id: str) -> T:
        try:
            return await make()
        except (aio.AioRpcError, aio.UsageError) as error:
            raise translate_error(error, action=action, kind=kind, resource_id=resource_id) from None

    # -- reading ---------------------------------------------------------------------------------------------

    async def reference_clips(self, tenant: str, profile_id: str) -> tuple[str, list[ReferenceClip]]:
        """The profile's name and every sample as a 24 kHz mono clip (in the profile service's list order).

        Raises NotFound for a profile this tenant does not have and FailedPrecondition for one without samples.
        """
        metadata = self._metadata(tenant)
        response = await self._call(
            lambda: self._stub.GetProfile(
                pb.GetProfileRequest(id=profile_id), metadata=metadata, timeout=self._timeout
            ),
            action="read the profile",
            kind="profile",
            resource_id=profile_id,
        )
        name: str = response.profile.name
        samples = await self.voice_samples(tenant, profile_id)
        return name, await self.download_clips(tenant, samples)

    async def voice_samples(self, tenant: str, profile_id: str) -> list[VoiceSample]:
        """The profile's samples (metadata only: enough for the prompt cache key, see :func:`sample_identity`).

        Raises NotFound for a profile this tenant does not have and FailedPrecondition for one without samples.
        """
        samples = await self._list_samples(self._metadata(tenant), profile_id)
        if not samples:
            raise FailedPrecondition(
                f"profile {profile_id!r} has no samples yet: add a reference recording with AddSample"
            )
        return [VoiceSample(sample.profile_id, sample.id, sample_identity(sample)) for sample in samples]

    async def download_clips(self, tenant: str, samples: Sequence[VoiceSample]) -> list[ReferenceClip]:
        """Every sample's audio as a 24 kHz mono clip (downloaded a few at a time), in the given order."""
        metadata = self._metadata(tenant)
        semaphore = asyncio.Semaphore(self._max_concurrent)

        async def fetch(sample: VoiceSample) -> ReferenceClip:
            async with semaphore:
                return await self._clip(metadata, sample)

        tasks = [asyncio.ensure_future(fetch(sample)) for sample in samples]
        try:
            clips = await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        return list(clips)

    async def _list_samples(self, metadata: Sequence[tuple[str, str]], profile_id: str) -> list[pb.Sample]:
        samples: list[pb.Sample] = []
        token = ""
        while True:
            request = pb.ListSamplesRequest(profile_id=profile_id, page_size=LIST_PAGE_SIZE, page_token=token)
            page = await self._call(
                functools.partial(self._stub.ListSamples, request, metadata=metadata, timeout=self._timeout),
                action="list the profile's samples",
                kind="profile",
                resource_id=profile_id,
            )
            samples.extend(page.samples)
            token = page.next_page_token
            if not token:
                return samples

    async def _clip(self, metadata: Sequence[tuple[str, str]], sample: VoiceSample) -> ReferenceClip:
        request = pb.GetSampleAudioRequest(id=sample.sample_id, format=_LINEAR16_24K)

        async def download() -> bytes:
            call = self._stub.GetSampleAudio(request, metadata=metadata, timeout=self._timeout)
            try:
                return await read_linear16_stream(call, SAMPLE_RATE, f"sample {sample.sample_id!r}")
            finally:
                call.cancel()  # no-op once the stream ended; stops it when this reader gives up early

        data = await self._call(
            download, action="read a sample's audio", kind="sample", resource_id=sample.sample_id
        )
        try:
            audio = decode_linear16(data, SAMPLE_RATE, target_rate=SAMPLE_RATE).samples
        except AudioDecodeError as error:
            raise Unavailable(
                f"the profile service sent unusable audio for sample {sample.sample_id!r}: {error}"
            ) from None
        identity = sample.identity
        return ReferenceClip(
            audio=np.asarray(audio, dtype=np.float32), transcript=identity.transcript, sha256=identity.sha256
        )

    # -- writing ---------------------------------------------------------------------------------------------

    async def store_generation(
        self,
        tenant: str,
        *,
        profile_id: str | None,
        text: str,
        language: str,
        seed: int,
        parameters: dict[str, float],
        model_id: str,
        pcm: np.ndarray,
        preview: bool,
    ) -> str:
        """Store float32 24 kHz mono speech in the tenant's generation history; returns the generation's id.

        ``profile_id`` None (or empty) stores a generation made from an inline reference. The upload carries a
        request id of its own, so that sending it again (a retry after a lost answer) cannot store a copy.
        """
        data = to_s16(pcm).tobytes()
        samples = len(data) // 2
        generation_metadata = ingest_pb.GenerationMetadata(
            profile_id=profile_id or "",
            text=text,
            language=language,
            seed=seed,
            parameters=parameters,
            model_id=model_id,
            format=_LINEAR16_24K,
            duration_seconds=samples / SAMPLE_RATE,
            preview=preview,
            request_id=uuid.uuid4().hex,
        )

        def requests() -> Iterator[ingest_pb.CreateGenerationRequest]:
            yield ingest_pb.CreateGenerationRequest(metadata=generation_metadata)
            for start in range(0, len(data), UPLOAD_CHUNK_BYTES):
                yield ingest_pb.CreateGenerationRequest(chunk=data[start : start + UPLOAD_CHUNK_BYTES])

        metadata = self._metadata(tenant)

        async def upload() -> Any:
            call = self._ingest_stub.CreateGeneration(requests(), metadata=metadata, timeout=self._timeout)
            # A refusal that comes while the audio is still being sent (the profile deleted meanwhile, a limit) can
            # reach this side as grpc.aio's INTERNAL "Internal error from Core"; the recorder keeps the real answer.
            statuses = StreamCallStatuses(call)
            try:
                return await call
            except aio.AioRpcError as error:
                raise await real_error(error, statuses) from None

        response = await self._call(
            upload,
            action="store the generation",
            kind="profile",
            resource_id=profile_id or "",
        )
        generation_id: str = response.generation.id
        return generation_id
