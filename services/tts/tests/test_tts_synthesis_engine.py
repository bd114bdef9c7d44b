"""The synthesis engine (voice_tts.synthesis_engine) on the tiny random model: streamed bytes against the
frame-by-frame utterance, every output format, long text, validation, admission, cancellation, determinism."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from qwen_tts import VoiceClonePromptItem

from tools.tiny_model import SAMPLE_RATE, SAMPLES_PER_FRAME
from voice_common.audio import decode_audio, decode_linear16
from voice_common.audio.encoding import AudioEncoding, to_s16
from voice_common.errors import InvalidArgument, ResourceExhausted
from voice_tts.frame_generation import Utterance
from voice_tts.model_manager import ModelManager, ModelSpec
from voice_tts.speech_model import SpeechModel
from voice_tts.synthesis_engine import SynthesisEngine, SynthesisStream
from voice_tts.synthesis_types import (
    SAMPLE_RATE_FIELD,
    SynthesisEvent,
    SynthesisLimits,
    SynthesisRequest,
    SynthesisResult,
    model_language,
    piece_seed,
    validate,
)
from voice_tts.text_segments import split_text

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

TEXT = "Hello there, this is a short test."
LONG = 4096  # frames: about 20 s on the tiny model, so these requests only end by being stopped


@pytest.fixture(scope="module")
async def manager(tiny_dir: Path) -> ModelManager:
    manager = ModelManager(ModelSpec(model=str(tiny_dir)))
    await manager.load()
    return manager


@pytest.fixture(scope="module")
async def model(manager: ModelManager) -> Any:
    async with manager.use() as model:
        return model


@pytest.fixture(scope="module")
def prompt(model: Any) -> VoiceClonePromptItem:
    t = np.arange(3 * SAMPLE_RATE) / SAMPLE_RATE
    clip = (0.25 * np.sin(2 * np.pi * 140 * t) * np.clip(np.sin(2 * np.pi * 2 * t), 0, None)).astype(
        np.float32
    )
    (item,) = model.create_voice_clone_prompt(ref_audio=(clip, SAMPLE_RATE), x_vector_only_mode=True)
    return item


class Recorder:
    """An utterance factory that remembers what it made; ``no_eos`` blocks EOS so a request runs its frames."""

    def __init__(self, *, no_eos: bool = False) -> None:
        self.made: list[tuple[str, int, Utterance]] = []
        self.no_eos = no_eos

    def __call__(self, model: Any, text: str, language: str, prompt: Any, **options: Any) -> Utterance:
        extra = {"min_new_tokens": options["max_new_tokens"]} if self.no_eos else {}
        utterance = Utterance(model, text, language, prompt, **options, **extra)
        self.made.append((text, options["seed"], utterance))
        return utterance


def request(prompt: VoiceClonePromptItem, **fields: Any) -> SynthesisRequest:
    values: dict[str, Any] = {"text": TEXT, "language": "en", "seed": 5, "max_new_tokens": 30}
    values.update(fields)
    return SynthesisRequest(prompt=prompt, **values)


async def collect(stream: SynthesisStream) -> tuple[list[SynthesisEvent], SynthesisResult]:
    events = [event async for event in stream]
    assert stream.result is not None
    return events, stream.result


async def test_linear16_equals_the_frame_by_frame_stream(
    manager: ModelManager, model: Any, prompt: VoiceClonePromptItem
) -> None:
    limits = SynthesisLimits()
    events, result = await collect(SynthesisEngine(manager, limits).stream(request(prompt)))
    reference = Utterance(model, TEXT, "english", prompt, seed=5, max_new_tokens=30)
    pieces = list(
        reference.stream(
            first_chunk_frames=limits.first_chunk_frames,
            chunk_frames=limits.chunk_frames,
        )
    )
    expected = np.concatenate(pieces)
    assert len(events) == len(pieces) >= 2  # one event per decoded chunk, as soon as it is ready
    assert b"".join(event.audio for event in events) == to_s16(expected).tobytes()
    assert sum(event.samples for event in events) == expected.size == result.pcm.size
    np.testing.assert_array_equal(result.pcm, expected)
    assert result.stop_reason == reference.stop_reason
    assert result.frames == reference.frames_generated and result.pieces == 1
    # The streaming decoder decodes each frame once, continuing the request's state: the chunks are the one-shot
    # decode up to float32 rounding (about 1e-5; a PCM16 step is 3.05e-5).
    whole = Utterance(model, TEXT, "english", prompt, seed=5, max_new_tokens=30).synthesize_whole()
    assert whole.size == expected.size
    assert np.abs(whole - expected).max() < 1e-4


@pytest.mark.parametrize("rate", [24000, 16000])
@pytest.mark.parametrize(
    ("encoding", "slack_ms"),
    [
        (AudioEncoding.LINEAR16, 0),
        (AudioEncoding.WAV, 0),
        (AudioEncoding.FLAC, 0),
        (AudioEncoding.OGG_OPUS, 20),  # one Opus frame
        (AudioEncoding.MP3, 150),  # encoder delay + final frame padding (up to ~3 MP3 frames)
    ],
)
async def test_every_format_decodes_back_to_the_right_length(
    manager: ModelManager, prompt: VoiceClonePromptItem, encoding: AudioEncoding, slack_ms: int, rate: int
) -> None:
    stream = SynthesisEngine(manager).stream(request(prompt, encoding=encoding, sample_rate=rate))
    events, result = await collect(stream)
    data = b"".join(event.audio for event in events)
    assert all(event.audio for event in events[:-1])
    if encoding is AudioEncoding.LINEAR16:
        decoded = decode_linear16(data, rate, target_rate=rate).samples
    else:
        decoded = decode_audio(data, target_rate=rate).samples
    expected = result.pcm.size * rate / SAMPLE_RATE
    assert abs(decoded.size - expected) <= 1 + slack_ms * rate / 1000
    if encoding in (AudioEncoding.WAV, AudioEncoding.FLAC) and rate == SAMPLE_RATE:
        np.testing.assert_array_equal(decoded, to_s16(result.pcm).astype(np.float32) / 32768)


async def test_long_text_is_spoken_piece_by_piece_with_a_seed_lineage(
    manager: ModelManager, prompt: VoiceClonePromptItem
) -> None:
    text = "The first sentence is here. A second one follows it. And this is the third."
    recorder = Recorder()
    limits = SynthesisLimits(max_piece_chars=30)
    engine = SynthesisEngine(manager, limits, factory=recorder)
    events, result = await collect(engine.stream(request(prompt, text=text, seed=7, max_new_tokens=8)))
    pieces = split_text(text, 30)
    assert len(pieces) == 3
    assert [(t, seed) for t, seed, _ in recorder.made] == [
        (p, piece_seed(7, i)) for i, p in enumerate(pieces)
    ]
    frames = [s.frames_generated for _, _, s in recorder.made]
    assert all(0 < f <= 8 for f in frames)  # every piece spoke (EOS is blocked for 2 frames)
    assert result.pieces == 3 and result.frames == sum(frames)
    assert result.pcm.size == sum(frames) * SAMPLES_PER_FRAME == sum(e.samples for e in events)
    assert len(events) >= 3
    assert piece_seed(2**64 - 1, 1) == 0


async def test_validation_lists_every_bad_field(manager: ModelManager, prompt: VoiceClonePromptItem) -> None:
    bad = request(
        prompt,
        text=" ",
        language="xx",
        temperature=2.5,
        top_k=-1,
        top_p=0.0,
        repetition_penalty=0.9,
        max_new_tokens=0,
        encoding=AudioEncoding.OGG_OPUS,
        sample_rate=44100,
    )
    with pytest.raises(InvalidArgument) as info:
        validate(bad)
    fields = {v.field for v in info.value.violations}
    assert fields == {
        "text",
        "language",
        "temperature",
        "top_k",
        "top_p",
        "repetition_penalty",
        "max_new_tokens",
        SAMPLE_RATE_FIELD,
    }
    # The stream raises the same on its first step, before taking a queue slot.
    engine = SynthesisEngine(manager)
    with pytest.raises(InvalidArgument):
        await anext(engine.stream(bad))
    assert engine.queue_depth == 0
    with pytest.raises(InvalidArgument) as info:
        validate(request(prompt, text="a" * 11), SynthesisLimits(max_text_chars=10))
    assert [v.field for v in info.value.violations] == ["text"]
    validate(request(prompt, language="auto", temperature=0, top_k=0, top_p=1, repetition_penalty=2))
    assert model_language("ZH") == "chinese" and model_language("German") == "german"


async def test_full_queue_is_refused_at_once_and_the_waiter_runs_next(
    manager: ModelManager, prompt: VoiceClonePromptItem
) -> None:
    # One at a time (max_batch=1): the second request waits for the first to end.
    limits = SynthesisLimits(max_queue=2, max_batch=1)
    engine = SynthesisEngine(manager, limits, factory=Recorder(no_eos=True))
    running = engine.stream(request(prompt, max_new_tokens=LONG))
    await anext(running)
    waiting = engine.stream(request(prompt, max_new_tokens=10))
    waiter = asyncio.ensure_future(collect(waiting))
    await asyncio.sleep(0.05)
    assert engine.queue_depth == 2 and not waiter.done()
    with pytest.raises(ResourceExhausted) as info:
        await anext(engine.stream(request(prompt)))
    assert "queue is full (2 waiting)" in info.value.message
    assert info.value.retry_after_seconds is not None and info.value.retry_after_seconds >= 1
    await running.aclose()
    _events, result = await asyncio.wait_for(waiter, 20)
    assert result.queue_wait_s >= 0.05
    assert engine.queue_depth == 0


async def test_closing_the_stream_stops_generation_within_frames_and_frees_the_slot(
    manager: ModelManager, prompt: VoiceClonePromptItem
) -> None:
    recorder = Recorder(no_eos=True)
    engine = SynthesisEngine(manager, SynthesisLimits(max_queue=1), factory=recorder)
    stream = engine.stream(request(prompt, max_new_tokens=LONG))
    async for _event in stream:
        break
    await stream.aclose()
    assert stream.result is not None
    assert stream.result.stop_reason == "stopped"
    ((_, _, made),) = recorder.made
    assert made.stop_reason == "stopped"
    assert stream.result.frames == made.frames_generated < 40  # a 4-frame first chunk, then stopped (5 here)
    assert engine.queue_depth == 0
    assert stream.result.pieces == 1
    # A stream dropped without aclose() is closed by asyncio's async-generator finalizer: same outcome.
    dropped = engine.stream(request(prompt, max_new_tokens=LONG))
    await anext(dropped)
    del dropped
    gc.collect()
    for _ in range(500):
        if engine.queue_depth == 0:
            break
        await asyncio.sleep(0.01)
    assert engine.queue_depth == 0
    assert recorder.made[-1][2].stop_reason == "stopped" and recorder.made[-1][2].frames_generated < 40
    # The slot is free: the next request starts at once.
    _events, result = await collect(engine.stream(request(prompt, max_new_tokens=6)))
    assert result.queue_wait_s < 0.1 and result.frames <= 6


async def test_cancelled_callback_and_task_cancellation_stop_the_worker(
    manager: ModelManager, prompt: VoiceClonePromptItem
) -> None:
    recorder = Recorder(no_eos=True)
    engine = SynthesisEngine(manager, SynthesisLimits(max_queue=1), factory=recorder)
    flag = False
    stream = engine.stream(request(prompt, max_new_tokens=LONG), cancelled=lambda: flag)
    events = 0
    async for _event in stream:
        events += 1
        flag = True
    assert events == 1
    assert stream.result is not None and stream.result.stop_reason == "stopped"
    assert recorder.made[-1][2].frames_generated < 40

    first_event = asyncio.Event()

    async def consume(stream: AsyncIterator[SynthesisEvent]) -> None:
        async for _event in stream:
            first_event.set()

    task = asyncio.ensure_future(consume(engine.stream(request(prompt, max_new_tokens=LONG))))
    await asyncio.wait_for(first_event.wait(), 20)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert recorder.made[-1][2].stop_reason == "stopped"
    assert recorder.made[-1][2].frames_generated < 100
    assert engine.queue_depth == 0


async def test_a_failing_worker_raises_and_frees_the_slot(
    manager: ModelManager, prompt: VoiceClonePromptItem
) -> None:
    def broken(*_args: Any, **_options: Any) -> Utterance:
        raise RuntimeError("boom")

    engine = SynthesisEngine(manager, SynthesisLimits(max_queue=1), factory=broken)
    stream = engine.stream(request(prompt))
    with pytest.raises(RuntimeError, match="boom"):
        await collect(stream)
    assert engine.queue_depth == 0 and stream.result is None
    _events, result = await collect(
        SynthesisEngine(manager, SynthesisLimits(max_queue=1)).stream(request(prompt))
    )
    assert result.pcm.size > 0


async def test_same_seed_gives_the_same_bytes_and_timings_add_up(
    manager: ModelManager, prompt: VoiceClonePromptItem
) -> None:
    engine = SynthesisEngine(manager)
    wav = request(prompt, encoding=AudioEncoding.WAV, seed=11)
    first, result = await engine.synthesize(wav)
    second, _ = await engine.synthesize(wav)
    other, _ = await engine.synthesize(request(prompt, encoding=AudioEncoding.WAV, seed=12))
    assert first == second != other
    assert result.seed == 11
    assert 0 < result.time_to_first_audio_s < result.total_s
    assert 0 <= result.queue_wait_s < result.total_s
    assert result.duration_seconds == result.pcm.size / SAMPLE_RATE > 0
    assert result.real_time_factor > 0
    assert result.stop_reason in ("eos", "max_new_tokens")


async def test_concurrent_requests_are_batched_and_sound_as_they_would_alone(
    manager: ModelManager, prompt: VoiceClonePromptItem
) -> None:
    texts = ["Hello there, this is a short test.", "A second, somewhat longer sentence for the batch.", "Hi."]
    requests = [request(prompt, text=text, seed=index) for index, text in enumerate(texts)]
    alone = SynthesisEngine(manager, SynthesisLimits(max_batch=1))
    solo = [await alone.synthesize(item) for item in requests]
    sizes: list[int] = []
    batched = SynthesisEngine(manager, SynthesisLimits(max_batch=8), on_step=sizes.append)
    together = await asyncio.gather(*(batched.synthesize(item) for item in requests))
    assert max(sizes) >= 2  # the requests shared talker steps
    for (_, one), (_, many) in zip(solo, together, strict=True):
        # The same codes (frame counts, stop reasons); batched decoding rounds the samples a little differently.
        assert (many.frames, many.stop_reason) == (one.frames, one.stop_reason)
        assert many.pcm.size == one.pcm.size > 0
        assert np.abs(many.pcm - one.pcm).max() < 1e-3
    assert batched.queue_depth == 0 and batched.running == 0
    alone.close()
    batched.close()


async def test_a_request_joins_a_running_batch_and_a_stopped_one_leaves_it(
    manager: ModelManager, prompt: VoiceClonePromptItem
) -> None:
    recorder = Recorder(no_eos=True)
    sizes: list[int] = []
    engine = SynthesisEngine(manager, SynthesisLimits(max_batch=2), factory=recorder, on_step=sizes.append)
    first = engine.stream(request(prompt, max_new_tokens=LONG, seed=1))
    await anext(first)
    second = engine.stream(request(prompt, max_new_tokens=LONG, seed=2))
    await anext(second)  # it joined while the first kept running
    third = engine.stream(request(prompt, max_new_tokens=8, seed=3))
    waiter = asyncio.ensure_future(collect(third))
    await asyncio.sleep(0.2)
    assert engine.running == 2 and not waiter.done()  # max_batch=2: the third waits
    await first.aclose()  # the first leaves; the third takes its place
    _events, result = await asyncio.wait_for(waiter, 20)
    assert result.frames == 8 and result.queue_wait_s >= 0.2
    assert first.result is not None and first.result.stop_reason == "stopped"
    # The second was never disturbed: it is still producing audio.
    assert (await anext(second)).audio
    await second.aclose()
    assert second.result is not None and second.result.stop_reason == "stopped"
    assert max(sizes) == 2
    assert engine.queue_depth == 0 and engine.running == 0
    engine.close()


async def test_requests_that_join_at_different_frames_share_every_later_decoder_pass(
    manager: ModelManager, model: Any, prompt: VoiceClonePromptItem, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each request joins after the one before it sent audio, so their chunks would come due at different frames.
    Once a request has been decoded, no decoder pass leaves it out until it ends (its passes are consecutive), and
    each request's audio is still its solo audio."""
    decoder = SpeechModel.of(model).streaming_decoder
    passes: list[set[int]] = []
    real_step = decoder.step

    def recording_step(rows: Any) -> Any:
        passes.append({id(state) for state, _codes in rows})
        return real_step(rows)

    monkeypatch.setattr(decoder, "step", recording_step)
    recorder = Recorder(no_eos=True)
    engine = SynthesisEngine(manager, factory=recorder)
    streams = []
    consumers = []
    for seed in (1, 2, 3):
        stream = engine.stream(request(prompt, max_new_tokens=48, seed=seed))
        first = await anext(stream)
        consumers.append(asyncio.ensure_future(collect(stream)))
        streams.append((stream, first))
    outcomes = await asyncio.gather(*consumers)
    engine.close()
    rows = sorted({row for one_pass in passes for row in one_pass})
    assert len(rows) == 3
    for row in rows:
        where = [index for index, one_pass in enumerate(passes) if row in one_pass]
        assert where == list(range(where[0], where[-1] + 1)), (row, where, len(passes))
    # A decoder pass per due chunk of each request would be 3 x 5; joined passes are far fewer.
    assert len(passes) <= 10, len(passes)
    for (_stream, first), (events, result), (_text, seed, _utterance) in zip(
        streams, outcomes, recorder.made, strict=True
    ):
        assert result.frames == 48
        solo = Utterance(model, TEXT, "english", prompt, seed=seed, max_new_tokens=48, min_new_tokens=48)
        whole = solo.synthesize_whole()
        assert result.pcm.size == whole.size
        assert np.abs(whole - result.pcm).max() < 1e-4
        assert first.audio and sum(event.samples for event in [first, *events]) == whole.size
