"""Live transcription: text for audio that is still arriving, with Whisper, which only transcribes whole clips.

The method is "local agreement" (Macháček, Dabre and Bojar, "Turning Whisper into Real-Time Transcription
System", 2023, the whisper_streaming project): keep the audio not yet committed in a buffer, re-recognize the whole
buffer every ``step_seconds`` of new audio (with the committed text before it as the prompt), and commit the
longest prefix of words on which the last two passes agree. Whisper rarely changes its mind about words that two
overlapping passes both heard, so committed text is final; the words after it are the interim guess.

Endpointing: a voice activity detector (Silero, through faster-whisper) watches the tail. When the speaker pauses
briefly a pass runs at once instead of waiting for the next step (so the whole utterance has been heard), and when
the silence lasts ``endpoint_silence_seconds`` everything that pass heard is committed and the buffer starts
afresh. A buffer that holds no speech is never recognized, so silence gives no text (Whisper invents words for
silence) and costs only the detector.

The buffer stays bounded: after a commit it is cut at the end of the last committed sentence, and past
``max_buffer_seconds`` the oldest words are committed as they are.

:class:`StreamingRecognizer` does no I/O and no threading of its own: :meth:`~StreamingRecognizer.feed` only
stores samples; :meth:`~StreamingRecognizer.step` and :meth:`~StreamingRecognizer.finish` may run the recognizer
(blocking, CPU or GPU bound), so an async caller runs them in a worker thread, one call at a time per stream.
"""

from __future__ import annotations

import difflib
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from voice_asr.transcript import SAMPLE_RATE, RecognitionOptions, Transcript, Word, repeats_itself

# Audio (16 kHz mono float32) and a prompt to the words heard, with times relative to the start of the audio. The
# prompt is the committed text before the audio for a pass that makes text final ("" when there is none), and None
# for an interim pass. The engine's adapter provides it, decoding as :func:`pass_options` says.
Recognizer = Callable[[np.ndarray, str | None], Sequence[Word]]
# Audio (16 kHz mono float32) to the spans of speech in it, in seconds from its start.
SpeechDetector = Callable[[np.ndarray], list[tuple[float, float]]]


@dataclass(frozen=True)
class LiveSettings:
    # Seconds of new audio between two recognition passes: CPU against how often interim text changes. With the
    # short window an interim pass over a few seconds of buffer took about 0.12 s (tiny.en, 2 threads).
    step_seconds: float = 0.5
    # Silence (as the detector measures it, after its padding) that ends an utterance: everything heard is final.
    endpoint_silence_seconds: float = 0.5
    # A shorter silence after speech that starts a pass at once, so the endpoint finds the utterance already heard.
    pause_seconds: float = 0.1
    # The buffer never grows past this; Whisper's window is 30 s and shorter buffers decode faster.
    max_buffer_seconds: float = 15.0
    # Characters of committed text given to Whisper as the prompt (context and spelling) for the pass that makes an
    # utterance final; 0: none. Only that pass gets it (see _run_pass): a prompt on every pass made interim passes
    # up to twice as slow with tiny.en on a CPU and made Whisper end cut-off sentences with "...".
    prompt_chars: int = 200
    # Interim passes encode a short window (about twice the buffer instead of Whisper's 30 s; see
    # voice_asr.engine): four times cheaper on a CPU, so the step can be short. Final passes keep the full window.
    short_window: bool = True
    interim_results: bool = True
    # LocalAgreement compares passes at least this much audio apart; the passes in between give interim results.
    # Passes half a second apart heard nearly the same audio and agreed on the same mistakes: a 3-sentence file
    # streamed fast in 12 arrival patterns gave WER 0.070 (max 0.108) comparing passes 0.5 s apart, 0.050 (max
    # 0.054) 1 s apart; Transcribe 0.027.
    agreement_seconds: float = 1.0
    # The detector runs again only after this much new audio (it is cheap, but not free on every 20 ms chunk).
    vad_interval_seconds: float = 0.1

    def __post_init__(self) -> None:
        if self.step_seconds <= 0 or self.endpoint_silence_seconds <= 0 or self.pause_seconds < 0:
            raise ValueError("step_seconds and endpoint_silence_seconds must be positive")
        if self.max_buffer_seconds < 2 * self.step_seconds:
            raise ValueError("max_buffer_seconds must hold at least two steps")


@dataclass(frozen=True)
class LiveResult:
    is_final: bool
    text: str
    start_seconds: float  # where the text is in the stream
    end_seconds: float
    words: tuple[Word, ...]  # times in seconds from the start of the stream
    audio_seconds: float  # audio received when the result was made
    stability: float = 1.0  # interim only: how much of this guess the previous pass also made, 0 to 1


@dataclass
class LiveStats:
    passes: int = 0  # recognition passes run
    recognition_seconds: float = 0.0  # wall time spent in the recognizer
    detector_seconds: float = 0.0


def pass_options(
    options: RecognitionOptions, prompt: str | None, settings: LiveSettings
) -> RecognitionOptions:
    """How a recognizer adapter decodes a pass of the recognizer (``prompt`` as the recognizer gave it).

    Every pass: word timestamps on, no VAD filter (this module decides what is speech) and no temperature fallback.
    The fallback made single passes take up to 6 s, and its sampling made the pass that makes an utterance final a
    gamble: about one fast-fed stream in three on an AMD EPYC ended an utterance with a made-up sentence ("... the
    new project we'll meet again next week. We'll see you next time in the next one."), a different one each time.
    A final pass whose greedy decode loops is decoded again plainly (:class:`StreamingRecognizer`). An interim pass
    (prompt None) stays cheap: with ``settings.short_window``, a short encoder window. A final pass gets the
    committed text as its prompt (else the caller's) and the full window, as Transcribe decodes a file."""
    final = prompt is not None
    return replace(
        options,
        word_timestamps=True,
        vad_filter=False,
        initial_prompt=prompt or options.initial_prompt,
        temperature_fallback=False,
        short_encoder_window=settings.short_window and not final,
    )


def words_of(transcript: Transcript) -> list[Word]:
    """The words of a transcript, for a recognizer that returns whole transcripts (word timestamps on)."""
    return [word for segment in transcript.segments for word in segment.words]


_VAD_OPTIONS: dict[str, float] = {
    "threshold": 0.5,
    "min_speech_duration_ms": 100,
    # Short, so the end of speech is seen early; endpointing itself waits for endpoint_silence_seconds.
    "min_silence_duration_ms": 100,
    "speech_pad_ms": 100,
}


def silero_speech_spans(audio: np.ndarray) -> list[tuple[float, float]]:
    """Speech spans by faster-whisper's bundled Silero VAD (offline, ONNX on the CPU)."""
    # Imported here so the module (and its tests with other detectors) loads without faster-whisper's ONNX model.
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    spans = get_speech_timestamps(audio, VadOptions(**_VAD_OPTIONS))
    return [(span["start"] / SAMPLE_RATE, span["end"] / SAMPLE_RATE) for span in spans]


# Seconds of the silence after the detected end of speech that a pass hears (the detector already pads its spans).
_SILENCE_HEARD = 0.2

_NOT_WORD = re.compile(r"[^\w']+")
_SENTENCE_END = re.compile(r"[.?!…][\"')\]]*$")


# Prompt repeats: runs of at least this many words found in the last _REPEAT_WINDOW committed words.
_REPEAT_MIN_WORDS = 4
_REPEAT_WINDOW = 60
# A word shorter than this at the end of a pass has no sound under it (real words take 0.1 s or more; Whisper's
# alignment steps are 20 ms).
_UNHEARD_SECONDS = 0.05
# Below this probability a word is as likely made up as heard (faster-whisper's mark of a hallucinated word).
_UNSURE_PROBABILITY = 0.15


def _norm(word: Word) -> str:
    """Two passes agree on a word when it is the same up to case and punctuation ("dog," and "dog.")."""
    return _NOT_WORD.sub("", word.text.lower())


def _join(words: Sequence[Word]) -> str:
    return "".join(word.text for word in words).strip()


class StreamingRecognizer:
    """Live transcription of one stream. Not thread-safe: one call at a time (any thread)."""

    def __init__(
        self,
        recognize: Recognizer,
        settings: LiveSettings | None = None,
        *,
        speech_spans: SpeechDetector = silero_speech_spans,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._recognize = recognize
        self._settings = settings or LiveSettings()
        self._speech_spans = speech_spans
        self._clock = clock
        self.stats = LiveStats()
        self._chunks: list[np.ndarray] = []  # fed since the buffer was last assembled
        self._buffer = np.zeros(0, dtype=np.float32)  # uncommitted audio (and committed audio not yet cut)
        self._buffer_start = 0  # samples of the stream before the buffer
        self._received = 0  # samples of the stream so far
        self._committed: list[Word] = []
        self._committed_end = 0.0  # stream seconds where the committed words end
        self._tail: list[Word] = []  # the last pass's words after the committed ones (stream times)
        # The pass that the next agreement compares with (at least agreement_seconds of audio before it): its words
        # after the committed ones, and the stream sample up to which it heard.
        self._reference: list[Word] = []
        self._reference_end: int | None = None  # None: no pass since the buffer started afresh
        self._pass_end = 0  # stream sample up to which the last pass heard (0: none since the last commit)
        self._vad_at = -1  # stream sample at the last detector run
        # End of the first uncommitted utterance (stream seconds; None: no speech), and the start of the speech
        # after the pause that ends it (None: silence or speech continues to the end of the audio received).
        self._speech_end: float | None = None
        self._next_speech: float | None = None
        self._finished = False

    # --- what the caller reads ---

    @property
    def audio_seconds(self) -> float:
        return self._received / SAMPLE_RATE

    @property
    def buffer_seconds(self) -> float:
        return (len(self._buffer) + sum(len(c) for c in self._chunks)) / SAMPLE_RATE

    @property
    def text(self) -> str:
        """Everything committed so far (the stream's summary text)."""
        return _join(self._committed)

    # --- feeding and recognizing ---

    def feed(self, samples: np.ndarray) -> list[LiveResult]:
        """Add 16 kHz mono float32 samples. Only stores them (no inference); returns no results today, a list
        so that the caller's loop reads the same for every call."""
        if self._finished:
            raise RuntimeError("feed() after finish()")
        x = np.asarray(samples, dtype=np.float32).reshape(-1)
        if x.size:
            self._chunks.append(x)
            self._received += x.size
        return []

    def step(self) -> list[LiveResult]:
        """Recognize if it is time: after ``step_seconds`` of new speech, at a pause, at an endpoint, or when the
        buffer is full. Cheap when it is not time (at most a detector run over the uncommitted audio)."""
        if self._finished:
            return []
        self._assemble()
        s = self._settings
        now = self._received
        if now - self._vad_at >= s.vad_interval_seconds * SAMPLE_RATE:
            self._detect_speech()
        if self._speech_end is None:
            self._drop_silence()
            return []
        # A recognizer that fell behind finds the pause mid-buffer, with the next utterance already after it.
        silence = (self._next_speech or now / SAMPLE_RATE) - self._speech_end
        heard_it_all = self._pass_end / SAMPLE_RATE >= self._speech_end
        if silence >= s.endpoint_silence_seconds:
            if not heard_it_all:
                self._tail = self._run_pass(final=True)
            return self._endpoint()
        results: list[LiveResult] = []
        if self.buffer_seconds > s.max_buffer_seconds:
            results += self._force_commit()
        new_audio = (now - max(self._pass_end, self._buffer_start)) / SAMPLE_RATE
        if new_audio >= s.step_seconds or (silence >= s.pause_seconds and not heard_it_all):
            results += self._agree(self._run_pass())
        return results

    def finish(self) -> list[LiveResult]:
        """The stream has ended: recognize what is left and commit it all. Returns the last final result(s)."""
        if self._finished:
            return []
        self._assemble()
        self._detect_speech()
        results: list[LiveResult] = []
        while self._speech_end is not None:  # one utterance at a time, if several are waiting
            more = self._next_speech is not None
            if self._pass_end / SAMPLE_RATE < self._speech_end:
                self._tail = self._run_pass(final=True)
            results += self._endpoint()
            if not more:
                break
            self._detect_speech()
        self._finished = True
        return results

    # --- internals ---

    def _assemble(self) -> None:
        if self._chunks:
            self._buffer = np.concatenate([self._buffer, *self._chunks])
            self._chunks.clear()

    def _cut(self, stream_seconds: float) -> None:
        """Drop the buffer's audio before ``stream_seconds``."""
        cut = round(stream_seconds * SAMPLE_RATE) - self._buffer_start
        cut = max(0, min(cut, len(self._buffer)))
        if cut:
            self._buffer = self._buffer[cut:]
            self._buffer_start += cut

    def _detect_speech(self) -> None:
        """Find where the uncommitted speech ends (None: there is none)."""
        self._vad_at = self._received
        # From a little before the committed end: the detector needs the onset of a word to call it speech.
        start = max(self._buffer_start / SAMPLE_RATE, self._committed_end - 0.3)
        offset = round(start * SAMPLE_RATE) - self._buffer_start
        t0 = self._clock()
        spans = self._speech_spans(self._buffer[offset:]) if len(self._buffer) - offset > 0 else []
        self.stats.detector_seconds += self._clock() - t0
        spans = [
            (start + begin, start + end)
            for begin, end in spans
            if start + end > self._committed_end + 0.05 and end > begin
        ]
        self._speech_end = self._next_speech = None
        for begin, end in sorted(spans):
            if (
                self._speech_end is not None
                and begin - self._speech_end >= self._settings.endpoint_silence_seconds
            ):
                self._next_speech = begin
                break
            self._speech_end = end if self._speech_end is None else max(self._speech_end, end)

    def _drop_silence(self) -> None:
        """No speech after the committed words: keep only a short tail (a word may be starting in it). A guess
        from an earlier pass that the detector hears no speech under was Whisper inventing words: dropped."""
        self._tail = []
        self._reference, self._reference_end = [], None
        self._cut(max(self._committed_end, self._received / SAMPLE_RATE - 0.5))

    def _prompt(self) -> str | None:
        """Committed text before the buffer, as Whisper's context."""
        if self._settings.prompt_chars <= 0:
            return None
        before = [w for w in self._committed if w.end <= self._buffer_start / SAMPLE_RATE + 0.05]
        text = _join(before)[-self._settings.prompt_chars :].strip()
        return text or None

    def _run_pass(self, *, final: bool = False) -> list[Word]:
        """Recognize the buffer; the words after the committed ones, in stream times."""
        offset = self._buffer_start / SAMPLE_RATE
        audio = self._buffer
        speech_end = self._speech_end
        if speech_end is not None:
            # Silence after the speech is where Whisper invents words ("Thank you."): it hears only a little of it.
            audio = audio[: max(0, round((speech_end + _SILENCE_HEARD) * SAMPLE_RATE) - self._buffer_start)]
        t0 = self._clock()
        # The context (prompt) goes only to the pass that makes an utterance final: interim passes run every step
        # and must stay short (a prompt on every pass made them up to twice as slow); the final pass decides the
        # text. A final pass always gets a string ("" without context), an interim one None, so that the recognizer
        # decodes final passes more carefully (pass_options).
        words = self._recognize(audio, (self._prompt() or "") if final else None)
        if final and repeats_itself(words, _join(words)):
            # A final pass decodes with the committed text as its prompt. When it ends in a loop ("... the new
            # project and the next project will be the first time we get a new project from the first time we get a
            # new project from ...", seen on an AMD EPYC), what is heard is the plain decode of an interim pass.
            self.stats.passes += 1
            words = self._recognize(audio, None)
        self.stats.recognition_seconds += self._clock() - t0
        self.stats.passes += 1
        self._pass_end = self._buffer_start + len(audio)
        shifted = [replace(w, start=w.start + offset, end=w.end + offset) for w in words if _norm(w)]
        # Whisper may go on writing after the speech: a repeat of what it just said ("... the new project project.",
        # "... project we will meet again next week."), or "Alright.", all squeezed by the alignment into the last
        # instant of the audio (seen on an AMD EPYC in 1 final pass of 3 of the same file). Words with no time are
        # words nobody said.
        if shifted and shifted[-1].end - shifted[-1].start < _UNHEARD_SECONDS:
            while shifted and shifted[-1].end - shifted[-1].start < _UNHEARD_SECONDS:
                shifted.pop()
            # The first word it wrote past the speech may get the silence left over as its time ("We" over
            # the last 0.3 s, beyond the detector's end of speech), but not Whisper's confidence.
            while shifted and shifted[-1].probability < _UNSURE_PROBABILITY:
                shifted.pop()
        # The buffer may still hold committed words: skip those (by time, with Whisper's timing slack); and words
        # that start where the detector heard no speech were made up.
        last_start = float("inf") if speech_end is None else speech_end
        fresh = [w for w in shifted if self._committed_end - 0.1 <= w.start < last_start]
        # ... and a repeat of the committed tail that the times let through (whisper_streaming does the same).
        committed = [_norm(w) for w in self._committed[-_REPEAT_WINDOW:]]
        heard = [_norm(w) for w in fresh]
        for n in range(min(5, len(committed), len(fresh)), 0, -1):
            if committed[-n:] == heard[:n]:
                return fresh[n:]
        # ... and Whisper repeating the prompt (the committed text given as context) with times after it: a run of
        # several words that the recent committed text already holds, word for word, is dropped.
        for n in range(min(len(heard), len(committed)), _REPEAT_MIN_WORDS - 1, -1):
            run = heard[:n]
            if any(committed[i : i + n] == run for i in range(len(committed) - n + 1)):
                return fresh[n:]
        return fresh

    def _agree(self, hypothesis: list[Word]) -> list[LiveResult]:
        """LocalAgreement-2: commit what this pass and the reference pass (``agreement_seconds`` of audio earlier)
        both say at the start of the new text; the rest is the interim guess."""
        previous = self._tail
        results: list[LiveResult] = []
        agreed = 0
        if self._reference_end is None:  # the first pass of an utterance: the next ones are compared with it
            self._reference, self._reference_end = list(hypothesis), self._pass_end
        elif self._pass_end - self._reference_end >= self._settings.agreement_seconds * SAMPLE_RATE:
            reference = self._reference
            while agreed < min(len(reference), len(hypothesis)) and _norm(reference[agreed]) == _norm(
                hypothesis[agreed]
            ):
                agreed += 1
            results += self._commit(hypothesis[:agreed])
            self._reference = hypothesis[agreed:]
            self._reference_end = self._pass_end
        tail = hypothesis[agreed:]
        if self._settings.interim_results and tail:
            # The fraction of this guess that the previous guess also made (in order, after what is committed).
            earlier = [_norm(w) for w in previous if w.start >= self._committed_end - 0.1]
            matcher = difflib.SequenceMatcher(a=earlier, b=[_norm(w) for w in tail], autojunk=False)
            stability = sum(block.size for block in matcher.get_matching_blocks()) / len(tail)
            results.append(self._result(tail, is_final=False, stability=round(stability, 3)))
        self._tail = tail
        return results

    def _commit(self, words: list[Word]) -> list[LiveResult]:
        if not words:
            return []
        self._committed += words
        self._committed_end = max(self._committed_end, words[-1].end)
        # Cut at the end of the last committed sentence: Whisper then starts afresh at a sentence, with the text
        # before it as the prompt, and the buffer stays short (a shorter buffer decodes faster).
        for word in reversed(words):
            if _SENTENCE_END.search(word.text.strip()):
                self._cut(word.end)
                break
        return [self._result(words, is_final=True)]

    def _endpoint(self) -> list[LiveResult]:
        """The utterance has ended: what the last pass heard of it is final; the buffer starts afresh after it."""
        end = self._speech_end if self._speech_end is not None else float("inf")
        results = self._commit([w for w in self._tail if w.start < end])
        self._tail = []
        self._reference, self._reference_end = [], None
        # Keep 0.1 s before the next speech (or of the silence), for the next word's onset.
        self._cut((self._next_speech or self._received / SAMPLE_RATE) - 0.1)
        self._committed_end = max(self._committed_end, self._buffer_start / SAMPLE_RATE)
        self._pass_end = 0
        self._speech_end = self._next_speech = None
        self._vad_at = -1  # look again: the next utterance may be in the buffer already
        return results

    def _force_commit(self) -> list[LiveResult]:
        """The buffer is full without agreement (a long unbroken utterance, or passes that keep changing their
        mind): commit the last guess except its final second, and cut the buffer there."""
        keep_from = self._received / SAMPLE_RATE - 1.0
        old = [w for w in self._tail if w.end <= keep_from]
        self._tail = [w for w in self._tail if w.end > keep_from]
        self._reference = list(self._tail)
        results = self._commit(old)
        if old:
            self._cut(old[-1].end)
        # Noise that Whisper hears no words in: drop the oldest audio anyway.
        self._cut(
            self._received / SAMPLE_RATE - self._settings.max_buffer_seconds + self._settings.step_seconds
        )
        self._committed_end = max(self._committed_end, self._buffer_start / SAMPLE_RATE)
        return results

    def _result(self, words: Sequence[Word], *, is_final: bool, stability: float = 1.0) -> LiveResult:
        return LiveResult(
            is_final=is_final,
            text=_join(words),
            start_seconds=words[0].start,
            end_seconds=words[-1].end,
            words=tuple(words),
            audio_seconds=self.audio_seconds,
            stability=1.0 if is_final else stability,
        )
