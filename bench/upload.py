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
from voice_common.testing.media_files import encode_file, speechlike
from voice_profiles.domain.samples import PreparedSample, prepare_sample
from voice_profiles.settings import ProfilesSettings

CHUNK_BYTES = 64 * 1024
RATE = 48000
SECONDS = 300.0
FALLBACK_SECONDS = 299.0
GOAL_RATIO = 1.5
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


@dataclass
class UploadResult:
    config: str
    recording: Recording
    add_sample_s: list[float] = field(default_factory=list)
    put_s: list[float] = field(default_factory=list)
    stored_duration_s: float = 0.0
    leftovers: list[str] = field(default_factory=list)
    server_log: str = ""
    breakdown: Breakdown | None = None

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


async def _requests(profile_id: str, data: bytes) -> AsyncIterator[pb.AddSampleRequest]:
    metadata = pb.SampleMetadata(
        profile_id=profile_id,
        reference_text="A five minute studio recording.",
        file_name="studio.wav",
        mime_type="audio/wav",
    )
    yield pb.AddSampleRequest(metadata=metadata)
    view = memoryview(data)
    for start in range(0, len(data), CHUNK_BYTES):
        yield pb.AddSampleRequest(chunk=bytes(view[start : start + CHUNK_BYTES]))


async def _add_sample(
    stub: pb_grpc.ProfileServiceStub, tenant: str, profile_id: str, data: bytes
) -> tuple[float, pb.Sample]:
    started = time.perf_counter()
    try:
        response = await stub.AddSample(
            _requests(profile_id, data), metadata=tenant_metadata(tenant), timeout=300
        )
    except aio.AioRpcError as error:
        if error.code() == grpc.StatusCode.INVALID_ARGUMENT and "longer than the limit" in (
            error.details() or ""
        ):
            raise TooLong(error.details()) from error
        raise BenchError(f"AddSample failed: {describe_rpc_error(error)}") from error
    return time.perf_counter() - started, response.sample


async def _put(store: ObjectStore, key: str, data: bytes) -> float:
    started = time.perf_counter()
    await store.put(key, data, "application/octet-stream")
    return time.perf_counter() - started


async def run_upload(service: ProfileService, recording: Recording, runs: int) -> UploadResult:
    """``runs`` AddSample and ``runs`` direct puts, alternated; every sample and object is deleted afterwards."""
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
                for _ in range(runs):
                    seconds, sample = await _add_sample(stub, tenant, profile_id, recording.data)
                    sample_ids.append(sample.id)
                    result.add_sample_s.append(seconds)
                    result.stored_duration_s = sample.duration_seconds
                    key = f"bench/direct-put/{uuid.uuid4()}"
                    keys.append(key)
                    result.put_s.append(await _put(store, key, recording.data))
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
    prepare: list[float] = []
    prepared: PreparedSample | None = None
    for _ in range(runs):
        started = time.perf_counter()
        prepared = await asyncio.to_thread(prepare_sample, data, limits)
        prepare.append(time.perf_counter() - started)
    assert prepared is not None
    wav = prepared.normalized_wav
    started = time.perf_counter()
    hashlib.sha256(wav).hexdigest()
    sha_s = time.perf_counter() - started

    store = service.open_store()
    keys: list[str] = []
    put_original: list[float] = []
    put_normalized: list[float] = []
    overlapped: list[float] = []
    try:
        for _ in range(runs):
            base = f"bench/breakdown/{uuid.uuid4()}"
            keys += [f"{base}/original", f"{base}/audio", f"{base}/o2", f"{base}/a2"]
            put_original.append(await _put(store, f"{base}/original", data))
            put_normalized.append(await _put(store, f"{base}/audio", wav))
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
    return Breakdown(
        transfer_s=median(transfer),
        prepare_s=median(prepare),
        put_original_s=median(put_original),
        put_normalized_s=median(put_normalized),
        normalized_bytes=len(wav),
        sha256_s=sha_s,
        overlapped_s=median(overlapped),
    )


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
    headers = ["store", "AddSample s", "put s", "ratio", "AddSample runs s", "put runs s"]
    lines = [render_table(title, headers, rows)]
    for r in results:
        notes = [f"service stored {r.stored_duration_s:.2f} s of audio"]
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


def report_breakdown(r: UploadResult) -> str:
    b = r.breakdown
    assert b is not None
    total = median(r.add_sample_s)
    critical = b.transfer_s + b.overlapped_s + b.sha256_s
    rows: list[list[object]] = [
        ["gRPC transfer to a bare grpc.aio server (Drain)", b.transfer_s, b.transfer_s / total],
        ["prepare_sample (decode 48k -> 24k mono, checks, analysis, WAV)", b.prepare_s, b.prepare_s / total],
        [
            f"store.put original ({len(r.recording.data) / 1e6:.1f} MB)",
            b.put_original_s,
            b.put_original_s / total,
        ],
        [
            f"store.put normalised WAV ({b.normalized_bytes / 1e6:.1f} MB)",
            b.put_normalized_s,
            b.put_normalized_s / total,
        ],
        ["sha256 of the normalised WAV", b.sha256_s, b.sha256_s / total],
        [
            "put(original) || prepare -> put(normalised), as the service does",
            b.overlapped_s,
            b.overlapped_s / total,
        ],
        ["transfer + overlapped store step + sha256", critical, critical / total],
        [
            "rest of AddSample (DB, protobuf, scheduling; by difference)",
            total - critical,
            (total - critical) / total,
        ],
        ["AddSample end to end (median)", total, 1.0],
    ]
    title = (
        f"Where AddSample's time goes, {CONFIG_TITLES[r.config]} (measured in-process with the service's functions; "
        f"ratio {format_value(r.ratio)} vs goal <= {format_value(GOAL_RATIO)})"
    )
    return render_table(title, ["part", "seconds", "share"], rows)
