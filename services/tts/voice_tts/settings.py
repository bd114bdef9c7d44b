"""Settings of the TTS service (environment variables with the ``TTS_`` prefix)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from voice_tts.model_manager import DEFAULT_MODEL, ModelSpec

if TYPE_CHECKING:
    from voice_tts.synthesizer import SynthesisLimits


class TtsSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TTS_", extra="ignore", protected_namespaces=())

    host: str = Field("127.0.0.1", description="Address to listen on (0.0.0.0 in a container).")
    port: int = Field(50053, ge=0, le=65535)
    metrics_port: int = Field(9153, ge=0, le=65535, description="Prometheus /metrics port; 0 turns it off.")
    model: str = Field(
        DEFAULT_MODEL,
        description='A model directory, a hub id, or a size ("0.6B", "1.7B") of the Base model.',
    )
    device: str = Field("auto", description="auto, cpu, cuda or cuda:N.")
    dtype: str = Field("auto", description="auto, float32, bfloat16 or float16.")
    attn_implementation: str | None = Field(
        None, description="e.g. sdpa or flash_attention_2; unset: default."
    )
    preload: bool = Field(False, description="Load the model at start instead of on the first request.")
    idle_unload_seconds: float = Field(
        0, ge=0, description="Unload the model after this long unused; 0: never."
    )
    profiles_address: str = Field("127.0.0.1:50052", description="host:port of the profile service.")
    max_text_chars: int = Field(5000, ge=1)
    max_queue: int = Field(32, ge=1, description="Requests waiting or running; one more is refused.")
    max_batch: int = Field(
        8,
        ge=1,
        description="Requests stepped through the model together (continuous batching); 1: one at a time.",
    )
    prompt_cache_entries: int = Field(64, ge=0, description="Voice prompts kept in memory; 0: store only.")
    first_chunk_frames: int = Field(4, ge=1)
    chunk_frames: int = Field(12, ge=1)
    left_context_frames: int = Field(25, ge=0)

    def spec(self) -> ModelSpec:
        return ModelSpec(
            model=self.model,
            device=self.device,
            dtype=self.dtype,
            attn_implementation=self.attn_implementation,
        )

    def limits(self) -> SynthesisLimits:
        # Imported here: the synthesizer pulls in torch, which ``python -m voice_tts`` loads only after it has
        # installed its signal handlers (a SIGTERM during that import must still stop it cleanly).
        from voice_tts.synthesizer import SynthesisLimits

        return SynthesisLimits(
            max_text_chars=self.max_text_chars,
            max_queue=self.max_queue,
            max_batch=self.max_batch,
            first_chunk_frames=self.first_chunk_frames,
            chunk_frames=self.chunk_frames,
            left_context_frames=self.left_context_frames,
        )
