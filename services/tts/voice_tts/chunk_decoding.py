"""Audio from codec frames: the speech decoder's one-shot pass, and decoding a stream's frames chunk by chunk.

Streamed, each request keeps its own :class:`voice_tts.streaming_decoder.DecoderState`, so every frame goes
through the speech decoder once and the audio of any chunking equals one decode of all the frames (within float
rounding; docs/tts-streaming.md). In ICL mode a request's decoder state starts as the state after the reference
codes (their audio dropped; kept per voice by the streaming decoder), so the generated frames are decoded after
them, as the package's one-shot ``generate_voice_clone`` decodes them. :class:`ChunkCutter` says when a chunk is
due (a small first chunk for a fast first sound, then every ``chunk_frames`` frames, the rest at the end);
:func:`decode_chunks` decodes several requests' due chunks in one batched pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import torch

from voice_tts.speech_model import SpeechModel
from voice_tts.streaming_decoder import DecoderState
from voice_tts.synthesis_types import StopReason


class FramesSoFar(Protocol):
    """What chunked decoding reads of a request that is generating frames (:class:`voice_tts.frame_generation.Utterance`)."""

    speech_model: SpeechModel
    frames_generated: int
    stop_reason: StopReason | None

    @property
    def codes(self) -> torch.Tensor:
        """The generated frames: (frames, groups)."""
        ...

    def reference_codes(self) -> torch.Tensor | None:
        """The reference recording's codes (ICL mode), decoded ahead of the generated frames: (frames, groups)."""
        ...


class ChunkCutter:
    """When to decode, and one request's decoder state: after ``first_chunk_frames`` frames, then every
    ``chunk_frames``, the rest at the end.

    :meth:`due` and :meth:`rest_due` say which frames to decode next (``(start, end)``) without decoding, so a
    caller can decode several utterances' chunks in one pass (:func:`decode_chunks`), which also marks them.
    """

    def __init__(
        self, utterance: FramesSoFar, *, first_chunk_frames: int = 4, chunk_frames: int = 12
    ) -> None:
        if first_chunk_frames < 1 or chunk_frames < 1:
            raise ValueError("first_chunk_frames and chunk_frames must be >= 1")
        self.utterance = utterance
        self._first = first_chunk_frames
        self._every = chunk_frames
        self.emitted = 0  # frames decoded and handed out
        self.state: DecoderState | None = None  # made with the first chunk; holds what the decoder has seen

    def due(self) -> tuple[int, int] | None:
        """The frames to decode after the latest frame, if a chunk is complete."""
        generated = self.utterance.frames_generated
        if generated - self.emitted < (self._first if self.emitted == 0 else self._every):
            return None
        return self.emitted, generated

    def pending(self) -> tuple[int, int] | None:
        """The frames made and not yet decoded, whether or not a chunk is due: what a batch decodes early, in the
        same pass as another request's due chunk, so that the requests' chunks fall into step."""
        generated = self.utterance.frames_generated
        return (self.emitted, generated) if generated > self.emitted else None

    def rest_due(self) -> tuple[int, int] | None:
        """At the end: the frames not yet decoded; nothing after a stop (the client has gone)."""
        utterance = self.utterance
        if utterance.stop_reason == "stopped" or utterance.frames_generated <= self.emitted:
            return None
        return self.emitted, utterance.frames_generated

    def after_frame(self) -> np.ndarray | None:
        """:meth:`due`, decoded."""
        return self._cut(self.due())

    def rest(self) -> np.ndarray | None:
        """:meth:`rest_due`, decoded."""
        return self._cut(self.rest_due())

    def _cut(self, span: tuple[int, int] | None) -> np.ndarray | None:
        if span is None:
            return None
        (piece,) = decode_chunks([(self, span)])
        return piece

    def next_input(self, span: tuple[int, int]) -> tuple[DecoderState, torch.Tensor]:
        """This chunk's decoder input: the request's decoder state and the codes to feed it (groups, frames).

        The first chunk starts from the state after the reference codes in ICL mode (decoded once per voice and
        kept by the streaming decoder), so every chunk's audio is its own frames' audio."""
        start, end = span
        utterance = self.utterance
        if start != self.emitted or not start < end <= utterance.frames_generated:
            raise ValueError(
                f"bad frame span [{start}, {end}): {self.emitted} decoded, {utterance.frames_generated} made"
            )
        if self.state is None:
            decoder = utterance.speech_model.streaming_decoder
            reference = utterance.reference_codes()
            self.state = (
                decoder.new_state() if reference is None else decoder.state_after(reference.transpose(0, 1))
            )
        return self.state, utterance.codes[start:end].transpose(0, 1)


def decode_chunks(due: Sequence[tuple[ChunkCutter, tuple[int, int]]]) -> list[np.ndarray]:
    """The audio of each cutter's due ``(start, end)`` frames, decoded in one batched pass of the streaming decoder
    (each row continues its own state; chunks may differ in length), and each cutter marked as having emitted them.
    The cutters' utterances must share one model."""
    if not due:
        return []
    rows = [cutter.next_input(span) for cutter, span in due]
    audio = due[0][0].utterance.speech_model.streaming_decoder.step(rows)
    for cutter, span in due:
        cutter.emitted = span[1]
    return [wav.float().cpu().numpy().astype(np.float32, copy=False) for wav in audio]


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
