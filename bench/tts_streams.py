"""What the TTS benchmarks share: one streamed synthesis from the service or from the engine in this process, the
thread the engine runs on, and the benchmark's voice (a profile with one 4 s sample and its transcript)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from grpc import aio

from bench.common import BenchError
from bench.services import ProfileService, describe_rpc_error, tenant_metadata
from bench.upload import add_sample
from voice.profiles.v1 import profiles_service_pb2 as profiles_pb
from voice.profiles.v1 import profiles_service_pb2_grpc as profiles_grpc
from voice.tts.v1 import tts_service_pb2 as tts_pb
from voice.tts.v1 import tts_service_pb2_grpc as tts_grpc
from voice_common.audio.encoding import to_s16
from voice_testing.media_files import encode_file, speechlike

T = TypeVar("T")

TENANT = "bench-tts"
LANGUAGE = "en"
SAMPLE_RATE = 24_000
SAMPLES_PER_FRAME = 1920
REFERENCE_SECONDS = 4.0
REFERENCE_TEXT = "Hello, this is the reference voice the benchmark clones for every request."


@dataclass
class StreamRun:
    """One streamed synthesis: seconds to the first audio and to the end, and what came out."""

    first_s: float
    total_s: float
    samples: int
    pcm16: bytes = b""  # the service's LINEAR16 bytes, or the engine's audio encoded the same way
    server_first_s: float | None = None  # the service's own time to first audio (its summary), from arrival

    @property
    def frames(self) -> int:
        return round(self.samples / SAMPLES_PER_FRAME)

    @property
    def audio_s(self) -> float:
        return self.samples / SAMPLE_RATE


class EngineThread:
    """One OS thread for all in-process torch work, its OpenMP pool set to ``threads`` (the count is per thread)."""

    def __init__(self, threads: int) -> None:
        self._threads = threads
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="bench-engine")

    async def run(self, fn: Callable[[], T]) -> T:
        def call() -> T:
            import torch

            torch.set_num_threads(self._threads)
            return fn()

        return await asyncio.wrap_future(self._pool.submit(call))

    def close(self) -> None:
        self._pool.shutdown(wait=True)


def engine_stream(model: Any, prompt: Any, text: str, seed: int, frames: int) -> StreamRun:
    """The engine alone: construct the utterance, stream to the end; first yield timed from the constructor."""
    from voice_tts.frame_generation import Utterance
    from voice_tts.synthesis_types import SynthesisLimits, model_language

    limits = SynthesisLimits()
    language = model_language(LANGUAGE)
    assert language is not None
    started = time.perf_counter()
    utterance = Utterance(model, text, language, prompt, seed=seed, max_new_tokens=frames)
    pieces = utterance.stream(first_chunk_frames=limits.first_chunk_frames, chunk_frames=limits.chunk_frames)
    first = next(pieces)
    first_s = time.perf_counter() - started
    rest = list(pieces)
    total_s = time.perf_counter() - started
    audio = np.concatenate([first, *rest])
    return StreamRun(first_s, total_s, audio.size, to_s16(audio).tobytes())


def synthesis_config(
    profile_id: str, seed: int, frames: int, *, greedy: bool = False
) -> tts_pb.SynthesisConfig:
    sampling = tts_pb.SamplingParameters(max_new_tokens=frames)
    if greedy:
        sampling.temperature = 0
    return tts_pb.SynthesisConfig(
        voice=tts_pb.Voice(profile_id=profile_id), language=LANGUAGE, seed=seed, sampling=sampling
    )


async def service_stream(
    stub: tts_grpc.TtsServiceStub,
    profile_id: str,
    text: str,
    seed: int,
    frames: int,
    *,
    greedy: bool = False,
) -> StreamRun:
    request = tts_pb.SynthesizeStreamRequest(
        config=synthesis_config(profile_id, seed, frames, greedy=greedy), text=text
    )
    parts: list[bytes] = []
    first_s: float | None = None
    server_first_s: float | None = None
    started = time.perf_counter()
    try:
        async for response in stub.SynthesizeStream(request, metadata=tenant_metadata(TENANT), timeout=300):
            payload = response.WhichOneof("payload")
            if payload == "audio" and response.audio.data:
                if first_s is None:
                    first_s = time.perf_counter() - started
                parts.append(response.audio.data)
            elif payload == "summary":
                server_first_s = response.summary.timings.time_to_first_audio.ToNanoseconds() / 1e9
    except aio.AioRpcError as error:
        raise BenchError(f"SynthesizeStream failed: {describe_rpc_error(error)}") from error
    total_s = time.perf_counter() - started
    if first_s is None:
        raise BenchError("SynthesizeStream sent no audio")
    data = b"".join(parts)
    return StreamRun(first_s, total_s, len(data) // 2, data, server_first_s)


async def make_profile(profiles: ProfileService) -> str:
    """A profile with one 4 s, 24 kHz sample and its transcript; returns its id."""
    wav = encode_file(speechlike(REFERENCE_SECONDS, rate=SAMPLE_RATE, seed=3), SAMPLE_RATE, "wav")
    async with aio.insecure_channel(profiles.address) as channel:
        stub = profiles_grpc.ProfileServiceStub(channel)
        try:
            created = await stub.CreateProfile(
                profiles_pb.CreateProfileRequest(name=f"bench tts {uuid.uuid4().hex[:8]}", language=LANGUAGE),
                metadata=tenant_metadata(TENANT),
                timeout=60,
            )
        except aio.AioRpcError as error:
            raise BenchError(f"CreateProfile failed: {describe_rpc_error(error)}") from error
        await add_sample(
            stub, TENANT, created.profile.id, wav, reference_text=REFERENCE_TEXT, file_name="reference.wav"
        )
        return str(created.profile.id)


async def engine_model_and_prompt(
    engine: EngineThread, model_dir: str, profiles: ProfileService, profile_id: str
) -> tuple[Any, list[Any], Any]:
    """The model loaded in this process (on ``engine``'s thread) and the prompt of the profile's clips, as the
    service builds it: ``(model, clips, prompt)``."""
    from voice_tts.model_manager import ModelSpec, load_qwen3_tts
    from voice_tts.profile_client import ProfileClient
    from voice_tts.prompts import combine_references, create_prompt

    spec = ModelSpec(model=model_dir, device="cpu", dtype="float32")
    model, _, _ = await engine.run(lambda: load_qwen3_tts(spec))
    async with aio.insecure_channel(profiles.address) as channel:
        _, clips = await ProfileClient(channel).reference_clips(TENANT, profile_id)
    reference = combine_references(clips)
    prompt = await engine.run(lambda: create_prompt(model, reference))
    return model, clips, prompt
