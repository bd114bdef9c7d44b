"""Time to first audio at the released 0.6B model's shape: SynthesizeStream as the client sees it ÷ the engine's
first chunk in this process, on a random-weight model with the real widths and depths
(:mod:`tools.released_shape_model`).

Why a second model: on the tiny model the engine's first chunk takes about 15 ms, so the fixed cost of a request
(a grpc.aio loopback round trip alone is about 1 ms) is a large share of it, whatever the service does. The ratio is
meant to show what the service adds to the model's own latency; the released model's first chunk takes seconds on
this CPU (hundreds of milliseconds on a GPU). The tiny model's figure stays in the benchmark as milliseconds added.

The same profile (one 4 s sample and its transcript) and text as the tiny runs; runs of :data:`FRAMES` frames (the
first chunk after 4, then the rest), service and engine alternating, each service run over the engine run after
it. The model is built into the run's scratch directory (about 20 s, 3.4 GB) and loaded twice: by the service and
here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from grpc import aio

from bench.services import ProfileService, tts_service
from bench.tts_streams import EngineThread, StreamRun, engine_model_and_prompt, engine_stream, service_stream
from voice.tts.v1 import tts_service_pb2_grpc as tts_grpc

# 4 frames to the first chunk, 4 more: each run takes about 4 s with one math thread on a 2-core EPYC.
FRAMES = 8


@dataclass
class ReleasedShapeRuns:
    model_dir: str = ""
    service: list[StreamRun] = field(default_factory=list)
    engine: list[StreamRun] = field(default_factory=list)

    @property
    def same_audio(self) -> bool:
        """Whether the service and the engine made the same audio (the same seed, prompt and chunking)."""
        return all(s.pcm16 == e.pcm16 for s, e in zip(self.service, self.engine, strict=True))


async def measure_released_shape_ttfa(
    profiles: ProfileService,
    workdir: Path,
    engine: EngineThread,
    threads: int,
    profile_id: str,
    text: str,
    seed: int,
    runs: int,
    warmups: int,
    progress: Callable[[str], None],
) -> ReleasedShapeRuns:
    from tools.released_shape_model import build_released_shape_model

    result = ReleasedShapeRuns()
    progress("building the random-weight model at the released 0.6B shape (about 20 s, 3.4 GB)")
    model_dir = await engine.run(lambda: build_released_shape_model(workdir / "qwen3-tts-0.6b-shape"))
    result.model_dir = model_dir.name
    async with tts_service(
        profiles, workdir / "released-shape", model_dir, {"OMP_NUM_THREADS": str(threads)}
    ) as tts:
        progress(f"0.6B-shape TTS service SERVING at {tts.address}; loading the model here too")
        model, _, prompt = await engine_model_and_prompt(engine, tts.model, profiles, profile_id)
        async with aio.insecure_channel(tts.address) as channel:
            stub = tts_grpc.TtsServiceStub(channel)
            progress(f"0.6B shape: {warmups} warm-up and {runs} measured SynthesizeStream and engine runs")
            for run in range(warmups + runs):
                service = await service_stream(stub, profile_id, text, seed, FRAMES)
                own = await engine.run(lambda: engine_stream(model, prompt, text, seed, FRAMES))
                if run >= warmups:
                    result.service.append(service)
                    result.engine.append(own)
        tts.process.check_alive("after the 0.6B-shape runs")
    return result
