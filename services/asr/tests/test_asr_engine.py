"""The Whisper engine with the real tiny.en model on real speech (flite's voices, recorded in tests/speech):
accuracy, word timestamps, silence, the VAD, the batched pipeline, stopping between segments, an English-only
model's refusals, and the model check and manager (offline, actionable messages)."""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import REGISTRY

from voice_asr.engine import (
    AsrModelSpec,
    TranscriptionStopped,
    WhisperEngine,
    check_available,
    default_model,
    new_model_manager,
    temperature_schedule,
)
from voice_asr.short_window import short_window_frames
from voice_asr.transcript import SAMPLE_RATE, RecognitionOptions, Word, repeats_itself
from voice_common.errors import FailedPrecondition, InvalidArgument
from voice_common.model_manager import ModelProblem, ModelState
from voice_testing.speech import (
    GERMAN,
    POOLED_WER_BAR,
    REPEATED,
    SENTENCE_WER_BAR,
    SENTENCES,
    SPANISH,
    VOICES,
    normalise,
    pooled_wer,
    silence,
    speak,
    wer,
)

ENGLISH = RecognitionOptions(language="en")


def test_sentences_in_three_voices_are_transcribed(engine: WhisperEngine) -> None:
    references, hypotheses = [], []
    for voice in VOICES:
        for text in SENTENCES:
            transcript = engine.transcribe(speak(text, voice), ENGLISH)
            assert transcript.language == "en"
            references.append(text)
            hypotheses.append(transcript.text)
    accuracy = pooled_wer(references, hypotheses)
    print(f"pooled WER {accuracy:.3f} over {len(' '.join(references).split())} words")
    assert accuracy <= POOLED_WER_BAR, hypotheses
    # Each transcript is of its own sentence: against the next sentence's words they are as good as random.
    assert pooled_wer(references[1:] + references[:1], hypotheses) > 0.7


def test_the_temperature_schedule_starts_where_asked() -> None:
    assert temperature_schedule(ENGLISH) == (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)  # faster-whisper's default
    assert temperature_schedule(RecognitionOptions(temperature=0.5)) == (0.5, 0.7, 0.9)
    assert temperature_schedule(RecognitionOptions(temperature=1.0)) == (1.0,)
    assert temperature_schedule(RecognitionOptions(temperature=0.5, temperature_fallback=False)) == 0.0


def test_a_sampled_decode_still_reads_the_words(engine: WhisperEngine) -> None:
    sampled = engine.transcribe(
        speak(SENTENCES[0], "slt"), RecognitionOptions(language="en", temperature=0.4)
    )
    assert pooled_wer([SENTENCES[0]], [sampled.text]) <= 0.35, sampled.text


def test_language_is_the_models_own_when_not_given(engine: WhisperEngine) -> None:
    transcript = engine.transcribe(speak(SENTENCES[0], "slt"), RecognitionOptions(language="auto"))
    assert transcript.language == "en" and transcript.language_probability == 1.0
    assert wer(SENTENCES[0], transcript.text) <= SENTENCE_WER_BAR, transcript.text


def test_word_timestamps_are_ordered_and_inside_the_audio(engine: WhisperEngine) -> None:
    audio = speak(SENTENCES[1], "rms")
    duration = audio.size / SAMPLE_RATE
    transcript = engine.transcribe(audio, RecognitionOptions(language="en", word_timestamps=True))
    words = [word for segment in transcript.segments for word in segment.words]
    assert len(words) >= 10
    assert wer(SENTENCES[1], "".join(word.text for word in words)) <= SENTENCE_WER_BAR
    for word in words:
        assert 0 <= word.start <= word.end <= duration + 0.01
        assert 0 <= word.probability <= 1
    assert all(a.start <= b.start and a.end <= b.end for a, b in itertools.pairwise(words))
    assert transcript.duration_seconds == pytest.approx(duration)


def test_silence_gives_no_text(engine: WhisperEngine) -> None:
    # With the VAD (the default): without it Whisper makes up a word or two ("You") for pure silence.
    transcript = engine.transcribe(silence(5), ENGLISH)
    assert transcript.text == ""
    assert transcript.duration_seconds == 5


def test_empty_audio_gives_an_empty_transcript(engine: WhisperEngine) -> None:
    assert engine.transcribe(silence(0), ENGLISH).text == ""


def test_the_vad_keeps_speech_and_its_offsets_in_padded_audio(engine: WhisperEngine) -> None:
    speech = speak(SENTENCES[2], "awb")
    audio = np.concatenate([silence(10), speech, silence(10)])
    transcript = engine.transcribe(audio, RecognitionOptions(language="en", word_timestamps=True))
    assert wer(SENTENCES[2], transcript.text) <= SENTENCE_WER_BAR, transcript.text
    words = [word for segment in transcript.segments for word in segment.words]
    speech_end = 10 + speech.size / SAMPLE_RATE
    # Timestamps are of the original audio, not of the speech the VAD kept.
    assert 9.5 <= words[0].start <= 11.0
    assert speech_end - 1.5 <= words[-1].end <= speech_end + 0.5


def test_the_batched_pipeline_transcribes_the_long_file(
    engine: WhisperEngine, long_speech: tuple[np.ndarray, str]
) -> None:
    audio, text = long_speech
    assert audio.size / SAMPLE_RATE > 60
    assert engine.use_batched(audio.size / SAMPLE_RATE, ENGLISH)
    transcript = engine.transcribe(audio, RecognitionOptions(language="en", word_timestamps=True))
    accuracy = wer(text, transcript.text)
    print(f"pooled WER {accuracy:.3f} over {len(text.split())} words")
    assert accuracy <= POOLED_WER_BAR, transcript.text
    starts = [segment.start for segment in transcript.segments]
    assert starts == sorted(starts) and transcript.segments[-1].end <= audio.size / SAMPLE_RATE + 0.01


def test_batched_and_plain_agree_on_a_short_clip(engine: WhisperEngine) -> None:
    audio = speak(SENTENCES[0], "slt")
    assert not engine.use_batched(audio.size / SAMPLE_RATE, ENGLISH)
    plain = engine.transcribe(audio, ENGLISH, batched=False)
    batched = engine.transcribe(audio, ENGLISH, batched=True)
    # Up to case and punctuation: the batched pipeline decodes without timestamps and may start with "the".
    assert normalise(plain.text) == normalise(batched.text)
    assert wer(SENTENCES[0], plain.text) <= SENTENCE_WER_BAR, plain.text


SHORT_WINDOW = RecognitionOptions(
    language="en",
    word_timestamps=True,
    vad_filter=False,
    temperature_fallback=False,
    short_encoder_window=True,
)


def _short_window_passes(result: str) -> float:
    return REGISTRY.get_sample_value("voice_asr_short_window_passes_total", {"result": result}) or 0.0


def test_the_short_window_is_twice_the_audio_plus_a_second() -> None:
    assert short_window_frames(0) == 100
    assert short_window_frames(150) == 400  # 1.5 s of audio: 4 s encoded
    assert short_window_frames(449) == 1000
    assert short_window_frames(1400) == 2900
    assert short_window_frames(1450) == short_window_frames(2999) == 3000


def test_the_short_window_model_encodes_only_the_window() -> None:
    from voice_asr.short_window_model import ShortWindowWhisperModel

    model = ShortWindowWhisperModel(default_model(), device="cpu", compute_type="int8", cpu_threads=2)
    audio = np.random.default_rng(0).normal(0, 0.1, 2 * SAMPLE_RATE).astype(np.float32)
    features = model.feature_extractor(audio)[:, :200]  # 2 s of audio, zero-padded to Whisper's 30 s
    padded = np.pad(features, ((0, 0), (0, 3000 - 200)))
    assert np.array(model.encode(padded)).shape[1] == 1500  # outside short_window(): the full window
    with model.short_window():
        assert np.array(model.encode(padded)).shape[1] == short_window_frames(200) // 2  # 5 s, 250 positions


def test_a_short_window_transcribes_as_the_full_one(engine: WhisperEngine) -> None:
    references, hypotheses = [], []
    for index, text in enumerate(SENTENCES[:4]):
        audio = speak(text, VOICES[index % len(VOICES)])
        kept = _short_window_passes("kept")
        transcript = engine.transcribe(audio, SHORT_WINDOW, batched=False)
        assert _short_window_passes("kept") == kept + 1
        words = [word for segment in transcript.segments for word in segment.words]
        assert all(0 <= w.start <= w.end <= audio.size / SAMPLE_RATE + 0.01 for w in words)
        references.append(text)
        hypotheses.append(transcript.text)
    assert pooled_wer(references, hypotheses) <= POOLED_WER_BAR, hypotheses


def test_a_short_window_result_that_repeats_itself_is_redone_with_the_full_window(
    engine: WhisperEngine,
) -> None:
    # Real speech that repeats itself looks like Whisper looping, so it costs one more (full-window) decode.
    text = REPEATED
    audio = speak(text, "slt")
    redone = _short_window_passes("redone")
    transcript = engine.transcribe(audio, SHORT_WINDOW, batched=False)
    assert _short_window_passes("redone") == redone + 1
    full = engine.transcribe(
        audio, dataclasses.replace(SHORT_WINDOW, short_encoder_window=False), batched=False
    )
    assert transcript.text == full.text
    assert wer(text, transcript.text) <= SENTENCE_WER_BAR, transcript.text


def test_loops_are_told_from_speech() -> None:
    def words(text: str) -> list[Word]:
        return [Word(" " + w, 0.0, 0.0, 1.0) for w in text.split()]

    loop = "I don't know what I don't know what I don't know what"
    assert repeats_itself(words(loop), loop)
    cut_loop = "The quick brown fox jumps. The quick brown fox"
    assert repeats_itself(words(cut_loop), cut_loop)
    for speech in (
        "I know, I know. We will meet again next week to discuss the budget for the new project.",
        "We went to the store and then we went to the park.",
    ):
        assert not repeats_itself(words(speech), speech)
    assert not repeats_itself([], "")


def test_stopping_ends_between_segments(engine: WhisperEngine) -> None:
    audio = np.concatenate([speak(text, "slt") for text in SENTENCES[:3]])
    checks = 0

    def should_stop() -> bool:
        nonlocal checks
        checks += 1
        return checks > 1  # once before decoding, then stop after the first segment

    with pytest.raises(TranscriptionStopped) as info:
        engine.transcribe(audio, ENGLISH, should_stop, batched=False)
    partial = info.value.partial
    assert len(partial.segments) == 1 and partial.text.startswith("The quick brown fox")
    assert "report" not in partial.text  # the last sentence was never decoded
    assert partial.segments[0].end < partial.duration_seconds - 2


def test_an_english_only_model_refuses_other_languages_and_translation(engine: WhisperEngine) -> None:
    assert not engine.multilingual and engine.languages == ("en",)
    with pytest.raises(InvalidArgument) as info:
        engine.transcribe(silence(1), RecognitionOptions(language="de", task="translate"))
    fields = {violation.field for violation in info.value.violations}
    assert fields == {"language", "task"}
    assert "English-only" in info.value.message and "ASR_MODEL" in info.value.message


def _way_out(problem: ModelProblem | None) -> str:
    assert problem is not None and "ASR_MODEL" in problem.message
    return problem.message


def test_the_default_model_is_the_shipped_tiny_en() -> None:
    spec = AsrModelSpec()
    assert spec.model == default_model() and check_available(spec) is None
    assert {"model.bin", "tokenizer.json", "config.json"} <= {
        path.name for path in Path(spec.model).iterdir()
    }


def test_a_model_directory_must_hold_the_model_and_its_tokenizer(tmp_path: Path) -> None:
    assert "does not exist" in _way_out(check_available(AsrModelSpec(model=str(tmp_path / "nowhere"))))
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "model.bin").write_bytes(b"")
    message = _way_out(check_available(AsrModelSpec(model=str(tmp_path / "half"))))
    assert "tokenizer.json" in message and "config.json" in message
    _way_out(check_available(AsrModelSpec(model=str(tmp_path / "half" / "model.bin"))))


def test_a_size_name_is_available_from_the_cache_or_by_download(tmp_path: Path) -> None:
    """ "tiny.en" names a hub model: available from the local cache, or when downloads are allowed (the load
    fetches it); with downloads off and an empty cache, the check says how to get it."""
    message = _way_out(check_available(AsrModelSpec(model="tiny.en"), cache_dir=tmp_path))
    assert "Systran/faster-whisper-tiny.en" in message and "ASR_ALLOW_DOWNLOAD=false" in message
    assert "make models ASR_MODEL=tiny.en" in message
    assert check_available(AsrModelSpec(model="tiny.en", allow_download=True), cache_dir=tmp_path) is None
    folder = tmp_path / "models--Systran--faster-whisper-tiny.en"
    commit = "0" * 40
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(commit)
    for name in ("model.bin", "tokenizer.json", "config.json"):
        path = folder / "snapshots" / commit / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("{}")
    assert check_available(AsrModelSpec(model="tiny.en"), cache_dir=tmp_path) is None


async def test_the_manager_loads_the_real_model_and_records_it() -> None:
    ready_before = REGISTRY.get_sample_value("voice_asr_model_loads_total", {"result": "ready"}) or 0.0
    manager = new_model_manager(AsrModelSpec(device="cpu", cpu_threads=1))
    assert manager.problem() is None and manager.loaded is None
    status = await manager.load()
    assert (status.state, status.device) == (ModelState.READY, "cpu")
    assert status.precision == "int8_float32"  # CTranslate2's name for int8 weights on a CPU
    assert manager.loaded is not None and not manager.loaded.multilingual
    assert REGISTRY.get_sample_value("voice_asr_model_load_seconds") == status.load_seconds > 0
    assert REGISTRY.get_sample_value("voice_asr_model_loads_total", {"result": "ready"}) == ready_before + 1
    assert (await manager.unload()).state is ModelState.NOT_LOADED


async def test_a_bad_device_fails_with_the_reason() -> None:
    manager = new_model_manager(AsrModelSpec(device="cuda:7"))
    with pytest.raises(FailedPrecondition):
        await manager.load()
    status = manager.status()
    assert status.state is ModelState.FAILED
    assert "cuda:7" in status.message and "ASR_MODEL" in status.message


# --- a multilingual model (Whisper base) on espeak-ng speech ---


def test_a_multilingual_model_detects_the_language(
    multilingual_engine: WhisperEngine,
) -> None:
    german = multilingual_engine.transcribe(speak(GERMAN, "de"), RecognitionOptions())
    assert german.language == "de" and german.language_probability > 0.5
    assert wer(GERMAN, german.text, "de") <= SENTENCE_WER_BAR, german.text
    spanish = multilingual_engine.transcribe(speak(SPANISH, "es"), RecognitionOptions(language="auto"))
    assert spanish.language == "es" and spanish.language_probability > 0.5, spanish.text


def test_a_language_hint_is_used_instead_of_detection(
    multilingual_engine: WhisperEngine,
) -> None:
    transcript = multilingual_engine.transcribe(speak(GERMAN, "de"), RecognitionOptions(language="de"))
    assert (transcript.language, transcript.language_probability) == ("de", 1.0)
    assert wer(GERMAN, transcript.text, "de") <= SENTENCE_WER_BAR, transcript.text


def test_translate_turns_other_languages_into_english(
    multilingual_engine: WhisperEngine,
) -> None:
    transcript = multilingual_engine.transcribe(speak(GERMAN, "de"), RecognitionOptions(task="translate"))
    words = set(normalise(transcript.text).split())
    # Whisper base translates espeak-ng's robot voice loosely; the English words for the sentence's nouns come
    # through, the German ones do not.
    assert "minutes" in words and not words & {"minuten", "der", "zug", "fährt"}, transcript.text


def test_a_multilingual_model_refuses_a_language_whisper_does_not_know(
    multilingual_engine: WhisperEngine,
) -> None:
    multilingual_engine.check_options(RecognitionOptions(language="de", task="translate"))
    with pytest.raises(InvalidArgument, match="not one this model knows"):
        multilingual_engine.check_options(RecognitionOptions(language="xx"))
