"""A stateful streaming decoder for Qwen3-TTS's 12 Hz speech tokenizer: each new frame is decoded once, and the
audio of any chunking equals the decoder's own forward on all the codes at once (within float rounding).

``Qwen3TTSTokenizerV2Decoder.forward`` is causal end to end, so nothing a frame produces depends on later frames.
Its layers, read from qwen_tts 0.1.1 (``modeling_qwen3_tts_tokenizer_v2``), fall into three kinds:

* **pointwise in time** (no state): the codebook lookup and its 1x1 output projections, the transformer's
  projections, RMSNorms and MLP, the ConvNeXt blocks' LayerNorm (over channels, per time step) and linears,
  SnakeBeta, the residual additions and the final clamp;
* **causal convolutions** (``Qwen3TTSTokenizerV2CausalConvNet``): the full pass pads ``(kernel - 1) * dilation + 1
  - stride`` zeros on the left and, for stride 1 (every one in the decoder), nothing on the right. Streamed, each
  keeps the last ``(kernel - 1) * dilation`` inputs it saw (zeros at first, like the padding) and runs on them
  followed by the new inputs: exactly the outputs of the full pass at those positions;
* **transposed convolutions** (``Qwen3TTSTokenizerV2CausalTransConvNet``): the full pass trims ``kernel - stride``
  samples from the right. Streamed, a chunk's output is computed whole; its first ``kernel - stride`` samples get
  the previous chunk's overlapping tail added, the samples for the chunk's own inputs are emitted, and the rest is
  kept (with the bias taken out, so that it is counted once) as the next tail. Kernel = stride keeps nothing;
* **the pre-transformer's sliding-window attention**: a query at frame ``p`` sees keys ``p - window + 1 .. p``
  (transformers' ``sliding_window_overlay``: ``kv_idx > q_idx - window``). Each layer keeps the last ``window - 1``
  keys (after RoPE at their absolute positions) and values; new frames get RoPE at their absolute positions, so
  positions, masks and keys are those of the full pass.

:class:`StreamingDecoder` holds only the shared, read-only model; everything a request accumulates is in its own
:class:`DecoderState`. :meth:`StreamingDecoder.step` decodes a batch of ``(state, new codes)`` rows that may have
different numbers of new frames and different histories: rows are right-padded to the longest chunk, and since
every layer is causal, padding only ever reaches padded outputs (inputs to the transposed convolutions are zeroed
past each row's length, because their overlap would otherwise carry padding into the kept tail). Rows can join
(a fresh state) and leave (stop passing its state) between any two steps.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

# First qwen_tts itself, imported without its banners; the submodules below are then already loaded, and quiet.
import voice_tts.qwen  # noqa: F401

# isort: split
import torch
from qwen_tts.core.tokenizer_12hz.modeling_qwen3_tts_tokenizer_v2 import (
    Qwen3TTSTokenizerV2CausalConvNet,
    Qwen3TTSTokenizerV2CausalTransConvNet,
    Qwen3TTSTokenizerV2ConvNeXtBlock,
    Qwen3TTSTokenizerV2Decoder,
    Qwen3TTSTokenizerV2DecoderDecoderBlock,
    Qwen3TTSTokenizerV2DecoderDecoderResidualUnit,
    SnakeBeta,
    apply_rotary_pos_emb,
    repeat_kv,
)
from torch import nn

# The position of a key slot that holds nothing yet: far enough back that the sliding window never reaches it.
_EMPTY_POSITION = -(2**40)
# Decoder states after distinct reference codes kept per decoder (a few MB each at the released decoder's size).
REFERENCE_STATES = 32


@dataclass
class DecoderState:
    """Everything one request's stream has accumulated in the decoder; made by :meth:`StreamingDecoder.new_state`.

    Tensors carry no batch dimension. The state belongs to one request and is updated in place by each step.
    """

    frames: int  # frames decoded so far: the absolute position of the next frame in the transformer
    conv_history: list[torch.Tensor]  # per causal convolution: its last (kernel - 1) * dilation inputs (C, h)
    transposed_tail: list[torch.Tensor]  # per overlapping transposed convolution: its pending output, no bias
    keys: list[
        torch.Tensor
    ]  # per transformer layer: the last window - 1 keys after RoPE (kv heads, window - 1, d)
    values: list[torch.Tensor]  # per transformer layer: their values, same shape
    key_positions: torch.Tensor  # (window - 1,) absolute frame of each key slot; empty slots far in the past
    samples_emitted: int = field(default=0)  # audio samples returned so far (frames * samples per frame)


class StreamingDecoder:
    """Decodes 12 Hz codec frames chunk by chunk with one ``Qwen3TTSTokenizerV2Decoder``'s weights (read only).

    Built once per loaded model and shared by every request; each request has its own :class:`DecoderState`.
    """

    def __init__(self, decoder: Qwen3TTSTokenizerV2Decoder) -> None:
        self._decoder = decoder
        transformer = decoder.pre_transformer
        window = transformer.config.sliding_window
        if window is None or "sliding_attention" not in transformer.config.layer_types:
            raise NotImplementedError("the decoder transformer has no sliding window; this decoder keeps one")
        self.window: int = int(window)
        self.num_quantizers: int = int(decoder.config.num_quantizers)
        self.samples_per_frame: int = int(decoder.total_upsample)
        self._conv_slots: dict[nn.Module, int] = {}
        self._tail_slots: dict[nn.Module, int] = {}
        # (channels, samples) of each state tensor, in slot order.
        self._conv_shapes: list[tuple[int, int]] = []
        self._tail_shapes: list[tuple[int, int]] = []
        for module in decoder.modules():
            if isinstance(module, Qwen3TTSTokenizerV2CausalConvNet):
                conv = module.conv
                if module.stride != 1 or conv.padding != (0,):
                    raise NotImplementedError(f"causal convolution with stride {module.stride}: not streamed")
                self._conv_slots[module] = len(self._conv_shapes)
                self._conv_shapes.append((conv.in_channels, module.kernel_size - 1))
            elif isinstance(module, Qwen3TTSTokenizerV2CausalTransConvNet):
                conv = module.conv
                if (
                    conv.padding != (0,)
                    or conv.output_padding != (0,)
                    or conv.dilation != (1,)
                    or module.left_pad
                ):
                    raise NotImplementedError("transposed convolution with padding or dilation: not streamed")
                overlap = conv.kernel_size[0] - conv.stride[0]
                if overlap != module.right_pad:
                    raise NotImplementedError("transposed convolution trims other than kernel - stride")
                if overlap > 0:
                    self._tail_slots[module] = len(self._tail_shapes)
                    self._tail_shapes.append((conv.out_channels, overlap))
        attention = transformer.layers[0].self_attn
        self._kv_shape = (transformer.config.num_key_value_heads, self.window - 1, attention.head_dim)
        self._after_reference: OrderedDict[bytes, DecoderState] = OrderedDict()
        self._after_reference_lock = threading.Lock()

    @property
    def decoder(self) -> Qwen3TTSTokenizerV2Decoder:
        return self._decoder

    def _parameter(self) -> torch.Tensor:
        return next(self._decoder.parameters())

    @torch.inference_mode()
    def new_state(self) -> DecoderState:
        """The state of a stream with nothing decoded yet: every history is the zeros the full pass pads with."""
        like = self._parameter()
        zeros = lambda *shape: torch.zeros(shape, dtype=like.dtype, device=like.device)  # noqa: E731
        layers = len(self._decoder.pre_transformer.layers)
        return DecoderState(
            frames=0,
            conv_history=[zeros(*shape) for shape in self._conv_shapes],
            transposed_tail=[zeros(*shape) for shape in self._tail_shapes],
            keys=[zeros(*self._kv_shape) for _ in range(layers)],
            values=[zeros(*self._kv_shape) for _ in range(layers)],
            key_positions=torch.full(
                (self.window - 1,), _EMPTY_POSITION, dtype=torch.long, device=like.device
            ),
        )

    @staticmethod
    @torch.inference_mode()
    def copy_state(state: DecoderState) -> DecoderState:
        """An independent copy: decoding on with it leaves ``state`` as it was."""
        return replace(
            state,
            conv_history=[tensor.clone() for tensor in state.conv_history],
            transposed_tail=[tensor.clone() for tensor in state.transposed_tail],
            keys=[tensor.clone() for tensor in state.keys],
            values=[tensor.clone() for tensor in state.values],
            key_positions=state.key_positions.clone(),
        )

    def state_after(self, codes: torch.Tensor) -> DecoderState:
        """A new state that has decoded ``codes`` (num_quantizers, frames), their audio dropped: how a stream starts
        after an ICL prompt's reference codes, which the package decodes ahead of the generated ones.

        The state after each distinct reference (by content) is kept, the last :data:`REFERENCE_STATES` of them,
        so a voice's reference goes through the decoder once rather than with every request's first chunk. The
        result is the same either way: a kept state is exactly what decoding the codes again would give.
        """
        data = codes.detach().to(device="cpu", dtype=torch.long).contiguous()
        key = (
            hashlib.blake2b(data.numpy().tobytes(), digest_size=16).digest()
            + repr(tuple(data.shape)).encode()
        )
        with self._after_reference_lock:
            kept = self._after_reference.get(key)
            if kept is not None:
                self._after_reference.move_to_end(key)
        if kept is None:
            kept = self.new_state()
            self.decode(kept, codes)
            with self._after_reference_lock:
                self._after_reference[key] = kept
                while len(self._after_reference) > REFERENCE_STATES:
                    self._after_reference.popitem(last=False)
        return self.copy_state(kept)

    def decode(self, state: DecoderState, codes: torch.Tensor) -> torch.Tensor:
        """One request's next chunk: codes (num_quantizers, frames) -> audio (frames * samples_per_frame,)."""
        (audio,) = self.step([(state, codes)])
        return audio

    @torch.inference_mode()
    def step(self, rows: Sequence[tuple[DecoderState, torch.Tensor]]) -> list[torch.Tensor]:
        """Decode each row's new codes (num_quantizers, frames; frames may differ, and may be 0) in one batched pass,
        continuing each row's own state. Returns each row's audio, frames * samples_per_frame samples in [-1, 1].

        A state may appear at most once in a step. Codes below 0 are clamped to 0, as the package's ``decode`` does.
        """
        like = self._parameter()
        outputs = [torch.zeros(0, dtype=like.dtype, device=like.device) for _ in rows]
        live = [index for index, (_state, codes) in enumerate(rows) if codes.shape[-1] > 0]
        if not live:
            return outputs
        states = [rows[index][0] for index in live]
        if len({id(state) for state in states}) != len(states):
            raise ValueError("a decoder state appears twice in one step")
        chunks = [rows[index][1] for index in live]
        for codes in chunks:
            if codes.dim() != 2 or codes.shape[0] != self.num_quantizers:
                raise ValueError(f"codes must be ({self.num_quantizers}, frames), got {tuple(codes.shape)}")
        frames = [int(codes.shape[-1]) for codes in chunks]
        longest = max(frames)
        batch = torch.zeros((len(chunks), self.num_quantizers, longest), dtype=torch.long, device=like.device)
        for row, codes in enumerate(chunks):
            batch[row, :, : frames[row]] = codes.to(device=like.device, dtype=torch.long).clamp(min=0)
        lengths = torch.tensor(frames, dtype=torch.long, device=like.device)

        wav = _Pass(self, states).run(batch, lengths)
        for row, index in enumerate(live):
            samples = frames[row] * self.samples_per_frame
            outputs[index] = wav[row, 0, :samples]
            states[row].frames += frames[row]
            states[row].samples_emitted += samples
        return outputs


class _Pass:
    """One batched step through the decoder: mirrors ``Qwen3TTSTokenizerV2Decoder.forward`` layer by layer, reading
    and replacing the rows' states. ``lengths`` is each row's valid length at the current time resolution."""

    def __init__(self, owner: StreamingDecoder, states: list[DecoderState]) -> None:
        self._owner = owner
        self._states = states

    def run(self, codes: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        decoder = self._owner.decoder
        hidden = decoder.quantizer.decode(codes)
        hidden = self._causal_conv(decoder.pre_conv, hidden, frames)
        hidden = self._transformer(hidden.transpose(1, 2), frames).permute(0, 2, 1)
        lengths = frames
        for blocks in decoder.upsample:
            for block in blocks:
                hidden, lengths = self._layer(block, hidden, lengths)
        for block in decoder.decoder:
            hidden, lengths = self._layer(block, hidden, lengths)
        return hidden.clamp(min=-1, max=1)

    def _layer(
        self, module: nn.Module, hidden: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, Any]:
        """One module of the convolutional part; returns its output and the rows' lengths after it."""
        if isinstance(module, Qwen3TTSTokenizerV2CausalConvNet):
            return self._causal_conv(module, hidden, lengths), lengths
        if isinstance(module, Qwen3TTSTokenizerV2CausalTransConvNet):
            return self._transposed_conv(module, hidden, lengths), lengths * module.conv.stride[0]
        if isinstance(module, SnakeBeta):
            return module(hidden), lengths
        if isinstance(module, Qwen3TTSTokenizerV2ConvNeXtBlock):
            residual = hidden
            hidden = self._causal_conv(module.dwconv, hidden, lengths).permute(0, 2, 1)
            hidden = module.pwconv2(module.act(module.pwconv1(module.norm(hidden))))
            return residual + (module.gamma * hidden).permute(0, 2, 1), lengths
        if isinstance(module, Qwen3TTSTokenizerV2DecoderDecoderResidualUnit):
            residual = hidden
            hidden = self._causal_conv(module.conv1, module.act1(hidden), lengths)
            hidden = self._causal_conv(module.conv2, module.act2(hidden), lengths)
            return hidden + residual, lengths
        if isinstance(module, Qwen3TTSTokenizerV2DecoderDecoderBlock):
            for inner in module.block:
                hidden, lengths = self._layer(inner, hidden, lengths)
            return hidden, lengths
        # A layer this decoder does not know could hold state across time: refuse rather than decode it wrongly.
        raise NotImplementedError(f"no streaming rule for {type(module).__name__}")

    def _causal_conv(
        self, module: Qwen3TTSTokenizerV2CausalConvNet, hidden: torch.Tensor, lengths: torch.Tensor
    ) -> torch.Tensor:
        slot = self._owner._conv_slots[module]
        history_length = self._owner._conv_shapes[slot][1]
        if history_length == 0:
            return module.conv(hidden)
        history = torch.stack([state.conv_history[slot] for state in self._states])
        extended = torch.cat([history, hidden], dim=-1)
        # The new history ends at each row's last valid input: padding past it never enters.
        index = (lengths.view(-1, 1) + torch.arange(history_length, device=hidden.device)).view(
            -1, 1, history_length
        )
        kept = extended.gather(-1, index.expand(-1, extended.shape[1], -1))
        for row, state in enumerate(self._states):
            state.conv_history[slot] = kept[row]
        return module.conv(extended)

    def _transposed_conv(
        self, module: Qwen3TTSTokenizerV2CausalTransConvNet, hidden: torch.Tensor, lengths: torch.Tensor
    ) -> torch.Tensor:
        conv = module.conv
        stride = conv.stride[0]
        emitted = hidden.shape[-1] * stride
        slot = self._owner._tail_slots.get(module)
        if slot is None:  # kernel = stride: outputs never overlap
            return conv(hidden)
        overlap = self._owner._tail_shapes[slot][1]
        # Zero the padding: its outputs would overlap the last valid input's, and that overlap is the kept tail.
        valid = torch.arange(hidden.shape[-1], device=hidden.device).view(1, 1, -1) < lengths.view(-1, 1, 1)
        output = conv(hidden * valid)  # (B, C, emitted + overlap)
        tail = torch.stack([state.transposed_tail[slot] for state in self._states])
        output = torch.cat([output[..., :overlap] + tail, output[..., overlap:]], dim=-1)
        index = (lengths.view(-1, 1) * stride + torch.arange(overlap, device=hidden.device)).view(
            -1, 1, overlap
        )
        kept = output.gather(-1, index.expand(-1, output.shape[1], -1))
        if conv.bias is not None:
            kept = kept - conv.bias.view(1, -1, 1)
        for row, state in enumerate(self._states):
            state.transposed_tail[slot] = kept[row]
        return output[..., :emitted]

    def _attend(
        self,
        attention: Any,
        query: torch.Tensor,
        keys: torch.Tensor,
        values: torch.Tensor,
        allowed: torch.Tensor,
        mask: torch.Tensor,
    ) -> torch.Tensor:
        """Attention as the package computes it for its configured implementation: eager's float32 softmax, or
        torch's scaled_dot_product_attention for everything else (sdpa, the default), given the same boolean mask."""
        keys = repeat_kv(keys, attention.num_key_value_groups)
        values = repeat_kv(values, attention.num_key_value_groups)
        if attention.config._attn_implementation == "eager":
            weights = torch.matmul(query, keys.transpose(2, 3)) * attention.scaling + mask
            weights = nn.functional.softmax(weights, dim=-1, dtype=torch.float32).to(query.dtype)
            return torch.matmul(weights, values)
        return nn.functional.scaled_dot_product_attention(
            query, keys, values, attn_mask=allowed.unsqueeze(1), scale=attention.scaling
        )

    def _transformer(self, hidden: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The pre-transformer on new frames (B, T, latent), continuing each row's key/value window."""
        model = self._owner.decoder.pre_transformer
        window = self._owner.window
        kept_length = window - 1
        device = hidden.device
        hidden = model.input_proj(hidden)
        batch, new_frames, _ = hidden.shape
        starts = torch.tensor([state.frames for state in self._states], dtype=torch.long, device=device)
        positions = starts.view(-1, 1) + torch.arange(new_frames, device=device)  # (B, T)
        cos, sin = model.rotary_emb(hidden, positions)
        past_positions = torch.stack([state.key_positions for state in self._states])
        key_positions = torch.cat([past_positions, positions], dim=-1)  # (B, window - 1 + T)
        distance = positions.unsqueeze(-1) - key_positions.unsqueeze(1)  # query - key, (B, T, keys)
        allowed = (distance >= 0) & (distance < window)
        mask = torch.zeros(allowed.shape, dtype=hidden.dtype, device=device)
        mask = mask.masked_fill(~allowed, torch.finfo(hidden.dtype).min).unsqueeze(1)
        index = lengths.view(-1, 1) + torch.arange(kept_length, device=device)  # (B, window - 1)
        for layer_index, layer in enumerate(model.layers):
            residual = hidden
            attention = layer.self_attn
            normed = layer.input_layernorm(hidden)
            shape = (batch, new_frames, -1, attention.head_dim)
            query = attention.q_norm(attention.q_proj(normed).view(shape)).transpose(1, 2)
            key = attention.k_norm(attention.k_proj(normed).view(shape)).transpose(1, 2)
            value = attention.v_proj(normed).view(shape).transpose(1, 2)
            query, key = apply_rotary_pos_emb(query, key, cos, sin)
            keys = torch.cat([torch.stack([state.keys[layer_index] for state in self._states]), key], dim=2)
            values = torch.cat(
                [torch.stack([state.values[layer_index] for state in self._states]), value], dim=2
            )
            gather = index.view(batch, 1, kept_length, 1).expand(-1, keys.shape[1], -1, keys.shape[-1])
            kept_keys, kept_values = keys.gather(2, gather), values.gather(2, gather)
            for row, state in enumerate(self._states):
                state.keys[layer_index] = kept_keys[row]
                state.values[layer_index] = kept_values[row]
            attended = self._attend(attention, query, keys, values, allowed, mask)
            attended = attended.transpose(1, 2).reshape(batch, new_frames, -1)
            hidden = residual + layer.self_attn_layer_scale(attention.o_proj(attended))
            residual = hidden
            hidden = residual + layer.mlp_layer_scale(layer.mlp(layer.post_attention_layernorm(hidden)))
        kept_positions = key_positions.gather(1, index)
        for row, state in enumerate(self._states):
            state.key_positions = kept_positions[row]
        hidden = model.norm(hidden)
        result: torch.Tensor = model.output_proj(hidden)
        return result
