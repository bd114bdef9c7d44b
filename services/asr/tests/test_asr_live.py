"""Live transcription with the real model (Whisper tiny.en, CTranslate2, 2 CPU threads) on real speech (flite's
slt, rms and awb voices, recorded in tests/speech), plus the local-agreement bookkeeping with a scripted
recognizer.

The lag figures printed by the real-time test are computed, not waited for: audio "arrives" at its own pace on a
simulated clock, and each recognition step moves the clock on by the processing time it really took.
"""

from __future__ import annotations

import difflib
import itertools
import re
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pytest

from voice_asr.engine import WhisperEngine
from voice_asr.live import LiveResult, LiveSettings, StreamingRecognizer, pass_options, words_of
from voice_asr.transcript import SAMPLE_RATE, RecognitionOptions, Word
from voice_testing.speech import (
    LIVE_LAST_WORDS,
    LIVE_LONG,
    LIVE_SHORT,
    POOLED_WER_BAR,
    SENTENCE_WER_BAR,
    VOICES,
    normalise,
    speak,
    wer,
)

PAUSE_SECONDS = 1.2


@dataclass(frozen=True)
class Recording:
    audio: np.ndarray
    reference: str
    utterances: list[tuple[float, float]]  # start and end of the speech of each sentence, in seconds


def _record(sentences: Sequence[str]) -> Recording:
    """The sentences in turn by the three voices, with a pause of PAUSE_SECONDS after each."""
    parts: list[np.ndarray] = []
    utterances: list[tuple[float, float]] = []
    position = 0
    for i, sentence in enumerate(sentences):
        speech = speak(sentence, VOICES[i % len(VOICES)])
        loud = np.flatnonzero(np.abs(speech) > 0.02)  # flite pads its output with a little silence
        utterances.append(((position + loud[0]) / SAMPLE_RATE, (position + loud[-1]) / SAMPLE_RATE))
        pause = np.zeros(round(PAUSE_SECONDS * SAMPLE_RATE), dtype=np.float32)
        parts += [speech, pause]
        position += len(speech) + len(pause)
    return Recording(np.concatenate(parts), " ".join(sentences), utterances)


Recognize = Callable[[np.ndarray, str | None], Sequence[Word]]


@pytest.fixture(scope="module")
def recognize(engine: WhisperEngine) -> Recognize:
    """The service's recognizer: the real engine (tiny.en, int8, 2 threads), decoding each pass as the service
    does (pass_options: interim passes on a short window, final passes with the committed text as prompt)."""
    settings = LiveSettings()
    options = RecognitionOptions(language="en", beam_size=5)

    def run(audio: np.ndarray, prompt: str | None) -> list[Word]:
        return words_of(engine.transcribe(audio, pass_options(options, prompt, settings), batched=False))

    run(np.zeros(SAMPLE_RATE, dtype=np.float32), None)  # warm up (first call allocates)
    return run


@pytest.fixture(scope="module")
def short_recording() -> Recording:
    return _record(LIVE_SHORT)


@pytest.fixture(scope="module")
def long_recording() -> Recording:
    return _record(LIVE_LONG)


def _one_shot(recognize: Recognize, recording: Recording) -> str:
    """The batch way: the whole recording in one call, decoded as a final pass is (full window, fallback)."""
    words = recognize(recording.audio, "")
    return "".join(w.text for w in words).strip()


def _lags(recording: Recording, finals: list[tuple[float, LiveResult]]) -> list[float]:
    """For each sentence: from the end of its speech to the final result holding its last word (or the last of
    its words that was recognized), matching the committed words to the reference."""
    heard: list[tuple[str, float]] = [
        (w, at) for at, r in finals for word in r.words for w in normalise(word.text).split()
    ]
    reference: list[tuple[str, int]] = [
        (w, index) for index, sentence in enumerate(LIVE_LONG) for w in normalise(sentence).split()
    ]
    matcher = difflib.SequenceMatcher(a=[w for w, _ in reference], b=[w for w, _ in heard], autojunk=False)
    final_at: dict[int, float] = {}
    for block in matcher.get_matching_blocks():
        for k in range(block.size):
            final_at[reference[block.a + k][1]] = heard[block.b + k][
                1
            ]  # the sentence's last matched word wins
    return [final_at.get(index, float("inf")) - end for index, (_, end) in enumerate(recording.utterances)]


def _finals(results: Sequence[LiveResult]) -> list[LiveResult]:
    return [r for r in results if r.is_final]


def test_asr_live_fast_feeding_is_as_accurate_as_one_shot(
    recognize: Recognize, short_recording: Recording
) -> None:
    recording = short_recording
    recognizer = StreamingRecognizer(recognize)
    chunk = round(0.16 * SAMPLE_RATE)
    results: list[LiveResult] = []
    # For each sentence after the first: the results that existed before its first chunk was fed.
    seen_before_sentence: list[list[LiveResult]] = []
    starts = [round(start * SAMPLE_RATE) for start, _ in recording.utterances[1:]]
    for i in range(0, len(recording.audio), chunk):
        while starts and i + chunk > starts[0]:
            seen_before_sentence.append(list(results))
            starts.pop(0)
        results += recognizer.feed(recording.audio[i : i + chunk])
        results += recognizer.step()
    fed_all = len(results)
    results += recognizer.finish()

    finals = _finals(results)
    text = " ".join(r.text for r in finals)
    assert text == recognizer.text
    streamed_wer = wer(recording.reference, text)
    one_shot_wer = wer(recording.reference, _one_shot(recognize, recording))
    print(f"\nstreamed WER {streamed_wer:.3f}, one-shot WER {one_shot_wer:.3f}: {text}")
    assert streamed_wer <= POOLED_WER_BAR, text
    # Within 1.1x of the batch result, with one word of slack (1.1 x 0 would allow no difference at all).
    assert streamed_wer <= 1.1 * one_shot_wer + 1 / len(recording.reference.split())

    interims = [r for r in results[:fed_all] if not r.is_final]
    assert interims, "interim results arrive while audio is still coming"
    assert all(0.0 <= r.stability <= 1.0 and r.text for r in interims)

    duration = len(recording.audio) / SAMPLE_RATE
    times = [(w.start, w.end) for r in finals for w in r.words]
    assert all(0.0 <= start <= end <= duration + 0.05 for start, end in times)
    assert all(a[0] <= b[0] + 0.02 for a, b in itertools.pairwise(times)), "words in order"
    assert all(r.start_seconds <= r.end_seconds and r.audio_seconds <= duration + 0.01 for r in results)

    # Endpointing: the pause after each sentence made it final before the next sentence began.
    for sentence, before in zip(LIVE_SHORT, seen_before_sentence, strict=False):
        last_word = re.sub(r"[^a-z]", "", sentence.split()[-1].lower())
        committed = " ".join(r.text for r in _finals(before)).lower()
        assert last_word in committed, f"{sentence!r} final before the next speech: {committed!r}"


def test_asr_live_real_time_lag_cadence_and_bounded_buffer(
    recognize: Recognize, long_recording: Recording
) -> None:
    """Audio arrives in 100 ms chunks at its real pace; whatever has arrived is fed before each step."""
    recording = long_recording
    audio = recording.audio
    recognizer = StreamingRecognizer(recognize)
    chunk = round(0.1 * SAMPLE_RATE)
    clock = 0.0  # seconds of real time: audio arrival, plus processing
    emitted: list[tuple[float, LiveResult]] = []
    max_buffer = 0.0
    fed = 0
    while fed < len(audio):
        clock = max(clock, (fed + chunk) / SAMPLE_RATE)
        while fed < len(audio) and (fed + chunk) / SAMPLE_RATE <= clock + 1e-9:
            recognizer.feed(audio[fed : fed + chunk])
            fed += chunk
        max_buffer = max(max_buffer, recognizer.buffer_seconds)
        started = time.perf_counter()
        results = recognizer.step()
        clock += time.perf_counter() - started
        emitted += [(clock, r) for r in results]
    started = time.perf_counter()
    emitted += [(clock + time.perf_counter() - started, r) for r in recognizer.finish()]

    finals = [(at, r) for at, r in emitted if r.is_final]
    text = " ".join(r.text for _, r in finals)
    duration = len(audio) / SAMPLE_RATE
    stream_wer = wer(recording.reference, text)
    lags = _lags(recording, finals)
    interims = [r for _, r in emitted if not r.is_final]
    speech_seconds = sum(end - start for start, end in recording.utterances)
    stats = recognizer.stats
    print(
        f"\n{duration:.1f} s of audio, WER {stream_wer:.3f}; lag after each sentence (s): "
        f"{', '.join(f'{lag:.2f}' for lag in lags)}; median {statistics.median(lags):.2f}, max {max(lags):.2f}; "
        f"interim results: {len(interims) / duration:.2f} per second of audio, "
        f"{len(interims) / speech_seconds:.2f} per second of speech; {stats.passes} passes, "
        f"{stats.recognition_seconds / stats.passes:.2f} s each; detector {stats.detector_seconds:.2f} s; "
        f"largest buffer {max_buffer:.1f} s; finished at {clock:.1f} s"
    )
    assert duration > 40
    assert stream_wer <= POOLED_WER_BAR, text
    assert max_buffer <= LiveSettings().max_buffer_seconds + 0.2
    # The figures depend on the machine; this only catches a recognizer that falls ever further behind.
    assert statistics.median(lags) < 4.0


def test_asr_live_silence_gives_no_results_and_runs_no_pass() -> None:
    def never(audio: np.ndarray, prompt: str | None) -> list[Word]:
        raise AssertionError("silence must not be recognized")

    recognizer = StreamingRecognizer(never)
    rng = np.random.default_rng(3)
    results: list[LiveResult] = []
    for _ in range(60):  # 6 s of faint noise
        results += recognizer.feed((rng.standard_normal(1600) * 0.001).astype(np.float32))
        results += recognizer.step()
    results += recognizer.finish()
    assert results == []
    assert recognizer.stats.passes == 0
    assert recognizer.buffer_seconds <= 1.0  # silence is not kept


def test_asr_live_finish_flushes_the_last_words(recognize: Recognize) -> None:
    speech = speak(LIVE_LAST_WORDS, "slt")
    recognizer = StreamingRecognizer(recognize)
    recognizer.feed(speech)  # no step, and no pause after the speech: only finish() can make it final
    results = recognizer.finish()
    assert [r.is_final for r in results] == [True]
    assert wer(LIVE_LAST_WORDS, results[0].text) <= SENTENCE_WER_BAR, results[0].text
    assert recognizer.finish() == []


# --- the bookkeeping, with a scripted recognizer and detector (no model) ---

TALK = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve"]


def _scripted(words_per_second: float = 2.0, flip_last: bool = True) -> Recognize:
    """Hears TALK at ``words_per_second``; the last word heard is garbled on every other pass, the way the end
    of a buffer is uncertain, so only local agreement can tell what to commit."""
    calls = [0]

    def run(audio: np.ndarray, prompt: str | None) -> list[Word]:
        calls[0] += 1
        n = int(len(audio) / SAMPLE_RATE * words_per_second)
        words = [
            Word(f" {t}", i / words_per_second, (i + 0.8) / words_per_second, 0.9) for i, t in enumerate(TALK)
        ]
        heard = words[:n]
        if flip_last and heard and calls[0] % 2:
            heard[-1] = Word(" garbled", heard[-1].start, heard[-1].end, 0.2)
        return heard

    return run


def _all_speech(audio: np.ndarray) -> list[tuple[float, float]]:
    return [(0.0, len(audio) / SAMPLE_RATE)] if len(audio) else []


def test_asr_live_commits_only_what_two_passes_agree_on() -> None:
    recognizer = StreamingRecognizer(_scripted(), LiveSettings(step_seconds=1.0), speech_spans=_all_speech)
    results: list[LiveResult] = []
    for _ in range(40):  # 4 s, no pause: only agreement commits
        recognizer.feed(np.full(1600, 0.1, dtype=np.float32))
        results += recognizer.step()
    finals = _finals(results)
    assert finals, "agreement commits while the speaker goes on"
    assert "garbled" not in recognizer.text
    assert recognizer.text.split() == TALK[: len(recognizer.text.split())]
    interims = [r for r in results if not r.is_final]
    assert interims and all(0.0 <= r.stability <= 1.0 for r in interims)
    last = recognizer.finish()
    # finish() commits the last pass as it is (garbled or not): the end of the stream leaves no second opinion.
    assert len(recognizer.text.split()) == 8
    assert all(r.is_final for r in last)


def test_asr_live_compares_passes_a_second_apart_and_gives_interims_in_between() -> None:
    passes: list[float] = []  # seconds of audio each pass heard
    script = _scripted(flip_last=False)

    def recognize(audio: np.ndarray, prompt: str | None) -> list[Word]:
        passes.append(len(audio) / SAMPLE_RATE)
        return list(script(audio, prompt))

    settings = LiveSettings(step_seconds=0.5, agreement_seconds=1.0)
    recognizer = StreamingRecognizer(recognize, settings, speech_spans=_all_speech)
    by_pass: list[list[LiveResult]] = []
    for _ in range(30):  # 3 s, no pause
        recognizer.feed(np.full(1600, 0.1, dtype=np.float32))
        results = recognizer.step()
        if results:
            by_pass.append(results)
    assert passes == pytest.approx([0.5, 1.0, 1.5, 2.0, 2.5, 3.0])
    # Every pass gives an interim result; only the passes 1 s after the one they are compared with commit: the
    # pass at 1.5 s (with 0.5 s) and the one at 2.5 s (with 1.5 s).
    assert [any(r.is_final for r in results) for results in by_pass] == [
        False,
        False,
        True,
        False,
        True,
        False,
    ]
    assert all(not results[-1].is_final for results in by_pass)
    assert recognizer.text.split() == TALK[:3]  # what the pass at 1.5 s heard, and the one at 2.5 s too


def test_asr_live_buffer_stays_bounded_without_agreement() -> None:
    def fickle(audio: np.ndarray, prompt: str | None) -> list[Word]:
        # Never the same twice: nothing ever agrees, so only the buffer limit commits.
        n = int(len(audio) / SAMPLE_RATE * 2)
        salt = str(np.random.default_rng().integers(1 << 30))
        return [Word(f" w{i}x{salt}", i / 2, i / 2 + 0.4, 0.5) for i in range(n)]

    settings = LiveSettings(step_seconds=1.0, max_buffer_seconds=5.0)
    recognizer = StreamingRecognizer(fickle, settings, speech_spans=_all_speech)
    largest = 0.0
    for _ in range(300):  # 30 s of unbroken "speech"
        recognizer.feed(np.full(1600, 0.1, dtype=np.float32))
        recognizer.step()
        largest = max(largest, recognizer.buffer_seconds)
    assert largest <= 5.0 + 0.2
    assert recognizer.text  # the oldest words were committed as they were


def test_asr_live_a_pause_found_mid_buffer_ends_the_utterance_before_it() -> None:
    """A recognizer that fell behind gets the pause and the next speech in one go: the first utterance is final
    on its own, and the next one starts after the pause."""

    def two_utterances(audio: np.ndarray) -> list[tuple[float, float]]:
        # Speech from 0 to 2 s and from 3 s on, in stream time (the buffer starts at the stream's start here,
        # and after the first endpoint at 2.9 s).
        offset = 2.9 if len(audio) < 5 * SAMPLE_RATE else 0.0
        seconds = len(audio) / SAMPLE_RATE
        spans = [(0.0 - offset, 2.0 - offset), (3.0 - offset, seconds)]
        return [(max(0.0, a), b) for a, b in spans if b > 0]

    recognizer = StreamingRecognizer(
        _scripted(flip_last=False), LiveSettings(step_seconds=1.0), speech_spans=two_utterances
    )
    recognizer.feed(np.full(6 * SAMPLE_RATE, 0.1, dtype=np.float32))
    first = recognizer.step()
    assert [r.is_final for r in first] == [True]
    assert first[0].end_seconds <= 2.0 and first[0].text == "one two three four"
    assert (
        2.8 <= recognizer.audio_seconds - recognizer.buffer_seconds <= 3.0
    )  # the buffer now starts at the pause
    later = recognizer.step() + recognizer.finish()
    assert all(w.start >= 2.85 for r in later for w in r.words)


def test_asr_live_drops_whisper_repeating_its_prompt() -> None:
    """Whisper sometimes speaks its prompt (the committed text) again, with times after it: the repeat is not
    committed a second time, and the new words after it are."""
    sentence = ["she", "opened", "the", "window", "and", "listened", "to", "the", "birds"]

    def repeats_the_prompt(audio: np.ndarray, prompt: str | None) -> list[Word]:
        seconds = len(audio) / SAMPLE_RATE
        if not prompt:  # the first utterance, heard as it is
            return [
                Word(f" {t}", i * 0.3, i * 0.3 + 0.25, 0.9)
                for i, t in enumerate(sentence)
                if i * 0.3 < seconds
            ]
        # Later: the prompt's words again (after the committed end), then what is really new.
        words = [*sentence[2:], "our", "team", "finished"]
        return [Word(f" {t}", i * 0.2, i * 0.2 + 0.15, 0.9) for i, t in enumerate(words)]

    def speech_then_pause_then_speech(audio: np.ndarray) -> list[tuple[float, float]]:
        seconds = len(audio) / SAMPLE_RATE
        return [(0.0, min(seconds, 2.6))] if seconds < 4 else [(0.0, 2.6), (3.6, seconds)]

    settings = LiveSettings(step_seconds=1.0, prompt_chars=200)
    recognizer = StreamingRecognizer(repeats_the_prompt, settings, speech_spans=speech_then_pause_then_speech)
    recognizer.feed(np.full(6 * SAMPLE_RATE, 0.1, dtype=np.float32))
    recognizer.step()
    recognizer.finish()
    assert recognizer.text.split() == [*sentence, "our", "team", "finished"]


def test_asr_live_drops_words_whisper_wrote_after_the_speech() -> None:
    """Whisper may go on writing after the speech ("... the new project. We will meet again next week." seen from
    tiny.en on an AMD EPYC): the alignment squeezes the words it made up into the last instant of the audio, except
    the first, which gets the silence left over and a probability near 0. None of them is committed; the words
    said are."""
    said = ["we", "will", "meet", "again", "next", "week", "to", "discuss", "the", "new", "project"]

    def writes_on_after_the_speech(audio: np.ndarray, prompt: str | None) -> list[Word]:
        words = [Word(f" {t}", i * 0.3, i * 0.3 + 0.25, 0.9) for i, t in enumerate(said)]
        end = words[-1].end  # 3.25; the detector hears speech until 3.3
        made_up = [Word(" We", end, end + 0.3, 0.0)]
        made_up += [Word(f" {t}", end + 0.3, end + (0.32 if t == "again" else 0.3), 0.5) for t in said[1:6]]
        return words + made_up

    def one_utterance(audio: np.ndarray) -> list[tuple[float, float]]:
        return [(0.0, min(len(audio) / SAMPLE_RATE, 3.3))]

    recognizer = StreamingRecognizer(
        writes_on_after_the_speech, LiveSettings(step_seconds=1.0), speech_spans=one_utterance
    )
    recognizer.feed(np.full(5 * SAMPLE_RATE, 0.1, dtype=np.float32))
    results = recognizer.step()  # 1.7 s of silence after the speech: the utterance is final
    assert [r.is_final for r in results] == [True]
    assert recognizer.text.split() == said
    assert all(w.end - w.start >= 0.25 for w in results[0].words)


def test_asr_live_a_final_pass_that_loops_is_heard_as_a_plain_pass() -> None:
    """The pass that makes an utterance final decodes with a prompt and the temperature fallback; when that ends in
    a loop, the plain decode (no prompt, no sampling) is what is committed."""
    said = ["we", "will", "meet", "again", "next", "week", "to", "discuss", "the", "new", "project"]
    loop = [*said, "and", "the", "first", "time", "we", "get", "the", "first", "time", "we", "get"]
    prompts: list[str | None] = []

    def loops_with_a_prompt(audio: np.ndarray, prompt: str | None) -> list[Word]:
        prompts.append(prompt)
        heard, step = (loop, 0.15) if prompt is not None else (said, 0.3)
        return [Word(f" {t}", i * step, i * step + 0.12, 0.9) for i, t in enumerate(heard)]

    def one_utterance(audio: np.ndarray) -> list[tuple[float, float]]:
        return [(0.0, min(len(audio) / SAMPLE_RATE, 3.3))]

    recognizer = StreamingRecognizer(
        loops_with_a_prompt, LiveSettings(step_seconds=1.0), speech_spans=one_utterance
    )
    recognizer.feed(np.full(5 * SAMPLE_RATE, 0.1, dtype=np.float32))
    results = recognizer.step()
    assert [r.is_final for r in results] == [True]
    assert prompts == ["", None]  # the final pass, then the plain one
    assert recognizer.text.split() == said
