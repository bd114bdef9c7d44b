"""Level measurements of a clip and the warnings a person recording a voice sample can act on.

All levels are in dBFS relative to a full-scale float sample (|x| = 1.0); a full-scale sine has an RMS of
-3 dBFS. Everything is vectorised numpy: a 5-minute clip takes a few milliseconds.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np

# Level reported for digital silence (instead of -inf).
FLOOR_DBFS = -120.0
# Length of the frames the activity measures use.
FRAME_SECONDS = 0.020
# A 20 ms frame whose RMS is above this is "active" (voice or other signal, not room noise / silence).
ACTIVE_FRAME_DBFS = -50.0
# A sample at or above this magnitude counts as clipped.
CLIP_LEVEL = 0.999
# The clip is silent when its peak is below this ...
SILENT_PEAK_DBFS = -60.0
# ... or when fewer than this share of its frames are active.
SILENT_MIN_ACTIVE_FRACTION = 0.02
# CLIPPING is reported when more than this share of samples are clipped.
CLIPPING_WARN_FRACTION = 0.001
# LOW_LEVEL is reported when a non-silent clip's active RMS is below this.
LOW_LEVEL_WARN_DBFS = -35.0


class AudioWarningCode(enum.Enum):
    """What may be wrong with a voice sample (the values are what the profile service stores)."""

    CLIPPING = "clipping"
    LOW_LEVEL = "low_level"
    # Not a level: the decoder's note that the file ends early (see voice_common.audio.reference_audio).
    TRUNCATED = "truncated"


@dataclass(frozen=True)
class AudioWarning:
    code: AudioWarningCode
    message: str  # says what is wrong and what to do about it


@dataclass(frozen=True)
class AudioAnalysis:
    duration_seconds: float
    peak_dbfs: float  # 20*log10(max|x|), FLOOR_DBFS for digital silence
    rms_dbfs: float  # RMS over the whole clip
    active_rms_dbfs: float  # RMS over the active 20 ms frames; FLOOR_DBFS if there are none
    active_fraction: float  # share of 20 ms frames above ACTIVE_FRAME_DBFS
    clipped_fraction: float  # share of samples with |x| >= CLIP_LEVEL
    is_silent: bool  # peak below SILENT_PEAK_DBFS or active_fraction below SILENT_MIN_ACTIVE_FRACTION
    warnings: tuple[AudioWarning, ...]


def _db_amplitude(value: float) -> float:
    return max(FLOOR_DBFS, 20.0 * float(np.log10(value))) if value > 0 else FLOOR_DBFS


def _db_power(mean_square: float) -> float:
    return max(FLOOR_DBFS, 10.0 * float(np.log10(mean_square))) if mean_square > 0 else FLOOR_DBFS


def _percent(fraction: float) -> str:
    pct = fraction * 100.0
    return f"{pct:.1f}%" if pct >= 1.0 else f"{pct:.2f}%"


def analyse(samples: np.ndarray, sample_rate: int) -> AudioAnalysis:
    """Measure float32 mono ``samples`` (values in [-1, 1]) at ``sample_rate`` Hz."""
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    x = np.ascontiguousarray(samples, dtype=np.float32).reshape(-1)
    n = x.size
    if n == 0:
        return AudioAnalysis(0.0, FLOOR_DBFS, FLOOR_DBFS, FLOOR_DBFS, 0.0, 0.0, True, ())

    peak = max(float(x.max()), -float(x.min()))
    clipped_fraction = float(np.count_nonzero(x >= CLIP_LEVEL) + np.count_nonzero(x <= -CLIP_LEVEL)) / n

    # Sums of squares per 20 ms frame (float32 within a frame is good to ~1e-6; frames add up in float64).
    # A trailing partial frame counts as a frame of its own, so a clip shorter than 20 ms is one frame.
    frame_len = max(1, round(FRAME_SECONDS * sample_rate))
    full = n // frame_len
    frames = x[: full * frame_len].reshape(full, frame_len)
    frame_sums = np.einsum("ij,ij->i", frames, frames).astype(np.float64)
    frame_sizes = np.full(full, frame_len, dtype=np.float64)
    if n > full * frame_len:
        tail = x[full * frame_len :]
        frame_sums = np.append(frame_sums, float(np.dot(tail, tail)))
        frame_sizes = np.append(frame_sizes, float(n - full * frame_len))
    rms_dbfs = _db_power(float(frame_sums.sum()) / n)
    frame_ms = frame_sums / frame_sizes
    threshold_ms = 10.0 ** (ACTIVE_FRAME_DBFS / 10.0)
    active = frame_ms > threshold_ms
    active_fraction = float(np.count_nonzero(active)) / frame_ms.size
    if active.any():
        active_rms_dbfs = _db_power(float(frame_sums[active].sum() / frame_sizes[active].sum()))
    else:
        active_rms_dbfs = FLOOR_DBFS

    peak_dbfs = _db_amplitude(peak)
    is_silent = peak_dbfs < SILENT_PEAK_DBFS or active_fraction < SILENT_MIN_ACTIVE_FRACTION

    warnings: list[AudioWarning] = []
    if clipped_fraction > CLIPPING_WARN_FRACTION:
        warnings.append(
            AudioWarning(
                AudioWarningCode.CLIPPING,
                f"{_percent(clipped_fraction)} of samples are clipped at full scale; "
                "record again with lower input gain or further from the microphone",
            )
        )
    if not is_silent and active_rms_dbfs < LOW_LEVEL_WARN_DBFS:
        warnings.append(
            AudioWarning(
                AudioWarningCode.LOW_LEVEL,
                f"the voice is very quiet ({active_rms_dbfs:.0f} dBFS while speaking); "
                "record again closer to the microphone or with higher input gain (aim for about -20 dBFS)",
            )
        )
    return AudioAnalysis(
        duration_seconds=n / sample_rate,
        peak_dbfs=peak_dbfs,
        rms_dbfs=rms_dbfs,
        active_rms_dbfs=active_rms_dbfs,
        active_fraction=active_fraction,
        clipped_fraction=clipped_fraction,
        is_silent=is_silent,
        warnings=tuple(warnings),
    )
