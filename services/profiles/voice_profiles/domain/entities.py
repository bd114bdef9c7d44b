"""What the profile service holds, as plain data (no ORM, no protobuf)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Generic, TypeVar

# The languages Qwen3-TTS speaks, plus "auto" (let the model decide).
LANGUAGES = ("zh", "en", "ja", "ko", "de", "fr", "ru", "pt", "es", "it")
LANGUAGE_CHOICES = (*LANGUAGES, "auto")


class TranscriptState(enum.Enum):
    PROVIDED = "provided"
    NEEDED = "needed"
    MACHINE = "machine"


@dataclass(frozen=True)
class Profile:
    id: str
    name: str
    description: str
    language: str
    created_at: datetime
    updated_at: datetime
    expires_at: datetime | None
    sample_count: int = 0
    total_sample_seconds: float = 0.0


@dataclass(frozen=True)
class SampleWarningInfo:
    code: str  # "clipping" | "low_level"
    message: str


@dataclass(frozen=True)
class Sample:
    id: str
    profile_id: str
    reference_text: str | None
    transcript_state: TranscriptState
    file_name: str
    mime_type: str
    original_size_bytes: int
    original_key: str
    audio_key: str
    audio_sha256: str
    duration_seconds: float
    sample_rate: int
    peak_dbfs: float
    rms_dbfs: float
    warnings: tuple[SampleWarningInfo, ...]
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class Generation:
    id: str
    profile_id: str | None
    profile_name: str
    text: str
    language: str
    seed: int
    parameters: dict[str, float]
    model_id: str
    duration_seconds: float
    sample_rate: int
    audio_key: str
    size_bytes: int
    created_at: datetime
    expires_at: datetime | None


@dataclass(frozen=True)
class ProfileFilter:
    name_contains: str = ""
    language: str = ""


@dataclass(frozen=True)
class GenerationFilter:
    profile_id: str = ""
    text_contains: str = ""
    created_from: datetime | None = None
    created_before: datetime | None = None


T = TypeVar("T")


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    next_page_token: str


@dataclass(frozen=True)
class ProfileGenerationStats:
    profile_id: str | None
    profile_name: str
    count: int
    total_duration_seconds: float


@dataclass(frozen=True)
class GenerationStats:
    count: int
    total_duration_seconds: float
    by_profile: list[ProfileGenerationStats] = field(default_factory=list)
