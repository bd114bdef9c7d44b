"""The transcriber with the real tiny.en engine: validation naming every bad field, admission (queue full ->
RESOURCE_EXHAUSTED with a retry hint), timings and metrics, and cancellation that stops the worker thread between
segments and frees the slot."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import numpy as np
import pytest
from prometheus_client import REGISTRY

from voice_asr import metrics
from voice_asr.engine import AsrModelSpec, TranscriptionStopped, WhisperEngine
from voice_asr.settings import AsrSettings
from voice_asr.transcriber import Transcriber, TranscriptionLimits, validate
from voice_asr.transcript import RecognitionOptions
from voice_common.errors import InvalidArgument, ResourceExhausted, Unavailable
from voice_common.model_manager import ModelManager, ModelProblem
from voice_testing.speech import SENTENCE_WER_BAR, SENTENCES, silence, speak, wer

ENGLISH = RecognitionOptions(language="en")
# Plain decoding of the long file yields a segment every few seconds of audio: stop points for cancellation.
PLAIN = False


def _manager(engine: WhisperEngine) -> ModelManager[AsrModelSpec, WhisperEngine]:
    """A manager whose loader hands out the session's engine (the real model, loaded once)."""
    return ModelManager(
        AsrModelSpec(), label="ASR", loader=lambda spec: (engine, "cpu", "int8"), check=lambda spec: None
    )


def _fields(error: InvalidArgument) -> set[str]:
    return {violation.field for violation in error.violations}


def test_every_bad_option_is_named_at_once() -> None:
    options = RecognitionOptions(
        language="xx",
        task="summarise",  # type: ignore[arg-type]  # what a careless caller could pass
        beam_size=0,
        initial_prompt="p" * 1001,
        hotwords="h" * 1001,
        temperature=1.5,
    )
    with pytest.raises(InvalidArgument) as info:
        validate(options, audio=silence(0))
    assert _fields(info.value) == {
        "options.language",
        "options.task",
        "options.beam_size",
        "options.initial_prompt",
        "options.hotwords",
        "options.temperature",
        "audio",
    }
    assert "'xx'" in info.value.message and "beam_size 0" in info.value.message


def test_good_options_pass() -> None:
    for language in (None, "auto", "en", "DE", "yue"):
        validate(RecognitionOptions(language=language, beam_size=10), audio=silence(1))
    validate(RecognitionOptions(beam_size=1, task="translate", initial_prompt="p" * 1000, temperature=1.0))


def test_audio_over_the_limit_is_refused() -> None:
    with pytest.raises(InvalidArgument) as info:
        validate(ENGLISH, TranscriptionLimits(max_audio_seconds=2), audio=silence(3))
    assert _fields(info.value) == {"audio"} and "split it" in info.value.message


def test_settings_give_the_spec_and_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASR_NUM_WORKERS", "2")
    monkeypatch.setenv("ASR_MAX_QUEUE", "3")
    settings = AsrSettings()
    assert (settings.port, settings.metrics_port) == (50054, 9154)
    assert settings.spec().num_workers == 2 and settings.spec().model.endswith("model")
    assert settings.limits().max_concurrent == 2 and settings.limits().max_queue == 3


async def test_a_transcription_has_text_timings_and_metrics(engine: WhisperEngine) -> None:
    audio_before = REGISTRY.get_sample_value("voice_asr_audio_seconds_total") or 0.0
    transcriber = Transcriber(_manager(engine), observe=metrics.observe)
    metrics.track_queue_depth(transcriber)
    audio = speak(SENTENCES[5], "rms")
    result = await transcriber.transcribe(audio, RecognitionOptions(language="en", word_timestamps=True))
    assert wer(SENTENCES[5], result.transcript.text) <= SENTENCE_WER_BAR, result.transcript.text
    timings = result.timings
    assert timings.processing_s > 0 and timings.queue_wait_s >= 0
    assert timings.real_time_factor == pytest.approx(timings.processing_s / (audio.size / 16000))
    seconds = REGISTRY.get_sample_value("voice_asr_audio_seconds_total")
    assert seconds == pytest.approx(audio_before + audio.size / 16000)
    assert (REGISTRY.get_sample_value("voice_asr_real_time_factor_count") or 0) >= 1
    assert REGISTRY.get_sample_value("voice_asr_queue_depth") == 0
    assert transcriber.queue_depth == 0


async def test_an_english_only_model_refuses_german_with_the_field(engine: WhisperEngine) -> None:
    transcriber = Transcriber(_manager(engine))
    with pytest.raises(InvalidArgument) as info:
        await transcriber.transcribe(silence(1), RecognitionOptions(language="de", task="translate"))
    assert _fields(info.value) == {"options.language", "options.task"}
    assert "English-only" in info.value.message
    assert transcriber.queue_depth == 0


async def test_no_model_is_unavailable_with_the_reason() -> None:
    manager: ModelManager[AsrModelSpec, WhisperEngine] = ModelManager(
        AsrModelSpec(model="/nowhere"),
        label="ASR",
        loader=lambda spec: pytest.fail("must not load"),
        check=lambda spec: ModelProblem("no model here: set ASR_MODEL"),
    )
    with pytest.raises(Unavailable) as info:
        await Transcriber(manager).transcribe(silence(1), ENGLISH)
    assert "ASR_MODEL" in info.value.message


async def _until(condition: Callable[[], bool], within_seconds: float = 10.0) -> None:
    """Poll ``condition`` (the transcriber's counters change on the event loop, with nothing to wait on)."""
    deadline = time.monotonic() + within_seconds
    while time.monotonic() < deadline:
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"not true within {within_seconds} s")


async def test_a_full_queue_is_refused_and_cancelling_frees_the_slot(
    engine: WhisperEngine, long_speech: tuple[np.ndarray, str]
) -> None:
    audio, _ = long_speech
    transcriber = Transcriber(_manager(engine), TranscriptionLimits(max_queue=1))
    stop = False
    first = asyncio.ensure_future(
        transcriber.transcribe(audio, ENGLISH, cancelled=lambda: stop, batched=PLAIN)
    )
    await _until(lambda: transcriber.running == 1)
    with pytest.raises(ResourceExhausted) as info:
        await transcriber.transcribe(silence(1), ENGLISH)
    assert info.value.retry_after_seconds is not None and 1 <= info.value.retry_after_seconds <= 60
    stop = True
    stopped_at = time.perf_counter()
    with pytest.raises(TranscriptionStopped) as stopped:
        await first
    # Stopped between segments: well before the 69 s file was done, and only once the thread had ended.
    assert time.perf_counter() - stopped_at < 3
    assert len(stopped.value.partial.segments) < 4  # of the 16 sentences
    assert (transcriber.queue_depth, transcriber.running) == (0, 0)
    result = await transcriber.transcribe(speak(SENTENCES[0], "slt"), ENGLISH)
    assert wer(SENTENCES[0], result.transcript.text) <= SENTENCE_WER_BAR, result.transcript.text


async def test_task_cancellation_waits_for_the_thread(
    engine: WhisperEngine, long_speech: tuple[np.ndarray, str]
) -> None:
    audio, _ = long_speech
    transcriber = Transcriber(_manager(engine), TranscriptionLimits(max_queue=2))
    first = asyncio.ensure_future(transcriber.transcribe(audio, ENGLISH, batched=PLAIN))
    waiting = asyncio.ensure_future(transcriber.transcribe(audio, ENGLISH, batched=PLAIN))
    await _until(lambda: transcriber.running == 1 and transcriber.queue_depth == 2)
    waiting.cancel()  # still waiting for the slot: leaves at once
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert transcriber.queue_depth == 1
    started = time.perf_counter()
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    assert time.perf_counter() - started < 3
    assert (transcriber.queue_depth, transcriber.running) == (0, 0)
