"""``AsyncVoiceClient``: voice_client.client's ``VoiceClient`` for asyncio, method for method; calls are awaited,
lists and streams are async iterators, and request streams (duplex text, live audio, uploads) may be async
iterables.

Resources come back as the API's own messages (``Profile``, ``Sample``, ``Generation``, ``ApiKey``,
``ModelStatus``, ``TranscribeResponse``...): typed (generated .pyi), exactly the contract, and printable as the API's
JSON with ``google.protobuf.json_format``. What the client assembles itself (a whole synthesis, a download, progress)
is a small dataclass of voice_client.messages.
"""

from __future__ import annotations

import mimetypes
import os
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from google.protobuf import field_mask_pb2

from voice.asr.v1 import asr_service_pb2 as asr_pb
from voice.audio.v1 import audio_pb2
from voice.auth.v1 import api_key_service_pb2 as keys_pb
from voice.profiles.v1 import profiles_service_pb2 as pb
from voice.tts.v1 import tts_service_pb2 as tts_pb
from voice_client.async_calls import AsyncCalls, AsyncResponseStream, AsyncUploadSource, as_async_iterator
from voice_client.connection import Connection, resolve_connection
from voice_client.errors import NotFound
from voice_client.messages import (
    CHUNK_BYTES,
    AudioSource,
    DownloadedAudio,
    Encoding,
    Progress,
    ProgressCallback,
    ReferenceVoice,
    SynthesisResult,
    audio_format,
    duration,
    expected_bytes,
    file_name_of,
    is_resource_id,
    linear16_seconds,
    read_all,
    recognition_options,
    reference_voice,
    synthesis_config,
    timestamp,
)
from voice_client.retrying import Keep, RetryPolicy

PROFILES = "/voice.profiles.v1.ProfileService/"
TTS = "/voice.tts.v1.TtsService/"
ASR = "/voice.asr.v1.AsrService/"
KEYS = "/voice.auth.v1.ApiKeyService/"
Destination = str | os.PathLike[str] | BinaryIO


class AsyncVoiceClient:
    """A connection to the gateway. ``target``, ``api_key``: arguments, else ``VOICE_TARGET`` / ``VOICE_API_KEY``,
    else 127.0.0.1:50051 and the key ``make run`` saved (voice_client.connection). ``timeout``: seconds for a whole
    call, retries included (None: no limit). Use as a context manager, or ``close()``."""

    def __init__(
        self,
        target: str | None = None,
        api_key: str | None = None,
        *,
        tls: bool = False,
        ca_file: str | os.PathLike[str] | None = None,
        data_dir: str | os.PathLike[str] | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
    ) -> None:
        self.connection: Connection = resolve_connection(
            target, api_key, tls=tls, ca_file=ca_file, data_dir=data_dir
        )
        self._channel = self.connection.async_channel()
        self._owns_channel = True
        self._bind(AsyncCalls(self._channel, self.connection.metadata, retry or RetryPolicy(), timeout))

    def _bind(self, calls: AsyncCalls) -> None:
        self._calls = calls
        self.profiles = AsyncProfiles(calls)
        self.samples = AsyncSamples(calls)
        self.generations = AsyncGenerations(calls)
        self.tts = AsyncTts(calls, self.profiles)
        self.asr = AsyncAsr(calls)
        self.keys = AsyncApiKeys(calls)

    def with_options(
        self,
        *,
        retry: RetryPolicy | None = None,
        timeout: float | Keep | None = Keep.KEEP,
        api_key: str | None = None,
    ) -> AsyncVoiceClient:
        """A view on the same connection with another retry policy, timeout (None: no limit) or API key, for some
        calls; what is not given stays as it is. Closing the view closes nothing. ``api_key`` serves callers who
        each bring their own key over one channel (the OpenAI-compatible HTTP face: one view per request)."""
        view = object.__new__(AsyncVoiceClient)
        view.connection = (
            self.connection
            if api_key is None
            else replace(self.connection, api_key=api_key, key_source="the api_key argument of with_options")
        )
        view._channel = self._channel
        view._owns_channel = False
        view._bind(
            self._calls.with_options(
                retry or self._calls.retry,
                self._calls.timeout if timeout is Keep.KEEP else timeout,
                view.connection.metadata,
            )
        )
        return view

    @property
    def target(self) -> str:
        return self.connection.target

    async def close(self) -> None:
        if self._owns_channel:
            await self._channel.close(None)

    async def __aenter__(self) -> AsyncVoiceClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        await self.close()


class AsyncProfiles:
    def __init__(self, calls: AsyncCalls) -> None:
        self._calls = calls

    async def create(
        self,
        name: str,
        *,
        description: str = "",
        language: str = "",
        temporary: bool = False,
        ttl: float | timedelta | None = None,
    ) -> pb.Profile:
        request = pb.CreateProfileRequest(
            name=name, description=description, language=language, temporary=temporary
        )
        if ttl is not None:
            request.ttl.CopyFrom(duration(ttl))
        response = await self._calls.unary(
            PROFILES + "CreateProfile", request, pb.CreateProfileResponse, repeatable=False
        )
        return response.profile

    async def get(self, profile_id: str) -> pb.Profile:
        request = pb.GetProfileRequest(id=profile_id)
        return (
            await self._calls.unary(PROFILES + "GetProfile", request, pb.GetProfileResponse, repeatable=True)
        ).profile

    async def list_page(
        self, *, page_size: int = 0, page_token: str = "", name_contains: str = "", language: str = ""
    ) -> pb.ListProfilesResponse:
        """One page (``next_page_token`` empty on the last)."""
        request = pb.ListProfilesRequest(
            page_size=page_size, page_token=page_token, name_contains=name_contains, language=language
        )
        return await self._calls.unary(
            PROFILES + "ListProfiles", request, pb.ListProfilesResponse, repeatable=True
        )

    async def list(
        self, *, name_contains: str = "", language: str = "", page_size: int = 0
    ) -> AsyncIterator[pb.Profile]:
        """Every profile of the tenant (or those matching), page after page as the iteration goes."""
        token = ""
        while True:
            page = await self.list_page(
                page_size=page_size, page_token=token, name_contains=name_contains, language=language
            )
            for profile in page.profiles:
                yield profile
            token = page.next_page_token
            if not token:
                return

    async def find(self, name: str) -> pb.Profile:
        """The profile called ``name`` (names are unique per tenant, compared without case); NotFound if none."""
        async for profile in self.list(name_contains=name):
            if profile.name.casefold() == name.casefold():
                return profile
        raise NotFound(f"no profile is named {name!r}")

    async def resolve(self, name_or_id: str) -> pb.Profile:
        """By id when the text is spelt like one (a UUID), else by name."""
        return await (self.get(name_or_id) if is_resource_id(name_or_id) else self.find(name_or_id))

    async def update(
        self,
        profile_id: str,
        *,
        name: str | None = None,
        description: str | None = None,
        language: str | None = None,
        expire_time: datetime | None = None,
        permanent: bool = False,
    ) -> pb.Profile:
        """Writes the fields given; ``permanent=True`` saves a temporary profile (clears its expiry)."""
        profile = pb.Profile(id=profile_id)
        paths: list[str] = []
        if name is not None:
            profile.name, paths = name, [*paths, "name"]
        if description is not None:
            profile.description, paths = description, [*paths, "description"]
        if language is not None:
            profile.language, paths = language, [*paths, "language"]
        if expire_time is not None and permanent:
            raise ValueError("give expire_time or permanent=True, not both")
        if expire_time is not None:
            profile.expire_time.CopyFrom(timestamp(expire_time))
        if expire_time is not None or permanent:
            paths.append("expire_time")
        request = pb.UpdateProfileRequest(profile=profile, update_mask=field_mask_pb2.FieldMask(paths=paths))
        return (
            await self._calls.unary(
                PROFILES + "UpdateProfile", request, pb.UpdateProfileResponse, repeatable=True
            )
        ).profile

    async def delete(self, profile_id: str, *, delete_generations: bool = False) -> pb.DeleteProfileResponse:
        request = pb.DeleteProfileRequest(id=profile_id, delete_generations=delete_generations)
        return await self._calls.unary(
            PROFILES + "DeleteProfile", request, pb.DeleteProfileResponse, repeatable=False
        )

    async def export_archive(
        self, profile_id: str, destination: Destination, *, progress: ProgressCallback | None = None
    ) -> pb.ExportHeader:
        """Writes the profile's tar archive to a path or binary file; returns its suggested name and type."""
        stream = await self._calls.server_stream(
            PROFILES + "ExportProfile", pb.ExportProfileRequest(id=profile_id), pb.ExportProfileResponse
        )
        header = pb.ExportHeader()
        with _Sink(destination) as sink:
            async for response in stream:
                if response.WhichOneof("payload") == "header":
                    header = response.header
                    continue
                sink.write(response.chunk)
                if progress is not None:
                    progress(Progress(sink.size))
        return header

    async def import_archive(
        self,
        source: AudioSource | AsyncIterable[bytes],
        *,
        name: str = "",
        request_id: str | None = None,
        chunk_bytes: int = CHUNK_BYTES,
        progress: ProgressCallback | None = None,
    ) -> pb.ImportProfileResponse:
        """An archive made by ``export_archive`` (path, bytes or binary file), uploaded with a request id, so a
        retry cannot import twice."""
        upload = AsyncUploadSource(source, chunk_bytes)
        metadata = pb.ImportProfileMetadata(name=name, request_id=request_id or str(uuid.uuid4()))

        async def requests() -> AsyncIterator[pb.ImportProfileRequest]:
            yield pb.ImportProfileRequest(metadata=metadata)
            async for chunk in upload.chunks(progress):
                yield pb.ImportProfileRequest(chunk=chunk)

        return await self._calls.client_stream(
            PROFILES + "ImportProfile",
            requests,
            pb.ImportProfileResponse,
            repeatable=True,
            replayable=upload.rewindable,
        )


class AsyncSamples:
    def __init__(self, calls: AsyncCalls) -> None:
        self._calls = calls

    async def upload(
        self,
        profile_id: str,
        source: AudioSource | AsyncIterable[bytes],
        *,
        reference_text: str | None = None,
        file_name: str | None = None,
        mime_type: str | None = None,
        request_id: str | None = None,
        chunk_bytes: int = CHUNK_BYTES,
        progress: ProgressCallback | None = None,
    ) -> pb.Sample:
        """Adds a recording (path, bytes or binary file) to a profile, in chunks, telling ``progress`` after each.
        Without ``reference_text`` the ASR service transcribes it. Sent with a request id (a new UUID unless
        given), so retries never add it twice."""
        upload = AsyncUploadSource(source, chunk_bytes)
        name = (
            file_name
            if file_name is not None
            else file_name_of(source)
            if not isinstance(source, AsyncIterable)
            else ""
        )
        metadata = pb.SampleMetadata(
            profile_id=profile_id,
            file_name=name,
            mime_type=mime_type if mime_type is not None else (mimetypes.guess_type(name)[0] or ""),
            request_id=request_id or str(uuid.uuid4()),
        )
        if reference_text is not None:
            metadata.reference_text = reference_text

        async def requests() -> AsyncIterator[pb.AddSampleRequest]:
            yield pb.AddSampleRequest(metadata=metadata)
            async for chunk in upload.chunks(progress):
                yield pb.AddSampleRequest(chunk=chunk)

        return (
            await self._calls.client_stream(
                PROFILES + "AddSample",
                requests,
                pb.AddSampleResponse,
                repeatable=True,
                replayable=upload.rewindable,
            )
        ).sample

    async def list(self, profile_id: str, *, page_size: int = 0) -> AsyncIterator[pb.Sample]:
        token = ""
        while True:
            request = pb.ListSamplesRequest(profile_id=profile_id, page_size=page_size, page_token=token)
            page = await self._calls.unary(
                PROFILES + "ListSamples", request, pb.ListSamplesResponse, repeatable=True
            )
            for sample in page.samples:
                yield sample
            token = page.next_page_token
            if not token:
                return

    async def update_text(self, sample_id: str, reference_text: str) -> pb.Sample:
        """Sets what the sample says (marked PROVIDED; an empty text asks for a machine transcript again)."""
        request = pb.UpdateSampleRequest(
            sample=pb.Sample(id=sample_id, reference_text=reference_text),
            update_mask=field_mask_pb2.FieldMask(paths=["reference_text"]),
        )
        return (
            await self._calls.unary(
                PROFILES + "UpdateSample", request, pb.UpdateSampleResponse, repeatable=True
            )
        ).sample

    async def delete(self, sample_id: str) -> None:
        await self._calls.unary(
            PROFILES + "DeleteSample",
            pb.DeleteSampleRequest(id=sample_id),
            pb.DeleteSampleResponse,
            repeatable=False,
        )

    async def download(
        self,
        sample_id: str,
        destination: Destination | None = None,
        *,
        encoding: Encoding = "wav",
        sample_rate_hertz: int = 0,
        original: bool = False,
        progress: ProgressCallback | None = None,
    ) -> DownloadedAudio:
        """The sample's audio (normalised, in ``encoding``; or the upload byte for byte with ``original``),
        written to ``destination`` (a path or binary file) or, without one, returned in ``data``."""
        request = pb.GetSampleAudioRequest(
            id=sample_id, format=audio_format(encoding, sample_rate_hertz), original=original
        )
        stream = await self._calls.server_stream(
            PROFILES + "GetSampleAudio", request, pb.GetSampleAudioResponse
        )
        return await _receive_audio(stream, destination, progress)

    async def download_url(
        self, sample_id: str, *, original: bool = False, ttl: float | timedelta | None = None
    ) -> pb.GetDownloadUrlResponse:
        request = pb.GetDownloadUrlRequest(sample_id=sample_id, original=original)
        if ttl is not None:
            request.ttl.CopyFrom(duration(ttl))
        return await self._calls.unary(
            PROFILES + "GetDownloadUrl", request, pb.GetDownloadUrlResponse, repeatable=True
        )


class AsyncGenerations:
    """The history of what TTS made (``store=True``)."""

    def __init__(self, calls: AsyncCalls) -> None:
        self._calls = calls

    async def list(
        self,
        *,
        profile_id: str = "",
        text_contains: str = "",
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        page_size: int = 0,
    ) -> AsyncIterator[pb.Generation]:
        """Newest first as the server pages them; ``[created_after, created_before)``."""
        token = ""
        while True:
            request = pb.ListGenerationsRequest(
                page_size=page_size, page_token=token, profile_id=profile_id, text_contains=text_contains
            )
            if created_after is not None:
                request.create_time_start.CopyFrom(timestamp(created_after))
            if created_before is not None:
                request.create_time_end.CopyFrom(timestamp(created_before))
            page = await self._calls.unary(
                PROFILES + "ListGenerations", request, pb.ListGenerationsResponse, repeatable=True
            )
            for generation in page.generations:
                yield generation
            token = page.next_page_token
            if not token:
                return

    async def get(self, generation_id: str) -> pb.Generation:
        request = pb.GetGenerationRequest(id=generation_id)
        return (
            await self._calls.unary(
                PROFILES + "GetGeneration", request, pb.GetGenerationResponse, repeatable=True
            )
        ).generation

    async def delete(self, generation_id: str) -> None:
        request = pb.DeleteGenerationRequest(id=generation_id)
        await self._calls.unary(
            PROFILES + "DeleteGeneration", request, pb.DeleteGenerationResponse, repeatable=False
        )

    async def stats(
        self,
        *,
        profile_id: str = "",
        created_after: datetime | None = None,
        created_before: datetime | None = None,
    ) -> pb.GetGenerationStatsResponse:
        request = pb.GetGenerationStatsRequest(profile_id=profile_id)
        if created_after is not None:
            request.create_time_start.CopyFrom(timestamp(created_after))
        if created_before is not None:
            request.create_time_end.CopyFrom(timestamp(created_before))
        return await self._calls.unary(
            PROFILES + "GetGenerationStats", request, pb.GetGenerationStatsResponse, repeatable=True
        )

    async def download(
        self,
        generation_id: str,
        destination: Destination | None = None,
        *,
        encoding: Encoding = "wav",
        sample_rate_hertz: int = 0,
        progress: ProgressCallback | None = None,
    ) -> DownloadedAudio:
        request = pb.GetGenerationAudioRequest(
            id=generation_id, format=audio_format(encoding, sample_rate_hertz)
        )
        stream = await self._calls.server_stream(
            PROFILES + "GetGenerationAudio", request, pb.GetGenerationAudioResponse
        )
        return await _receive_audio(stream, destination, progress)

    async def download_url(
        self, generation_id: str, *, ttl: float | timedelta | None = None
    ) -> pb.GetDownloadUrlResponse:
        request = pb.GetDownloadUrlRequest(generation_id=generation_id)
        if ttl is not None:
            request.ttl.CopyFrom(duration(ttl))
        return await self._calls.unary(
            PROFILES + "GetDownloadUrl", request, pb.GetDownloadUrlResponse, repeatable=True
        )


class AsyncSynthesisStream:
    """Audio as the model makes it: iterate for ``bytes`` chunks (concatenated: the whole file). ``format`` is set
    once the stream starts (the first chunk), ``summary`` once it ends; ``cancel()`` stops the synthesis (nothing
    is stored). Use as a context manager to cancel on leaving early."""

    def __init__(
        self,
        responses: AsyncResponseStream[tts_pb.SynthesizeStreamResponse]
        | AsyncResponseStream[tts_pb.SynthesizeDuplexResponse],
        progress: ProgressCallback | None,
    ) -> None:
        self._responses = responses
        self._progress = progress
        self.format: audio_pb2.AudioFormat | None = None
        self.summary: tts_pb.SynthesisSummary | None = None
        self.received_bytes = 0

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[bytes]:
        async for response in self._responses:
            kind = response.WhichOneof("payload")
            if kind == "start":
                self.format = response.start.format
            elif kind == "summary":
                self.summary = response.summary
            elif kind == "audio":
                self.received_bytes += len(response.audio.data)
                if self._progress is not None:
                    self._progress(
                        Progress(
                            self.received_bytes, None, linear16_seconds(self.received_bytes, self.format)
                        )
                    )
                yield response.audio.data

    async def read_all(self) -> bytes:
        return b"".join([chunk async for chunk in self])

    def cancel(self) -> None:
        self._responses.cancel()

    async def __aenter__(self) -> AsyncSynthesisStream:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.cancel()


class AsyncTts:
    """Speech in a cloned voice. ``voice``: a profile id, a profile name (looked up: one more call), or a
    ``ReferenceVoice`` (a clip sent with the request). Options: ``language`` (zh en ja ko de fr ru pt es it, or
    auto), ``seed``, the sampling parameters, the output ``encoding`` (wav, flac, mp3, ogg_opus, linear16) and
    ``sample_rate_hertz`` (0: 24000), ``store`` in the history, ``speed`` (0.25-4.0, the voice keeps its pitch)."""

    def __init__(self, calls: AsyncCalls, profiles: AsyncProfiles) -> None:
        self._calls = calls
        self._profiles = profiles

    async def voice(self, voice: str | ReferenceVoice) -> tts_pb.Voice:
        if isinstance(voice, ReferenceVoice):
            return reference_voice(voice)  # reads a path or file: local, and small (a reference clip)
        profile_id = voice if is_resource_id(voice) else (await self._profiles.find(voice)).id
        return tts_pb.Voice(profile_id=profile_id)

    async def _config(
        self,
        voice: str | ReferenceVoice,
        language: str,
        seed: int | None,
        temperature: float | None,
        top_k: int | None,
        top_p: float | None,
        repetition_penalty: float | None,
        max_new_tokens: int | None,
        encoding: Encoding,
        sample_rate_hertz: int,
        store: bool,
        speed: float | None,
    ) -> tts_pb.SynthesisConfig:
        return synthesis_config(
            await self.voice(voice),
            language=language,
            seed=seed,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            repetition_penalty=repetition_penalty,
            max_new_tokens=max_new_tokens,
            encoding=encoding,
            sample_rate_hertz=sample_rate_hertz,
            store=store,
            speed=speed,
        )

    async def synthesize(
        self,
        text: str,
        voice: str | ReferenceVoice,
        *,
        language: str = "",
        seed: int | None = None,
        temperature: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        repetition_penalty: float | None = None,
        max_new_tokens: int | None = None,
        encoding: Encoding = "wav",
        sample_rate_hertz: int = 0,
        store: bool = False,
        speed: float | None = None,
    ) -> SynthesisResult:
        """The whole audio at once (a stored one is not retried after UNAVAILABLE: it could be stored twice)."""
        config = await self._config(
            voice, language, seed, temperature, top_k, top_p, repetition_penalty, max_new_tokens,
            encoding, sample_rate_hertz, store, speed,
        )  # fmt: skip
        response = await self._calls.unary(
            TTS + "Synthesize",
            tts_pb.SynthesizeRequest(config=config, text=text),
            tts_pb.SynthesizeResponse,
            repeatable=not store,
        )
        return SynthesisResult(response.audio, response.format, response.summary)

    async def stream(
        self,
        text: str,
        voice: str | ReferenceVoice,
        *,
        language: str = "",
        seed: int | None = None,
        temperature: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        repetition_penalty: float | None = None,
        max_new_tokens: int | None = None,
        encoding: Encoding = "wav",
        sample_rate_hertz: int = 0,
        store: bool = False,
        speed: float | None = None,
        progress: ProgressCallback | None = None,
    ) -> AsyncSynthesisStream:
        """Chunks of audio as they are made (the first after about 0.3 s of audio is ready)."""
        config = await self._config(
            voice, language, seed, temperature, top_k, top_p, repetition_penalty, max_new_tokens,
            encoding, sample_rate_hertz, store, speed,
        )  # fmt: skip
        responses = await self._calls.server_stream(
            TTS + "SynthesizeStream",
            tts_pb.SynthesizeStreamRequest(config=config, text=text),
            tts_pb.SynthesizeStreamResponse,
        )
        return AsyncSynthesisStream(responses, progress)

    async def duplex(
        self,
        texts: AsyncIterable[str] | Iterable[str],
        voice: str | ReferenceVoice,
        *,
        language: str = "",
        seed: int | None = None,
        temperature: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        repetition_penalty: float | None = None,
        max_new_tokens: int | None = None,
        encoding: Encoding = "wav",
        sample_rate_hertz: int = 0,
        store: bool = False,
        speed: float | None = None,
        progress: ProgressCallback | None = None,
    ) -> AsyncSynthesisStream:
        """Speaks text that arrives in pieces (an LLM's tokens): audio comes back as soon as a sentence is
        complete; the end of ``texts`` speaks the rest. gRPC reads ``texts`` on a thread of its own."""
        config = await self._config(
            voice, language, seed, temperature, top_k, top_p, repetition_penalty, max_new_tokens,
            encoding, sample_rate_hertz, store, speed,
        )  # fmt: skip
        responses = await self._calls.duplex(
            TTS + "SynthesizeDuplex",
            [tts_pb.SynthesizeDuplexRequest(config=config)],
            (tts_pb.SynthesizeDuplexRequest(text=text) async for text in as_async_iterator(texts)),
            tts_pb.SynthesizeDuplexResponse,
        )
        return AsyncSynthesisStream(responses, progress)

    async def model_status(self) -> tts_pb.ModelStatus:
        return (
            await self._calls.unary(
                TTS + "GetModelStatus",
                tts_pb.GetModelStatusRequest(),
                tts_pb.GetModelStatusResponse,
                repeatable=True,
            )
        ).status

    async def load_model(self, model: str = "", *, device: str = "", dtype: str = "") -> tts_pb.ModelStatus:
        """Loads (or switches to) a model: a hub id, ``0.6B``/``1.7B``, or a directory; admin scope."""
        request = tts_pb.LoadModelRequest(model=model, device=device, dtype=dtype)
        return (
            await self._calls.unary(TTS + "LoadModel", request, tts_pb.LoadModelResponse, repeatable=False)
        ).status

    async def unload_model(self) -> tts_pb.ModelStatus:
        return (
            await self._calls.unary(
                TTS + "UnloadModel", tts_pb.UnloadModelRequest(), tts_pb.UnloadModelResponse, repeatable=True
            )
        ).status


class AsyncLiveTranscription:
    """Results of a live transcription as they come: iterate for ``StreamingResult`` (``is_final`` tells interim
    from final); ``summary`` is set at the end; ``cancel()`` stops it."""

    def __init__(self, responses: AsyncResponseStream[asr_pb.StreamingTranscribeResponse]) -> None:
        self._responses = responses
        self.summary: asr_pb.StreamingSummary | None = None

    def __aiter__(self) -> AsyncIterator[asr_pb.StreamingResult]:
        return self._results()

    async def _results(self) -> AsyncIterator[asr_pb.StreamingResult]:
        async for response in self._responses:
            if response.WhichOneof("payload") == "summary":
                self.summary = response.summary
            else:
                yield response.result

    async def finals(self) -> AsyncIterator[asr_pb.StreamingResult]:
        async for result in self:
            if result.is_final:
                yield result

    def cancel(self) -> None:
        self._responses.cancel()

    async def __aenter__(self) -> AsyncLiveTranscription:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.cancel()


class AsyncAsr:
    """Speech to text. Options: ``language`` (a hint; empty or auto detects it on multilingual models),
    ``translate`` (to English), ``word_timestamps``, ``vad_filter``, ``beam_size``, ``initial_prompt``,
    ``hotwords``."""

    def __init__(self, calls: AsyncCalls) -> None:
        self._calls = calls

    async def _transcribe(self, request: asr_pb.TranscribeRequest) -> asr_pb.TranscribeResponse:
        return await self._calls.unary(
            ASR + "Transcribe", request, asr_pb.TranscribeResponse, repeatable=True
        )

    async def transcribe(
        self,
        audio: AudioSource,
        *,
        language: str = "",
        translate: bool = False,
        word_timestamps: bool = False,
        vad_filter: bool | None = None,
        beam_size: int | None = None,
        initial_prompt: str = "",
        hotwords: str = "",
        temperature: float | None = None,
    ) -> asr_pb.TranscribeResponse:
        """A recording (path, bytes or binary file) in any format a sample may have, sent in one message.
        ``temperature``: where Whisper's temperature schedule starts, 0 (greedy first, the default) to 1."""
        options = recognition_options(
            language=language, translate=translate, word_timestamps=word_timestamps, vad_filter=vad_filter,
            beam_size=beam_size, initial_prompt=initial_prompt, hotwords=hotwords, temperature=temperature,
        )  # fmt: skip
        return await self._transcribe(asr_pb.TranscribeRequest(content=read_all(audio), options=options))

    async def transcribe_sample(
        self, sample_id: str, *, language: str = "", word_timestamps: bool = False, translate: bool = False
    ) -> asr_pb.TranscribeResponse:
        options = recognition_options(language=language, word_timestamps=word_timestamps, translate=translate)
        return await self._transcribe(asr_pb.TranscribeRequest(sample_id=sample_id, options=options))

    async def transcribe_generation(
        self,
        generation_id: str,
        *,
        language: str = "",
        word_timestamps: bool = False,
        translate: bool = False,
    ) -> asr_pb.TranscribeResponse:
        options = recognition_options(language=language, word_timestamps=word_timestamps, translate=translate)
        return await self._transcribe(asr_pb.TranscribeRequest(generation_id=generation_id, options=options))

    async def live(
        self,
        audio: AsyncIterable[bytes] | Iterable[bytes],
        *,
        encoding: Encoding = "linear16",
        sample_rate_hertz: int = 16000,
        interim_results: bool = True,
        language: str = "",
        translate: bool = False,
        word_timestamps: bool = False,
        beam_size: int | None = None,
        initial_prompt: str = "",
        hotwords: str = "",
        progress: ProgressCallback | None = None,
    ) -> AsyncLiveTranscription:
        """Live recognition of audio that arrives in pieces (raw 16-bit PCM at ``sample_rate_hertz``, or a WAV,
        FLAC, Ogg Opus or MP3 stream): interim and final results while it keeps coming; the end of ``audio``
        flushes the rest. ``progress`` counts the bytes (and LINEAR16 seconds) sent. gRPC reads ``audio`` on a
        thread of its own."""
        stream_format = audio_format(encoding, sample_rate_hertz)
        config = asr_pb.StreamingConfig(
            format=stream_format,
            options=recognition_options(
                language=language,
                translate=translate,
                word_timestamps=word_timestamps,
                beam_size=beam_size,
                initial_prompt=initial_prompt,
                hotwords=hotwords,
            ),
            interim_results=interim_results,
        )

        async def pieces() -> AsyncIterator[asr_pb.StreamingTranscribeRequest]:
            sent = 0
            async for piece in as_async_iterator(audio):
                sent += len(piece)
                yield asr_pb.StreamingTranscribeRequest(audio=piece)
                if progress is not None:
                    progress(Progress(sent, None, linear16_seconds(sent, stream_format)))

        responses = await self._calls.duplex(
            ASR + "StreamingTranscribe",
            [asr_pb.StreamingTranscribeRequest(config=config)],
            pieces(),
            asr_pb.StreamingTranscribeResponse,
        )
        return AsyncLiveTranscription(responses)

    async def model_status(self) -> asr_pb.ModelStatus:
        return (
            await self._calls.unary(
                ASR + "GetModelStatus",
                asr_pb.GetModelStatusRequest(),
                asr_pb.GetModelStatusResponse,
                repeatable=True,
            )
        ).status

    async def load_model(
        self, model: str = "", *, device: str = "", compute_type: str = ""
    ) -> asr_pb.ModelStatus:
        request = asr_pb.LoadModelRequest(model=model, device=device, compute_type=compute_type)
        return (
            await self._calls.unary(ASR + "LoadModel", request, asr_pb.LoadModelResponse, repeatable=False)
        ).status

    async def unload_model(self) -> asr_pb.ModelStatus:
        return (
            await self._calls.unary(
                ASR + "UnloadModel", asr_pb.UnloadModelRequest(), asr_pb.UnloadModelResponse, repeatable=True
            )
        ).status


class AsyncApiKeys:
    """The tenant's API keys (an ``admin`` key is needed)."""

    def __init__(self, calls: AsyncCalls) -> None:
        self._calls = calls

    async def create(
        self,
        name: str,
        scopes: Iterable[str],
        *,
        requests_per_second: float = 0,
        burst: int = 0,
        max_concurrent_streams: int = 0,
        ttl: float | timedelta | None = None,
    ) -> keys_pb.CreateApiKeyResponse:
        """``secret`` in the answer is the whole key, shown this once. Limits of 0 take the gateway's defaults."""
        request = keys_pb.CreateApiKeyRequest(
            name=name,
            scopes=list(scopes),
            rate_limits=keys_pb.RateLimits(
                requests_per_second=requests_per_second,
                burst=burst,
                max_concurrent_streams=max_concurrent_streams,
            ),
        )
        if ttl is not None:
            request.ttl.CopyFrom(duration(ttl))
        return await self._calls.unary(
            KEYS + "CreateApiKey", request, keys_pb.CreateApiKeyResponse, repeatable=False
        )

    async def list(self, *, include_inactive: bool = False) -> list[keys_pb.ApiKey]:
        request = keys_pb.ListApiKeysRequest(include_inactive=include_inactive)
        response = await self._calls.unary(
            KEYS + "ListApiKeys", request, keys_pb.ListApiKeysResponse, repeatable=True
        )
        return list(response.api_keys)

    async def revoke(self, key_id: str) -> keys_pb.ApiKey:
        """Permanent; revoking again returns the record with the first revocation time (so retries are safe)."""
        request = keys_pb.RevokeApiKeyRequest(id=key_id)
        return (
            await self._calls.unary(
                KEYS + "RevokeApiKey", request, keys_pb.RevokeApiKeyResponse, repeatable=True
            )
        ).api_key


class _Sink:
    """Where a download goes: a path (opened, closed, removed when the download fails) or a binary file."""

    def __init__(self, destination: Destination | None) -> None:
        self._destination = destination
        self._file: BinaryIO | None = None
        self._parts: list[bytes] = []
        self.size = 0

    def __enter__(self) -> _Sink:
        if isinstance(self._destination, str | os.PathLike):
            self._file = Path(self._destination).open("wb")
        elif self._destination is not None:
            self._file = self._destination
        return self

    def write(self, data: bytes) -> None:
        self.size += len(data)
        if self._file is not None:
            self._file.write(data)
        else:
            self._parts.append(data)

    def data(self) -> bytes:
        return b"".join(self._parts)

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if isinstance(self._destination, str | os.PathLike) and self._file is not None:
            self._file.close()
            if error is not None:
                Path(self._destination).unlink(missing_ok=True)


async def _receive_audio(
    stream: AsyncResponseStream[pb.GetSampleAudioResponse]
    | AsyncResponseStream[pb.GetGenerationAudioResponse],
    destination: Destination | None,
    progress: ProgressCallback | None,
) -> DownloadedAudio:
    header = pb.AudioStreamHeader()
    with _Sink(destination) as sink:
        async for response in stream:
            if response.WhichOneof("payload") == "header":
                header = response.header
                continue
            sink.write(response.chunk.data)
            if progress is not None:
                progress(Progress(sink.size, expected_bytes(header)))
    return DownloadedAudio(header.format, header.mime_type, header.duration_seconds, sink.size, sink.data())
