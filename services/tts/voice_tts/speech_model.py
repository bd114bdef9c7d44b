"""The loaded Qwen3-TTS model's parts that frame generation drives, shared by every request on that model.

:class:`SpeechModel` holds the talker, its code predictor and the speech tokenizer's decoder with their constants
(code groups, EOS id, samples per frame, sample rate), the streaming decoder over the speech decoder's weights, and
runs their forward passes. It holds no per-request state: KV caches, decoder states, generators and codes belong
to each request (:class:`voice_tts.frame_generation.Utterance`), and the
weights are only read, so requests on several threads may share it (competing for the same CPU cores).
:meth:`SpeechModel.of` gives the one instance of a loaded model.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Sequence
from typing import Any

import torch
from transformers import DynamicCache

from voice_tts.frame_sampling import FrameSampler
from voice_tts.qwen import Qwen3TTSModel
from voice_tts.streaming_decoder import StreamingDecoder


class SpeechModel:
    """Talker, code predictor and speech decoder of one loaded model (see the module docstring)."""

    _instances: weakref.WeakKeyDictionary[Any, SpeechModel] = weakref.WeakKeyDictionary()
    _instances_lock = threading.Lock()

    def __init__(self, model: Qwen3TTSModel) -> None:
        outer = model.model
        self.talker: Any = outer.talker
        self.predictor: Any = outer.talker.code_predictor
        self.decoder: Any = outer.speech_tokenizer.model.decoder
        self.streaming_decoder = StreamingDecoder(
            self.decoder
        )  # shared; each stream has its own DecoderState
        talker_config = outer.config.talker_config
        self.num_groups: int = int(talker_config.num_code_groups)
        self.eos_id: int = int(talker_config.codec_eos_token_id)
        self.vocab_size: int = int(talker_config.vocab_size)
        self.samples_per_frame: int = int(outer.speech_tokenizer.get_decode_upsample_rate())
        self.sample_rate: int = int(outer.speech_tokenizer.get_output_sample_rate())
        self.device: torch.device = self.talker.device

    @classmethod
    def of(cls, model: Qwen3TTSModel) -> SpeechModel:
        """The shared instance for ``model`` (made on first use; it goes when the model goes)."""
        with cls._instances_lock:
            parts = cls._instances.get(model)
            if parts is None:
                parts = cls._instances[model] = cls(model)
            return parts

    @torch.inference_mode()
    def talker_step(
        self,
        embeds: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        cache: DynamicCache,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the talker over ``embeds`` (B, T, H) with the rows' KV ``cache`` (extended in place): the last
        position's hidden states (B, 1, H) and the logits (B, T, V)."""
        out = self.talker.model(
            inputs_embeds=embeds,
            attention_mask=self._step_mask(attention_mask, embeds.shape[1]),
            position_ids=position_ids,
            past_key_values=cache,
            use_cache=True,
        )
        hidden: torch.Tensor = out.last_hidden_state
        logits: torch.Tensor = self.talker.codec_head(hidden)
        return hidden[:, -1:, :], logits

    def _step_mask(self, attention_mask: torch.Tensor, new_positions: int) -> torch.Tensor:
        """The padding mask of a one-position step of left-padded rows, made 4-D (B, 1, 1, kv) for SDPA here.

        Given the 2-D mask, transformers builds the same 4-D boolean mask through ``torch.vmap`` on every step, and
        in a batch of 8 tiny-model rows that was a fifth of the step's time. A 4-D mask is passed through as it
        is. Only for SDPA, whose boolean mask means "attend" (eager attention adds its mask, flash attention takes
        the 2-D one), and only when some row is padded: without padding transformers passes no mask at all, and
        the same rows then compute the same bits as before.
        """
        if (
            new_positions != 1
            or attention_mask.ndim != 2
            or self.talker.config._attn_implementation != "sdpa"
            or bool(attention_mask.all())
        ):
            return attention_mask
        return attention_mask.bool()[:, None, None, :]

    @torch.inference_mode()
    def residual_codes(
        self, samplers: Sequence[FrameSampler], past_hidden: torch.Tensor, first: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Code groups 1.. for a batch of frames (``code_predictor.generate`` done by hand) and each frame's
        embeddings' sum: past_hidden (B, 1, H) and first codes (B, 1) -> codes (B, G-1) and sums (B, 1, H).

        Every row samples with its own sampler (processors, history, generator), in the same order as alone; the
        rows share the predictor's forward passes (all rows have the same length, so no padding is needed).
        """
        predictor = self.predictor
        embeddings = predictor.get_input_embeddings()
        device = self.device
        batch = len(samplers)
        first_embed: torch.Tensor = self.talker.get_input_embeddings()(first)
        cache = DynamicCache()
        inputs = torch.cat((past_hidden, first_embed), dim=1)
        codes: list[torch.Tensor] = []
        code_embeds = [first_embed]
        history = torch.zeros((batch, 0), dtype=torch.long, device=device)
        position = 0
        for step in range(self.num_groups - 1):
            if step > 0:
                inputs = code_embeds[-1]
            projected = predictor.small_to_mtp_projection(inputs)
            length = projected.shape[1]
            out = predictor.model(
                inputs_embeds=projected,
                position_ids=torch.arange(position, position + length, device=device)
                .unsqueeze(0)
                .expand(batch, -1),
                past_key_values=cache,
                use_cache=True,
            )
            position += length
            logits = predictor.lm_head[step](out.last_hidden_state)
            code = torch.cat(
                [
                    sampler.residual_code(logits[i : i + 1], history[i : i + 1])
                    for i, sampler in enumerate(samplers)
                ],
                dim=0,
            )
            history = torch.cat([history, code], dim=1)
            codes.append(code)
            code_embeds.append(embeddings[step](code))
        summed = torch.cat(code_embeds, dim=1).sum(1, keepdim=True)
        return torch.cat(codes, dim=1), summed
