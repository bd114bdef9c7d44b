"""The rules a voice reference must meet, wherever it comes from: a profile sample (AddSample, an imported
archive) or a clip sent inline with a TTS request. One place, so both refuse the same audio with the same words.

A reference is decoded at the caller's rate, refused when it is too short, too long, silent, undecodable or a WAV
cut short (InvalidArgument naming the caller's field), and otherwise returned with the warnings a person can act
on: clipping and a low level (from :func:`~voice_common.audio.analysis.analyse`) and a file that may end early.
"""

from __future__ import annotations

from dataclasses import dataclass

from voice_common.audio.analysis import AudioAnalysis, AudioWarning, AudioWarningCode, analyse
from voice_common.audio.decoding import DecodedAudio, decode_audio
from voice_common.errors import InvalidArgument

# Defaults of PROFILES_MIN/MAX_SAMPLE_SECONDS and TTS_MIN/MAX_REFERENCE_SECONDS.
DEFAULT_MIN_SECONDS = 2.0
DEFAULT_MAX_SECONDS = 300.0


@dataclass(frozen=True)
class ReferenceLimits:
    min_seconds: float = DEFAULT_MIN_SECONDS
    max_seconds: float = DEFAULT_MAX_SECONDS


@dataclass(frozen=True)
class ReferenceAudio:
    """A decoded reference that passed the checks."""

    decoded: DecodedAudio
    analysis: AudioAnalysis
    warnings: tuple[AudioWarning, ...]  # the level warnings, then TRUNCATED if the file may end early


def decode_reference_audio(
    data: bytes, limits: ReferenceLimits, *, sample_rate: int, field: str
) -> ReferenceAudio:
    """Blocking: decode ``data`` to mono at ``sample_rate`` and check it against ``limits``.

    Every refusal is an InvalidArgument whose field violation names ``field`` (where the audio was in the request:
    AddSample's ``chunk``, the TTS service's ``config.voice.reference.audio``); the message is the same for both.
    """
    try:
        decoded = decode_audio(data, target_rate=sample_rate, max_seconds=limits.max_seconds)
    except InvalidArgument as error:
        raise InvalidArgument(error.message, field=field) from error
    if decoded.duration_seconds < limits.min_seconds:
        raise InvalidArgument(
            f"the sample is {decoded.duration_seconds:.2f} s long; it must be at least "
            f"{limits.min_seconds:g} s of speech (5-15 s clones best)",
            field=field,
        )
    analysis = analyse(decoded.samples, decoded.sample_rate)
    if analysis.is_silent:
        raise InvalidArgument(
            "the sample is silent (no speech above the noise floor); check the microphone and upload a recording "
            "of the voice",
            field=field,
        )
    warnings = analysis.warnings
    if decoded.truncation is not None:
        warnings += (AudioWarning(AudioWarningCode.TRUNCATED, decoded.truncation),)
    return ReferenceAudio(decoded, analysis, warnings)
