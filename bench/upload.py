"""AddSample of a 5-minute studio recording, end to end over gRPC, against a direct put of the same bytes.

The recording is ``speechlike(300, rate=48000)`` encoded as mono 16-bit PCM WAV at 48 kHz (about 28.8 MB). One
AddSample streams it in 64 KiB chunks to the profile service process and waits for the answer (the service
decodes and normalises it, stores the original and the normalised audio, and commits the row); the baseline
writes the same bytes once into the same store (same directory, or same S3 bucket on the same moto server) with
voice_common's adapter, as the service does. Runs alternate AddSample / put; each figure is a median.

When a ratio misses its goal (or with ``--breakdown``), :func:`breakdown` times the parts in-process with the
functions the service calls: the bare gRPC transfer (to the echo server's Drain method), ``prepare_sample``,
``store.put`` of each object, and the service's overlap of the original's put with the decode.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import grpc
from grpc import aio

from bench.common import BenchError, Figure, format_value, median, render_table
from bench.echo_server import DRAIN_METHOD
from bench.services import CONFIG_TITLES, EchoServer, ProfileService, describe_rpc_error, tenant_metadata
from voice.profiles.v1 import profiles_service_pb2 as pb
from voice.profiles.v1 import profiles_service_pb2_grpc as pb_grpc
from voice_common.object_store import ObjectStore
from voice_profiles.app import ProfilesApp
from voice_profiles.domain.samples import SampleUpload, chunked, prepare_sample
from voice_profiles.settings import ProfilesSettings
from voice_testing.media_files import encode_file, speechlike

CHUNK_BYTES = 64 * 1024
RATE = 48000
SECONDS = 300.0
FALLBACK_SECONDS = 299.0
GOAL_RATIO = 1.5
STUDIO_TEXT = "A five minute studio recording."
STUDIO_FILE = "studio.wav"
CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
]


@dataclass
class Recording:
    seconds: float
    data: bytes
    note: str = ""

    @property
    def description(self) -> str:
        text = (
            f"{format_value(self.seconds)} s speech-like signal, mono 16-bit PCM WAV at {RATE // 1000} kHz, "
            f"{len(self.data) / 1e6:.1f} MB (a studio recording)"
        )
        return f"{text}; {self.note}" if self.note else text


def make_recording(seconds: float = SECONDS, note: str = "") -> Recording:
    return Recording(seconds, encode_file(speechlike(seconds, rate=RATE), RATE, "wav"), note)


class TooLong(Exception):
    """The service rejected the recording as longer than its limit."""


@dataclass
class Breakdown:
    transfer_s: float  # client streams the chunks to a bare grpc.aio server that joins them
    prepare_s: float  # prepare_sample: decode, checks, analysis, normalised WAV
    put_original_s: float  # store.put of the upload
    put_normalized_s: float  # store.put of the normalised WAV
    normalized_bytes: int
    sha256_s: float  # hash of the normalised WAV (AddSample records it)
    overlapped_s: float  # put(original) concurrently with prepare -> put(normalised), as _store_objects does
    sequential_s: float  # prepare -> put(original) -> put(normalised), one after the other
    domain_add_s: float  # SampleManager.add in this process (no gRPC): read, store, commit


@dataclass
class UploadResult:
    config: str
    recording: Recording
    add_sample_s: list[float] = field(default_factory=list)
    # Until the client had handed its last chunk to gRPC (flow control keeps it close to the server's receipt).
    streamed_s: list[float] = field(default_factory=list)
    put_s: list[float] = field(default_factory=list)
    stored_duration_s: float = 0.0
    leftovers: list[str] = field(default_factory=list)
    server_log: str = ""
    breakdown: Breakdown | None = None
    warmup_s: tuple[float, float] | None = None  # the unmeasured first (AddSample, put)

    @property
    def ratio(self) -> float:
        return median(self.add_sample_s) / median(self.put_s)

    @property
    def figure(self) -> Figure:
        return Figure(
            f"add_sample_5min_vs_put_ratio_{'s3' if self.s3 else 'filesystem'}", self.ratio, "<=", GOAL_RATIO
        )

    @property
    def s3(self) -> bool:
        return self.config != "filesystem"


async def _requests(
    profile_id: str,
    data: bytes,
    done: list[float] | None = None,
    reference_text: str = STUDIO_TEXT,
    file_name: str = STUDIO_FILE,
) -> AsyncIterator[pb.AddSampleRequest]:
    """The metadata message, then the chunks; appends the time the last chunk was handed to gRPC to ``done``."""
    metadata = pb.SampleMetadata(
        profile_id=profile_id,
        reference_text=reference_text,
        file_name=file_name,
        mime_type="audio/wav",
    )
    yield pb.AddSampleRequest(metadata=metadata)
    view = memoryview(data)
    for start in range(0, len(data), CHUNK_BYTES):
        yield pb.AddSampleRequest(chunk=bytes(view[start : start + CHUNK_BYTES]))
    if done is not None:
        done.append(time.perf_counter())


async def add_sample(
    stub: pb_grpc.ProfileServiceStub,
    tenant: str,
    profile_id: str,
    data: bytes,
    *,
    reference_text: str = STUDIO_TEXT,
    file_name: str = STUDIO_FILE,
) -> tuple[float, float, pb.Sample]:
    """AddSample of a WAV file: (seconds end to end, seconds until the client had handed over the last chunk, the
    new sample)."""
    done: list[float] = []
    started = time.perf_counter()
    try:
        response = await stub.AddSample(
            _requests(profile_id, data, done, reference_text, file_name),
            metadata=tenant_metadata(tenant),
            timeout=300,
        )
    except aio.AioRpcError as error:
        if error.code() == grpc.StatusCode.INVALID_ARGUMENT and "longer than the limit" in (
            error.details() or ""
        ):
            raise TooLong(error.details()) from error
        raise BenchError(f"AddSample failed: {describe_rpc_error(error)}") from error
    finished = time.perf_counter()
    return finished - started, (done[0] if done else finished) - started, response.sample


async def _put(store: ObjectStore, key: str, data: bytes) -> float:
    started = time.perf_counter()
    await store.put(key, data, "application/octet-stream")
    return time.perf_counter() - started


async def run_upload(service: ProfileService, recording: Recording, runs: int, warmup: bool) -> UploadResult:
    """``runs`` AddSample and ``runs`` direct puts, alternated, after one unmeasured pair when ``warmup`` (the
    first of each is the slowest: cold connections, allocator, decoder set-up). Every sample and object is
    deleted afterwards."""
    tenant = f"bench-upload-{uuid.uuid4().hex[:8]}"
    metadata = tenant_metadata(tenant)
    result = UploadResult(service.config, recording)
    store = service.open_store()
    sample_ids: list[str] = []
    keys: list[str] = []
    profile_id = ""
    mark = service.process.mark()
    try:
        async with aio.insecure_channel(service.address, options=CHANNEL_OPTIONS) as channel:
            stub = pb_grpc.ProfileServiceStub(channel)
            try:
                created = await stub.CreateProfile(
                    pb.CreateProfileRequest(name="bench upload"), metadata=metadata
                )
                profile_id = created.profile.id
                for run in range(-1 if warmup else 0, runs):
                    seconds, streamed, sample = await add_sample(stub, tenant, profile_id, recording.data)
                    sample_ids.append(sample.id)
                    result.stored_duration_s = sample.duration_seconds
                    key = f"bench/direct-put/{uuid.uuid4()}"
                    keys.append(key)
                    put_seconds = await _put(store, key, recording.data)
                    if run >= 0:
                        result.add_sample_s.append(seconds)
                        result.streamed_s.append(streamed)
                        result.put_s.append(put_seconds)
                    else:
                        result.warmup_s = (seconds, put_seconds)
            finally:
                await _cleanup(stub, metadata, store, profile_id, sample_ids, keys)
        result.leftovers = [key async for key in store.list_keys(f"tenants/{tenant}/")]
        result.leftovers += [key async for key in store.list_keys("bench/")]
    finally:
        await store.close()
    service.process.check_alive("after the uploads")
    result.server_log = service.process.output_since(mark)
    return result


async def _cleanup(
    stub: pb_grpc.ProfileServiceStub,
    metadata: tuple[tuple[str, str], ...],
    store: ObjectStore,
    profile_id: str,
    sample_ids: list[str],
    keys: list[str],
) -> None:
    for sample_id in sample_ids:
        await stub.DeleteSample(pb.DeleteSampleRequest(id=sample_id), metadata=metadata, timeout=60)
    if profile_id:
        await stub.DeleteProfile(pb.DeleteProfileRequest(id=profile_id), metadata=metadata, timeout=60)
    for key in keys:
        await store.delete(key)


async def breakdown(service: ProfileService, echo: EchoServer, recording: Recording, runs: int) -> Breakdown:
    """Time the parts of AddSample in this process, with the functions the service calls (medians of ``runs``)."""
    limits = ProfilesSettings(port=0, metrics_port=0).limits()
    data = recording.data
    transfer: list[float] = []
    async with aio.insecure_channel(echo.address, options=CHANNEL_OPTIONS) as channel:
        drain = channel.stream_unary(DRAIN_METHOD, pb.AddSampleRequest.SerializeToString, None)
        for _ in range(runs):
            started = time.perf_counter()
            answer: bytes = await drain(_requests(str(uuid.uuid4()), data), timeout=300)
            transfer.append(time.perf_counter() - started)
            if int.from_bytes(answer, "big") != len(data):
                raise BenchError(f"the echo server's Drain received {int.from_bytes(answer, 'big')} bytes")
    store = service.open_store()
    keys: list[str] = []
    prepare: list[float] = []
    put_original: list[float] = []
    put_normalized: list[float] = []
    sequential: list[float] = []
    overlapped: list[float] = []
    wav = b""
    try:
        for _ in range(runs):
            base = f"bench/breakdown/{uuid.uuid4()}"
            keys += [f"{base}/original", f"{base}/audio", f"{base}/o2", f"{base}/a2"]
            started = time.perf_counter()
            prepared = await asyncio.to_thread(prepare_sample, data, limits)
            wav = prepared.normalized_wav
            prepare.append(time.perf_counter() - started)
            put_original.append(await _put(store, f"{base}/original", data))
            put_normalized.append(await _put(store, f"{base}/audio", wav))
            sequential.append(time.perf_counter() - started)
            started = time.perf_counter()
            upload = asyncio.ensure_future(store.put(f"{base}/o2", data, "application/octet-stream"))
            ready = await asyncio.to_thread(prepare_sample, data, limits)
            await store.put(f"{base}/a2", ready.normalized_wav, "audio/wav")
            await upload
            overlapped.append(time.perf_counter() - started)
    finally:
        for key in keys:
            await store.delete(key)
        await store.close()
    started = time.perf_counter()
    hashlib.sha256(wav).hexdigest()
    sha_s = time.perf_counter() - started
    domain_add = await _domain_add(service, data, runs)
    return Breakdown(
        domain_add_s=domain_add,
        transfer_s=median(transfer),
        prepare_s=median(prepare),
        put_original_s=median(put_original),
        put_normalized_s=median(put_normalized),
        normalized_bytes=len(wav),
        sha256_s=sha_s,
        overlapped_s=median(overlapped),
        sequential_s=median(sequential),
    )


async def _domain_add(service: ProfileService, data: bytes, runs: int) -> float:
    """Median time of the service's own ``SampleManager.add`` run in this process on the service's database and
    store (chunks from memory, no gRPC); its samples and profile are deleted afterwards."""
    settings = ProfilesSettings(port=0, metrics_port=0)
    app = await ProfilesApp.open(service.common_settings(), settings, migrate=False)
    tenant = f"bench-domain-{uuid.uuid4().hex[:8]}"
    times: list[float] = []
    try:
        profile = await app.profiles.create(tenant, name="bench breakdown")
        try:
            for _ in range(runs):
                upload = SampleUpload(
                    profile.id, "A five minute studio recording.", "studio.wav", "audio/wav"
                )
                started = time.perf_counter()
                sample = await app.samples.add(tenant, upload, chunked(data, CHUNK_BYTES))
                times.append(time.perf_counter() - started)
                await app.samples.delete(tenant, sample.id)
        finally:
            await app.profiles.delete(tenant, profile.id)
    finally:
        await app.close()
    return median(times)


def report(results: list[UploadResult]) -> str:
    if not results:
        return ""
    recording = results[0].recording
    rows: list[list[object]] = []
    for r in results:
        rows.append(
            [
                CONFIG_TITLES[r.config],
                median(r.add_sample_s),
                median(r.streamed_s),
                median(r.add_sample_s) - median(r.streamed_s),
                median(r.put_s),
                r.ratio,
                " ".join(f"{v:.3f}" for v in r.add_sample_s),
                " ".join(f"{v:.3f}" for v in r.put_s),
            ]
        )
    title = (
        f"AddSample (gRPC, {CHUNK_BYTES // 1024} KiB chunks, end to end) vs direct store.put of the same bytes; "
        f"medians of {len(results[0].add_sample_s)}\n"
        f"recording: {recording.description}"
    )
    headers = [
        "store",
        "AddSample s",
        "streamed s",
        "after last chunk s",
        "put s",
        "ratio",
        "AddSample runs s",
        "put runs s",
    ]
    lines = [
        render_table(title, headers, rows),
        "  streamed: until the client had handed the last chunk to gRPC; after last chunk: the rest, i.e. the "
        "service's decode, stores and commit once the upload is in.",
    ]
    for r in results:
        notes = [f"service stored {r.stored_duration_s:.2f} s of audio"]
        if r.warmup_s is not None:
            notes.append(f"unmeasured warm-up: AddSample {r.warmup_s[0]:.3f} s, put {r.warmup_s[1]:.3f} s")
        if r.leftovers:
            notes.append(f"LEFT BEHIND after deleting: {r.leftovers[:5]} ({len(r.leftovers)} objects)")
        else:
            notes.append("samples and objects deleted afterwards (none left)")
        lines.append(f"  {CONFIG_TITLES[r.config]}: " + "; ".join(notes))
        if r.server_log.strip():
            log = "\n".join(f"      | {line}" for line in r.server_log.strip().splitlines()[-20:])
            lines.append(f"    server output during the uploads (last lines):\n{log}")
    for r in results:
        if r.breakdown is not None:
            lines.append("")
            lines.append(report_breakdown(r))
    return "\n".join(lines)


def _after_last_chunk(r: UploadResult) -> float:
    return median([total - streamed for total, streamed in zip(r.add_sample_s, r.streamed_s, strict=True)])


def report_breakdown(r: UploadResult) -> str:
    b = r.breakdown
    assert b is not None
    total = median(r.add_sample_s)
    critical = b.transfer_s + b.overlapped_s
    parts = [
        ("gRPC transfer of the chunks to a bare grpc.aio server (Drain)", b.transfer_s),
        ("prepare_sample (decode 48k -> 24k mono, checks, analysis, WAV, sha256)", b.prepare_s),
        (f"store.put original ({len(r.recording.data) / 1e6:.1f} MB)", b.put_original_s),
        (f"store.put normalised WAV ({b.normalized_bytes / 1e6:.1f} MB)", b.put_normalized_s),
        ("  of which sha256 of the normalised WAV", b.sha256_s),
        ("prepare -> put(original) -> put(normalised), one after the other", b.sequential_s),
        ("put(original) || prepare -> put(normalised), as the service does", b.overlapped_s),
        ("sum: transfer + overlapped store step", critical),
        ("SampleManager.add in-process, no gRPC (read, store, commit)", b.domain_add_s),
        ("AddSample end to end (median)", total),
        ("  of which streaming the chunks (client side, median)", median(r.streamed_s)),
        ("  of which after the last chunk (median of the differences)", _after_last_chunk(r)),
        ("  minus SampleManager.add in-process (gRPC + process differences)", total - b.domain_add_s),
        ("  of which not in the sum above (DB, scheduling, contention)", total - critical),
    ]
    rows: list[list[object]] = [[name, seconds, seconds / total] for name, seconds in parts]
    title = (
        f"Where AddSample's time goes, {CONFIG_TITLES[r.config]}: in-process timings with the service's functions "
        f"(medians); ratio {format_value(r.ratio)} vs goal <= {format_value(GOAL_RATIO)}"
    )
    return render_table(title, ["part", "seconds", "of AddSample"], rows)
