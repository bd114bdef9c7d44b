"""Audio from codec frames: the speech decoder's pass, and decoding a stream's frames in chunks as they come.

A chunk is decoded with the generated frames since the last chunk plus up to ``left_context_frames`` earlier
frames as decoder context (in ICL mode the reference codes are the context of the first chunks); only the new
frames' samples are handed out. :class:`ChunkCutter` says when a chunk is due (a small first chunk for a fast
first sound, then every ``chunk_frames`` frames, the rest at the end); :func:`decode_spans` decodes several
requests' due chunks, equal lengths in one pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import torch

from voice_tts.speech_model import SpeechModel
from voice_tts.synthesis_types import StopReason


class FramesSoFar(Protocol):
    """What chunked decoding reads of a request that is generating frames (:class:`voice_tts.frame_generation.Utterance`)."""

    speech_model: SpeechModel
    frames_generated: int
    stop_reason: StopReason | None

    def context_codes(self) -> torch.Tensor:
        """Reference codes (ICL mode) followed by the generated frames: (frames, groups)."""
        ...


class ChunkCutter:
    """When to decode: after ``first_chunk_frames`` frames, then every ``chunk_frames``, the rest at the end.

    :meth:`due` and :meth:`rest_due` say which frames to decode next (``(start, end)``) without decoding, so a
    caller can decode several utterances' spans in one pass (:func:`decode_spans`) and then :meth:`mark` them.
    """

    def __init__(
        self,
        utterance: FramesSoFar,
        *,
        first_chunk_frames: int = 4,
        chunk_frames: int = 12,
        left_context_frames: int = 25,
    ) -> None:
        if first_chunk_frames < 1 or chunk_frames < 1 or left_context_frames < 0:
            raise ValueError("first_chunk_frames and chunk_frames must be >= 1, left_context_frames >= 0")
        self.utterance = utterance
        self._first = first_chunk_frames
        self._every = chunk_frames
        self.left_context_frames = left_context_frames
        self.emitted = 0  # frames decoded and handed out

    def due(self) -> tuple[int, int] | None:
        """The frames to decode after the latest frame, if a chunk is complete."""
        generated = self.utterance.frames_generated
        if generated - self.emitted < (self._first if self.emitted == 0 else self._every):
            return None
        return self.emitted, generated

    def rest_due(self) -> tuple[int, int] | None:
        """At the end: the frames not yet decoded; nothing after a stop (the client has gone)."""
        utterance = self.utterance
        if utterance.stop_reason == "stopped" or utterance.frames_generated <= self.emitted:
            return None
        return self.emitted, utterance.frames_generated

    def mark(self, span: tuple[int, int]) -> None:
        self.emitted = span[1]

    def after_frame(self) -> np.ndarray | None:
        """:meth:`due`, decoded."""
        return self._cut(self.due())

    def rest(self) -> np.ndarray | None:
        """:meth:`rest_due`, decoded."""
        return self._cut(self.rest_due())

    def _cut(self, span: tuple[int, int] | None) -> np.ndarray | None:
        if span is None:
            return None
        (piece,) = decode_spans([(self.utterance, *span)], self.left_context_frames)
        self.mark(span)
        return piece


@torch.inference_mode()
def decode_codes(decoder: Any, codes: torch.Tensor) -> torch.Tensor:
    """The speech tokenizer decoder's ``forward`` on codes (B, G, T) -> audio (B, 1, samples), with the
    pre-transformer's attention mask built here.

    The package lets transformers build the sliding-window causal mask on every call, through a vmap'd mask function
    that cost 16-20 ms a call on the CPU whatever the length (more than the tiny model's whole decode of a 4-frame
    chunk). The mask is the same (query i sees keys i-window+1..i), and the output is bit-identical to
    ``decoder(codes)`` (tested).
    """
    hidden = decoder.quantizer.decode(codes)
    hidden = decoder.pre_conv(hidden).transpose(1, 2)
    length = hidden.shape[1]
    positions = torch.arange(length, device=hidden.device)
    distance = positions.view(-1, 1) - positions.view(1, -1)  # query - key
    window = decoder.pre_transformer.config.sliding_window
    causal = distance >= 0
    sliding = causal if window is None else causal & (distance < window)
    masks = {
        "full_attention": causal.view(1, 1, length, length),
        "sliding_attention": sliding.view(1, 1, length, length),
    }
    hidden = decoder.pre_transformer(inputs_embeds=hidden, attention_mask=masks).last_hidden_state
    hidden = hidden.permute(0, 2, 1)
    for blocks in decoder.upsample:
        for block in blocks:
            hidden = block(hidden)
    wav = hidden
    for block in decoder.decoder:
        wav = block(wav)
    clamped: torch.Tensor = wav.clamp(min=-1, max=1)
    return clamped


@torch.inference_mode()
def decode_frames(model: SpeechModel, codes: torch.Tensor) -> torch.Tensor:
    """Decoder output for codes (T, G) in one pass: (T * samples_per_frame,) float."""
    wav = decode_codes(model.decoder, codes.clamp(min=0).transpose(0, 1).unsqueeze(0))
    return wav[0, 0, : codes.shape[0] * model.samples_per_frame]


@torch.inference_mode()
def decode_spans(spans: Sequence[tuple[FramesSoFar, int, int]], left_context_frames: int) -> list[np.ndarray]:
    """The audio of each ``(utterance, start, end)`` span of generated frames, decoded with up to
    ``left_context_frames`` earlier frames (reference codes in ICL mode count as earlier frames).

    Spans of equal length (context included) go through the speech decoder together, one pass per length: the
    decoder's fixed cost per call (its attention masks) is paid once for the whole group. The utterances must
    share one model.
    """
    prepared: list[tuple[torch.Tensor, int]] = []
    for utterance, start, end in spans:
        if not 0 <= start < end <= utterance.frames_generated:
            raise ValueError(f"bad frame span [{start}, {end}) of {utterance.frames_generated}")
        all_codes = utterance.context_codes()
        offset = all_codes.shape[0] - utterance.frames_generated  # reference frames in front
        context = min(left_context_frames, offset + start)
        prepared.append((all_codes[offset + start - context : offset + end], context))
    groups: dict[int, list[int]] = {}
    for index, (codes, _context) in enumerate(prepared):
        groups.setdefault(codes.shape[0], []).append(index)
    audio: list[np.ndarray] = [np.zeros(0, dtype=np.float32)] * len(spans)
    for length, members in groups.items():
        lead = spans[members[0]][0]
        stacked = torch.stack([prepared[i][0] for i in members]).clamp(min=0).transpose(1, 2)  # (B, G, T)
        wav = decode_codes(lead.speech_model.decoder, stacked)
        per_frame = lead.speech_model.samples_per_frame
        for row, index in enumerate(members):
            context = prepared[index][1]
            piece = wav[row, 0, context * per_frame : length * per_frame]
            audio[index] = piece.float().cpu().numpy().astype(np.float32, copy=False)
    return audio
