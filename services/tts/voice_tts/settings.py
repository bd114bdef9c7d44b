"""Settings of the TTS service (environment variables with the ``TTS_`` prefix)."""

from __future__ import annotations

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from voice_common.audio.reference_audio import DEFAULT_MAX_SECONDS, DEFAULT_MIN_SECONDS, ReferenceLimits
from voice_common.model_manager import ALLOW_DOWNLOAD_DESCRIPTION
from voice_tts.model_manager import DEFAULT_MODEL, ModelSpec
from voice_tts.synthesis_types import SynthesisLimits  # plain types: no torch before the signal handlers


class TtsSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TTS_", extra="ignore", protected_namespaces=())

    host: str = Field(
        "127.0.0.1",
        description="Address the gRPC server listens on; 0.0.0.0 in a container (every interface).",
    )
    port: int = Field(50053, ge=0, le=65535, description="gRPC port; 0 picks a free one (tests).")
    metrics_port: int = Field(
        9153, ge=0, le=65535, description="Port of the Prometheus /metrics endpoint; 0 turns it off."
    )
    model: str = Field(
        DEFAULT_MODEL,
        description="The Qwen3-TTS Base model: a hub id (downloaded into the local Hugging Face cache, HF_HUB_CACHE "
        'else HF_HOME/hub, on first use or by `make models`), a size ("0.6B", "1.7B") naming the Base model of '
        "that size, or a model directory (config.json and speech_tokenizer/; nothing is downloaded). For a test "
        "model: `make tiny-model`, then TTS_MODEL=models/tiny-qwen3-tts. Without a usable model the service still "
        "starts and reports NOT_SERVING with the reason.",
    )
    allow_download: bool = Field(True, description=ALLOW_DOWNLOAD_DESCRIPTION)
    device: str = Field(
        "auto",
        description="Where the model runs: auto (cuda:0 when a CUDA GPU is there, else cpu), cpu, cuda or cuda:N.",
    )
    dtype: str = Field(
        "auto",
        description="Precision of the weights: auto (bfloat16 on CUDA, float32 on CPU), float32, bfloat16 or "
        "float16.",
    )
    attn_implementation: str | None = Field(
        None,
        description="Attention kernel passed to transformers, e.g. sdpa or flash_attention_2 (needs the flash-attn "
        "package); unset: transformers' default.",
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
        description="host:port of the profile service (voices from profiles, the generation history).",
    )
    max_text_chars: int = Field(
        5000, ge=1, description="Longest text of one request, in characters; longer: INVALID_ARGUMENT."
    )
    min_reference_seconds: float = Field(
        DEFAULT_MIN_SECONDS,
        gt=0,
        description="Shortest inline reference clip accepted (seconds of audio); must be below the longest. "
        "Inline references are held to the rules of a profile sample (also silence and cut-off WAVs), so keep "
        "this equal to PROFILES_MIN_SAMPLE_SECONDS.",
    )
    max_reference_seconds: float = Field(
        DEFAULT_MAX_SECONDS,
        gt=0,
        description="Longest inline reference clip accepted (seconds of audio; the prompt uses at most 20 s of "
        "it); keep this equal to PROFILES_MAX_SAMPLE_SECONDS.",
    )
    max_queue: int = Field(
        32,
        ge=1,
        description="Requests waiting or running at once; one more gets RESOURCE_EXHAUSTED with a retry hint.",
    )
    max_batch: int = Field(
        8,
        ge=1,
        description="Requests stepped through the model together, frame by frame (continuous batching); the rest "
        "wait in the queue. 1: one at a time, bit-exact reproducible under load.",
    )
    prompt_cache_entries: int = Field(
        64,
        ge=0,
        description="Voice prompts kept in memory (all are also kept in the object store); 0: the store only.",
    )
    prompt_ttl_seconds: float = Field(
        7 * 24 * 3600,
        ge=0,
        description="Voice prompts kept in the object store (under each tenant's tenants/<tenant>/prompts/) are "
        "deleted once unused for this long (default 7 days): a replica sweeps them at least hourly, and a prompt "
        "in use is renewed now and then. Prompts of a deleted profile go with the profile. 0: kept forever.",
    )
    first_chunk_frames: int = Field(
        4,
        ge=1,
        description="Streaming: codec frames (12.5 a second of audio) generated before the first audio is sent; "
        "4 frames = 0.32 s of audio.",
    )
    chunk_frames: int = Field(
        12, ge=1, description="Streaming: codec frames in each later audio chunk (12 = 0.96 s of audio)."
    )

    @model_validator(mode="after")
    def _reference_lengths_ordered(self) -> TtsSettings:
        if self.min_reference_seconds >= self.max_reference_seconds:
            raise ValueError("TTS_MIN_REFERENCE_SECONDS must be below TTS_MAX_REFERENCE_SECONDS")
        return self

    def reference_limits(self) -> ReferenceLimits:
        return ReferenceLimits(self.min_reference_seconds, self.max_reference_seconds)

    def spec(self) -> ModelSpec:
        return ModelSpec(
            model=self.model,
            device=self.device,
            dtype=self.dtype,
            attn_implementation=self.attn_implementation,
            allow_download=self.allow_download,
        )

    def limits(self) -> SynthesisLimits:
        return SynthesisLimits(
            max_text_chars=self.max_text_chars,
            max_queue=self.max_queue,
            max_batch=self.max_batch,
            first_chunk_frames=self.first_chunk_frames,
            chunk_frames=self.chunk_frames,
        )
