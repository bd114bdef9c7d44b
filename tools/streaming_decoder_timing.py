"""Decoder time per second of audio: the stateful streaming decoder in fixed chunks ÷ one whole decode of the same
codes, with each stream's max difference from the whole decode (issue 15's decoder figure).

``python -m tools.streaming_decoder_timing [--real-config] [--frames 120] [--chunks 1 4 12] [--threads 1]``

The default decoder is the tiny model's (built into a temporary folder, seed 0). ``--real-config`` instantiates
qwen_tts's decoder from its default config (the released 12 Hz decoder's shape: 8 transformer layers of 1024,
decoder_dim 1536, 16 codebooks of 2048; ``codebook_dim`` 512 as in the released config.json) with random
fan-in-scaled weights, scaled like the tiny model so that random codes decode to RMS ~0.1 rather than clipping.
Times are the best of ``--repeats`` runs, on the CPU.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

# First qwen_tts itself, imported without its banners (voice_tts.qwen); the submodules below are then quiet.
from voice_tts.streaming_decoder import StreamingDecoder

# isort: split
import torch
from qwen_tts.core.tokenizer_12hz.configuration_qwen3_tts_tokenizer_v2 import Qwen3TTSTokenizerV2DecoderConfig
from qwen_tts.core.tokenizer_12hz.modeling_qwen3_tts_tokenizer_v2 import (
    Qwen3TTSTokenizerV2Decoder,
    Qwen3TTSTokenizerV2Model,
)

from tools.released_shape_model import DECODER_CODEBOOK_DIM
from tools.tiny_model import build_tiny_model

SAMPLE_RATE = 24_000
OUTPUT_RMS = 0.1


def tiny_decoder(folder: Path) -> Qwen3TTSTokenizerV2Decoder:
    path = build_tiny_model(folder / "tiny-qwen3-tts", seed=0)
    model = Qwen3TTSTokenizerV2Model.from_pretrained(str(path / "speech_tokenizer"), dtype=torch.float32)
    decoder: Qwen3TTSTokenizerV2Decoder = model.decoder.eval()
    return decoder


def real_config_decoder() -> Qwen3TTSTokenizerV2Decoder:
    config = Qwen3TTSTokenizerV2DecoderConfig(codebook_dim=DECODER_CODEBOOK_DIM)
    config._attn_implementation = "sdpa"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        decoder = Qwen3TTSTokenizerV2Decoder(config).eval()
        with torch.no_grad():
            for module in decoder.modules():
                if isinstance(module, torch.nn.Conv1d | torch.nn.ConvTranspose1d | torch.nn.Linear):
                    torch.nn.init.kaiming_normal_(module.weight, nonlinearity="linear")
                    if module.bias is not None:
                        module.bias.zero_()
            for name, parameter in decoder.named_parameters():
                if name.endswith("embedding_sum"):
                    parameter.normal_()
            _calibrate(decoder, torch.randint(0, config.codebook_size, (1, config.num_quantizers, 12)))
    return decoder


def _calibrate(decoder: Qwen3TTSTokenizerV2Decoder, codes: torch.Tensor) -> None:
    last = decoder.decoder[-1].conv
    captured: list[torch.Tensor] = []
    handle = last.register_forward_hook(lambda _module, _inputs, output: captured.append(output))
    try:
        decoder(codes)
    finally:
        handle.remove()
    last.weight.mul_(OUTPUT_RMS / float(captured[0].std()))


def _best_time(run: Callable[[], torch.Tensor], repeats: int) -> tuple[float, torch.Tensor]:
    best, result = float("inf"), torch.zeros(0)
    for _ in range(repeats):
        started = time.perf_counter()
        result = run()
        best = min(best, time.perf_counter() - started)
    return best, result


@dataclass
class DecoderTiming:
    """Seconds for one decode of the same codes: whole, streamed (with its max difference from whole), and with the
    old left-context scheme (each chunk decoded again with ``context`` earlier frames, only its samples kept)."""

    frames: int
    audio_s: float
    whole_s: float
    streamed_s: float
    max_difference: float
    context_s: float
    context_max_difference: float

    @property
    def streamed_vs_whole(self) -> float:
        return self.streamed_s / self.whole_s

    @property
    def context_vs_whole(self) -> float:
        return self.context_s / self.whole_s


def chunk_bounds(frames: int, first: int, chunk: int) -> list[tuple[int, int]]:
    """The service's chunking: ``first`` frames, then ``chunk`` at a time, the rest last."""
    bounds, start = [], 0
    while start < frames:
        end = min(frames, start + (first if start == 0 else chunk))
        bounds.append((start, end))
        start = end
    return bounds


def time_decoder(
    decoder: Qwen3TTSTokenizerV2Decoder,
    frames: int,
    bounds: list[tuple[int, int]],
    repeats: int,
    context: int = 25,
) -> DecoderTiming:
    """Time random codes of ``frames`` frames decoded whole, streamed in ``bounds``, and with left context."""
    generator = torch.Generator().manual_seed(1)
    codes = torch.randint(
        0, decoder.config.codebook_size, (decoder.config.num_quantizers, frames), generator=generator
    )
    streaming = StreamingDecoder(decoder)
    per_frame = streaming.samples_per_frame

    def whole() -> torch.Tensor:
        with torch.inference_mode():
            wav: torch.Tensor = decoder(codes.unsqueeze(0))[0, 0]
        return wav

    def streamed() -> torch.Tensor:
        state = streaming.new_state()
        return torch.cat([streaming.decode(state, codes[:, start:end]) for start, end in bounds])

    def with_context() -> torch.Tensor:
        pieces = []
        with torch.inference_mode():
            for start, end in bounds:
                begin = max(0, start - context)
                wav = decoder(codes[:, begin:end].unsqueeze(0))[0, 0]
                pieces.append(wav[(start - begin) * per_frame :])
        return torch.cat(pieces)

    whole_s, reference = _best_time(whole, repeats)
    streamed_s, audio = _best_time(streamed, repeats)
    context_s, context_audio = _best_time(with_context, repeats)
    return DecoderTiming(
        frames=frames,
        audio_s=frames * per_frame / SAMPLE_RATE,
        whole_s=whole_s,
        streamed_s=streamed_s,
        max_difference=float((audio - reference).abs().max()),
        context_s=context_s,
        context_max_difference=float((context_audio - reference).abs().max()),
    )


def measure(decoder: Qwen3TTSTokenizerV2Decoder, frames: int, chunks: list[int], repeats: int) -> None:
    for chunk in chunks:
        timing = time_decoder(decoder, frames, chunk_bounds(frames, chunk, chunk), repeats)
        if chunk == chunks[0]:
            print(
                f"whole decode of {frames} frames ({timing.audio_s:.2f} s): "
                f"{timing.whole_s / timing.audio_s * 1000:.1f} ms per s"
            )
        print(
            f"streamed in {chunk:>3}-frame chunks: {timing.streamed_s / timing.audio_s * 1000:.1f} ms per s, "
            f"÷ whole {timing.streamed_vs_whole:.2f}, max difference {timing.max_difference:.1e}; "
            f"re-decoded with 25 frames of context ÷ whole {timing.context_vs_whole:.2f}, "
            f"max difference {timing.context_max_difference:.1e}"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tools.streaming_decoder_timing", description=__doc__)
    parser.add_argument(
        "--real-config", action="store_true", help="the released decoder's shape, random weights"
    )
    parser.add_argument("--frames", type=int, default=120)
    parser.add_argument("--chunks", type=int, nargs="+", default=[1, 4, 12])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as folder:
        decoder = real_config_decoder() if args.real_config else tiny_decoder(Path(folder))
        measure(decoder, args.frames, args.chunks, args.repeats)


if __name__ == "__main__":
    main()
