"""Settings of the profile service (environment variables with the ``PROFILES_`` prefix)."""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from voice_common.audio.reference_audio import DEFAULT_MAX_SECONDS, DEFAULT_MIN_SECONDS
from voice_profiles.domain.limits import Limits
from voice_profiles.domain.transcripts import TranscriptPolicy


class ProfilesSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PROFILES_", extra="ignore")

    host: str = Field("127.0.0.1", description="Address to listen on (0.0.0.0 in a container).")
    port: int = Field(50052, ge=0, le=65535, description="gRPC port; 0 picks a free one.")
    metrics_port: int = Field(9152, ge=0, le=65535, description="Prometheus /metrics port; 0 turns it off.")
    max_sample_mb: float = Field(50, gt=0, description="Largest accepted upload in AddSample (MB).")
    min_sample_seconds: float = Field(
        DEFAULT_MIN_SECONDS,
        gt=0,
        description="Shortest sample accepted (seconds of audio); must be below the longest. Keep "
        "TTS_MIN_REFERENCE_SECONDS the same, so an inline TTS reference meets the rule a sample does.",
    )
    max_sample_seconds: float = Field(
        DEFAULT_MAX_SECONDS,
        gt=0,
        description="Longest sample accepted (seconds of audio); keep TTS_MAX_REFERENCE_SECONDS the same.",
    )
    max_samples_per_profile: int = Field(
        50, ge=1, description="Samples one profile may hold; one more is FAILED_PRECONDITION."
    )
    max_generation_mb: float = Field(
        200, gt=0, description="Largest generation the TTS service may store in the history (MB)."
    )
    max_import_mb: float = Field(
        1024, gt=0, description="Largest profile archive ImportProfile accepts (MB)."
    )
    temporary_profile_ttl_seconds: float = Field(
        12 * 3600, gt=0, description="Default life of a temporary profile."
    )
    preview_ttl_seconds: float = Field(20 * 60, gt=0, description="Default life of a preview generation.")
    sweep_interval_seconds: float = Field(
        60, gt=0, description="How often expired data and failed deletes are swept."
    )
    read_cache_seconds: float = Field(
        1.0,
        ge=0,
        description="How long a replica may serve a profile read from memory; its own writes show at once, "
        "other replicas' within this time. 0 turns the cache off.",
    )
    read_cache_entries: int = Field(10_000, ge=1, description="Profiles the read cache holds at most.")
    upload_lease_seconds: float = Field(
        3600,
        gt=0,
        description="How long the objects of an upload being stored are protected from the sweeper; an upload "
        "that takes longer to store (from its last byte to its commit) fails, and the objects of one whose "
        "process died are deleted by the sweeper this long after they were written.",
    )
    request_id_retention_seconds: float = Field(
        24 * 3600,
        gt=0,
        description="How long the request id of an upload (AddSample, CreateGeneration, ImportProfile) is "
        "remembered: a retry with the same id within this time returns the first result instead of a copy.",
    )
    asr_address: str = Field(
        "127.0.0.1:50054",
        description="host:port of the ASR service, which transcribes samples added without a reference text; "
        "empty turns automatic transcription off.",
    )
    transcribe_interval_seconds: float = Field(
        10,
        gt=0,
        description="How often samples still needing a transcript are looked for (an AddSample without text "
        "starts a round at once; this is the safety net for restarts and ASR outages).",
    )
    transcribe_batch: int = Field(20, ge=1, description="Samples transcribed per round at most.")
    transcribe_timeout_seconds: float = Field(
        120, gt=0, description="Deadline of one call to the ASR service."
    )
    transcribe_max_attempts: int = Field(
        3,
        ge=1,
        description="Attempts that gave no text (silence, music) after which a sample is left as it is.",
    )
    transcribe_retry_seconds: float = Field(
        300, gt=0, description="Wait after an attempt that gave no text; doubles after each further attempt."
    )
    migrate_on_start: bool | None = Field(
        None, description="Run migrations at start. Unset: yes in embedded mode (SQLite), no with Postgres."
    )

    @model_validator(mode="after")
    def _durations_ordered(self) -> ProfilesSettings:
        if self.min_sample_seconds >= self.max_sample_seconds:
            raise ValueError("PROFILES_MIN_SAMPLE_SECONDS must be below PROFILES_MAX_SAMPLE_SECONDS")
        return self

    def limits(self) -> Limits:
        megabyte = 1024 * 1024
        return Limits(
            max_sample_bytes=int(self.max_sample_mb * megabyte),
            min_sample_seconds=self.min_sample_seconds,
            max_sample_seconds=self.max_sample_seconds,
            max_samples_per_profile=self.max_samples_per_profile,
            max_generation_bytes=int(self.max_generation_mb * megabyte),
            max_import_bytes=int(self.max_import_mb * megabyte),
            temporary_profile_ttl=timedelta(seconds=self.temporary_profile_ttl_seconds),
            preview_ttl=timedelta(seconds=self.preview_ttl_seconds),
            read_cache_seconds=self.read_cache_seconds,
            read_cache_entries=self.read_cache_entries,
            upload_lease=timedelta(seconds=self.upload_lease_seconds),
            request_id_retention=timedelta(seconds=self.request_id_retention_seconds),
        )

    def transcript_policy(self) -> TranscriptPolicy:
        return TranscriptPolicy(
            batch=self.transcribe_batch,
            max_attempts=self.transcribe_max_attempts,
            retry_after=timedelta(seconds=self.transcribe_retry_seconds),
        )
