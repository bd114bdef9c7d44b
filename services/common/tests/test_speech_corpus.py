"""The recorded test speech (tests/speech) and the WER the ASR assertions use: the corpus holds exactly what the
generator lists, a missing recording says how to make it, and numbers count as the words they are spoken as."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tools.make_test_speech import recording_for, wanted
from voice_testing.speech import (
    CORPUS_DIR,
    GERMAN,
    MANIFEST,
    SAMPLE_RATE,
    SENTENCES,
    NotRecorded,
    normalise,
    pooled_wer,
    speak,
    wer,
)


def test_the_corpus_holds_what_the_generator_lists_and_nothing_else() -> None:
    manifest = json.loads(MANIFEST.read_text(encoding="utf-8"))
    assert manifest == [vars(recording_for(text, voice)) for text, voice in wanted()]
    files = sorted(path.name for path in CORPUS_DIR.glob("*.flac"))
    assert files == sorted(entry["file"] for entry in manifest)
    # Committed to git: a few MB at most.
    assert sum((CORPUS_DIR / name).stat().st_size for name in files) < 5_000_000


def test_speech_is_float32_at_16_khz_and_each_call_gets_its_own_copy() -> None:
    audio = speak(SENTENCES[0], "slt")
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert 2.5 < audio.size / SAMPLE_RATE < 8 and np.abs(audio).max() > 0.1
    audio[:] = 0
    assert np.abs(speak(SENTENCES[0], "slt")).max() > 0.1
    german = speak(GERMAN, "de")  # espeak-ng's 22.05 kHz, resampled on reading
    assert 2.5 < german.size / SAMPLE_RATE < 8


def test_an_unrecorded_text_names_the_way_to_record_it() -> None:
    with pytest.raises(NotRecorded) as info:
        speak("A sentence nobody recorded.", "slt")
    message = str(info.value)
    assert "tools/make_test_speech.py" in message and "flite" in message and "tests/speech" in message
    with pytest.raises(NotRecorded):
        speak(SENTENCES[0], "kal")  # a recorded text in a voice it was not recorded in


def test_numbers_count_as_the_words_they_are_spoken_as() -> None:
    assert wer("The train leaves every twenty minutes.", "the train leaves every 20 minutes") == 0
    assert normalise("On the 21st, 1,000 people came.") == "on the twenty first one thousand people came"
    assert wer(GERMAN, "Der Zug in die Stadt fährt alle zwanzig Minuten vom Hauptbahnhof ab", "de") == 0
    assert normalise("Don't 'quote' me_now") == "don't quote me now"


def test_pooled_wer_weighs_each_word_once_and_unrelated_text_scores_near_one() -> None:
    assert pooled_wer(["a b c d", "e f"], ["a b c d", ""]) == pytest.approx(2 / 6)
    assert pooled_wer(["a b c d", "e f"], ["a b c d", "e x"]) == pytest.approx(1 / 6)
    references = list(SENTENCES)
    assert pooled_wer(references, [text.upper() for text in references]) == 0
    assert pooled_wer(references, references[1:] + references[:1]) > 0.7
    with pytest.raises(ValueError):
        pooled_wer(references, references[:-1])
