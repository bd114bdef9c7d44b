"""Speaking rate without a pitch change: Rubber Band (through pedalboard) time-stretches the model's audio, and
:class:`StreamingTimeStretcher` does it as the audio is made, so a stream's first audio still comes early.

pedalboard 0.9.26 stretches whole buffers only (``pedalboard.time_stretch``: output exactly ``len / speed`` samples,
aligned with the input). A stream is therefore stretched in overlapping segments: each new piece of input is
stretched together with ``CONTEXT_SECONDS`` of the input before it, so the phase vocoder has settled by the part that
is kept; the last ``LOOKAHEAD_SECONDS`` of each segment is held back until more input (or the end) arrives, since
there the stretcher saw the segment's end rather than the speech that follows. Consecutive segments meet in a
``CROSSFADE_SECONDS`` crossfade, placed where the new segment's output best matches the old one's (a lag of at most
``MAX_LAG_SECONDS``, about one pitch period): two stretches of the same audio agree in content but not in phase,
and a fade between out-of-phase copies of a voiced sound would dip. The lag search also pulls the output back
towards ``len / speed`` so that the small shifts never add up.

What it costs: the first output comes once more than ``LOOKAHEAD_SECONDS`` of input has arrived (the TTS's first
chunk, 0.32 s, is enough), and that output is ``LOOKAHEAD_SECONDS`` plus a crossfade shorter than without the
stretch; each segment costs a stretch of itself plus its context (Rubber Band runs many times faster than real time).
"""

from __future__ import annotations

import numpy as np
import pedalboard

from voice_tts.synthesis_types import MAX_SPEED, MIN_SPEED, is_valid_speed

CONTEXT_SECONDS = 0.2  # input stretched again before each new piece, for the stretcher to settle
LOOKAHEAD_SECONDS = 0.1  # input at a segment's end whose output waits for the next segment
CROSSFADE_SECONDS = 0.01
MAX_LAG_SECONDS = 0.01  # how far a segment's joint may move to match the previous one (a 100 Hz pitch period)


def time_stretch(samples: np.ndarray, sample_rate: int, speed: float) -> np.ndarray:
    """``samples`` (float32 mono) spoken ``speed`` times as fast, at the same pitch: ``len / speed`` samples."""
    if samples.size == 0:
        return np.zeros(0, dtype=np.float32)
    audio = np.ascontiguousarray(samples, dtype=np.float32).reshape(1, -1)
    stretched: np.ndarray = pedalboard.time_stretch(audio, float(sample_rate), stretch_factor=float(speed))
    return stretched[0].astype(np.float32, copy=False)


class StreamingTimeStretcher:
    """Stretches audio that arrives in chunks: :meth:`process` each chunk (returns what is final so far), then
    :meth:`flush` once for the rest. The outputs together are about ``len(all input) / speed`` samples."""

    def __init__(self, speed: float, sample_rate: int) -> None:
        if not is_valid_speed(speed):
            raise ValueError(f"speed {speed} must be from {MIN_SPEED} to {MAX_SPEED}")
        self.speed = speed
        self.sample_rate = sample_rate
        self._context = round(CONTEXT_SECONDS * sample_rate)
        self._lookahead = round(LOOKAHEAD_SECONDS * sample_rate)
        self._fade = round(CROSSFADE_SECONDS * sample_rate)
        self._max_lag = round(MAX_LAG_SECONDS * sample_rate)
        # Input kept for the next segment: from ``_kept_from`` (absolute index) to the end of what arrived.
        self._input = np.zeros(0, dtype=np.float32)
        self._kept_from = 0
        self._done = 0  # absolute input index whose output is final (it starts with ``_tail``)
        self._tail = np.zeros(0, dtype=np.float32)  # output from ``_done`` on, held back to fade into
        self._emitted = 0  # output samples returned so far

    def process(self, samples: np.ndarray) -> np.ndarray:
        """Add ``samples``; the stretched audio that is final now (empty until enough input has arrived)."""
        self._input = np.concatenate([self._input, np.asarray(samples, dtype=np.float32).reshape(-1)])
        arrived = self._kept_from + self._input.size
        # Wait until the new output reaches past a whole crossfade and the joint search: a shorter one would cut
        # the fade short.
        if (arrived - self._lookahead - self._done) / self.speed <= self._fade + self._max_lag:
            return np.zeros(0, dtype=np.float32)
        return self._segment(final=False)

    def flush(self) -> np.ndarray:
        """The rest of the stretched audio, once the input has ended."""
        return self._segment(final=True)

    def _segment(self, *, final: bool) -> np.ndarray:
        start = max(self._kept_from, self._done - self._context)
        segment = self._input[start - self._kept_from :]
        stretched = time_stretch(segment, self.sample_rate, self.speed)
        # Where the output for input ``self._done`` falls in this segment's output, moved by the drift so far.
        drift = self._emitted - round(self._done / self.speed)
        joint = round((self._done - start) / self.speed)
        if final:
            keep_until = stretched.size
            new_done = self._kept_from + self._input.size
        else:
            new_done = self._kept_from + self._input.size - self._lookahead
            keep_until = round((new_done - start) / self.speed)
        if self._tail.size:
            joint = self._best_joint(stretched, joint + drift, keep_until)
            fade = min(self._tail.size, max(0, keep_until - joint))
            ramp = np.linspace(0.0, 1.0, fade + 2, dtype=np.float32)[1:-1]
            blended = self._tail[:fade] * (1 - ramp) + stretched[joint : joint + fade] * ramp
            out = np.concatenate([blended, stretched[joint + fade : keep_until]])
        else:
            out = stretched[:keep_until]
        if final:
            self._tail = np.zeros(0, dtype=np.float32)
        else:
            self._tail = stretched[keep_until : keep_until + self._fade].copy()
            self._done = new_done
            # Keep what the next segment stretches again as its context.
            keep_from = max(self._kept_from, self._done - self._context)
            self._input = self._input[keep_from - self._kept_from :]
            self._kept_from = keep_from
        self._emitted += out.size
        return out.astype(np.float32, copy=False)

    def _best_joint(self, stretched: np.ndarray, centre: int, keep_until: int) -> int:
        """Where in ``stretched`` the held-back tail matches best, within ``MAX_LAG_SECONDS`` of ``centre``."""
        fade = self._tail.size
        low = max(0, centre - self._max_lag)
        high = min(centre + self._max_lag, keep_until - fade, stretched.size - fade)
        if high < low:
            return min(max(centre, 0), max(0, keep_until))
        window = stretched[low : high + fade]
        scores = np.correlate(window, self._tail, mode="valid")
        energy = np.convolve(window * window, np.ones(fade, dtype=np.float32), mode="valid")
        scores = scores / np.sqrt(energy + 1e-9)
        return low + int(np.argmax(scores))
