"""A random-weight Qwen3-TTS Base model at the released 0.6B model's shape, for timings that the tiny model distorts.

The tiny model (:mod:`tools.tiny_model`) makes its first audio in about 15 ms on a CPU, so a fixed millisecond of
gRPC loopback is 7 % of it; the released model's first chunk takes hundreds of milliseconds on a GPU and seconds
on a CPU. This model has the released 12 Hz 0.6B Base model's widths and depths, with random weights, built by the
same code as the tiny one (:func:`tools.tiny_model.build_random_model`), so the service and its engine do the work
of the real model on every frame:

- talker: 28 layers of hidden 1024 (16 query heads, 8 key/value heads of 128, MLP 3072), multimodal RoPE
  [24, 20, 20] interleaved, base 1e6; codec vocabulary 3072 (2048 codes + 1024 special ids); text hidden 2048;
- code predictor: 5 layers of hidden 1024 (16/8 heads of 128, MLP 3072), 16 code groups of 2048 codes;
- speaker encoder: qwen_tts's ECAPA-TDNN defaults with a 1024-wide x-vector (the talker's hidden size);
- speech tokenizer: the Mimi encoder's defaults (32 quantizers, of which the first 16 are used) and the 12 Hz
  decoder's defaults with the released ``codebook_dim`` of 512 (also :mod:`tools.streaming_decoder_timing`'s).

One difference, on purpose: the text vocabulary is the tiny model's byte-level BPE (a few hundred tokens), not
Qwen's 151,936. A token's embedding is a row lookup whose cost does not depend on the table's size, and the real
table alone would add 1.2 GB (float32) to every copy. The model is 856 M parameters (604 M in the talker, the
predictor and the speaker encoder), 3.4 GB on disk.

Codec special ids follow the released layout (pad 2148, bos 2149, eos 2150, think 2154-2157); the language ids are
placed above 2048 like the released ones, though not at their exact values (nothing compares them across models).
It is built with ``never_eos`` by default, like the benchmarks' tiny model: every generation runs to
``max_new_tokens``.

``python -m tools.released_shape_model [--output models/qwen3-tts-0.6b-shape] [--seed 0]`` builds it (about
20 s) and prints its size.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from tools.tiny_model import (
    LANGUAGES,
    SAMPLE_RATE,
    RandomModelShape,
    build_random_model,
    directory_size,
    speech_tokenizer_config,
)

# isort: split
from qwen_tts.core.tokenizer_12hz.configuration_qwen3_tts_tokenizer_v2 import Qwen3TTSTokenizerV2Config

DEFAULT_OUTPUT = Path("models/qwen3-tts-0.6b-shape")
CODEBOOK_SIZE = 2048
NUM_CODE_GROUPS = 16
HIDDEN = 1024
TALKER_VOCAB = CODEBOOK_SIZE + 1024
ENCODER_QUANTIZERS = 32  # the Mimi encoder's; the tokenizer keeps the first NUM_CODE_GROUPS
# Not a constructor default of the decoder config; the released config.json sets it.
DECODER_CODEBOOK_DIM = 512


def _transformer(layers: int) -> dict[str, Any]:
    return {
        "hidden_size": HIDDEN,
        "intermediate_size": 3072,
        "num_hidden_layers": layers,
        "num_attention_heads": 16,
        "num_key_value_heads": 8,
        "head_dim": 128,
        "hidden_act": "silu",
        "rms_norm_eps": 1e-6,
        "rope_theta": 1_000_000,
    }


def _talker_config(text_vocab_size: int) -> dict[str, Any]:
    return {
        **_transformer(28),
        "vocab_size": TALKER_VOCAB,
        "max_position_embeddings": 32768,
        "rope_scaling": {"rope_type": "default", "mrope_section": [24, 20, 20], "interleaved": True},
        "position_id_per_seconds": 13,
        "num_code_groups": NUM_CODE_GROUPS,
        "text_vocab_size": text_vocab_size,
        "text_hidden_size": 2048,
        "codec_pad_id": 2148,
        "codec_bos_id": 2149,
        "codec_eos_token_id": 2150,
        "codec_think_id": 2154,
        "codec_nothink_id": 2155,
        "codec_think_bos_id": 2156,
        "codec_think_eos_id": 2157,
        "codec_language_id": {name: CODEBOOK_SIZE + 2 + index for index, name in enumerate(LANGUAGES)},
        "spk_id": {},
        "spk_is_dialect": {},
        "code_predictor_config": {
            **_transformer(5),
            "vocab_size": CODEBOOK_SIZE,
            "max_position_embeddings": 65536,
            "num_code_groups": NUM_CODE_GROUPS,
        },
    }


def _speech_tokenizer_config() -> Qwen3TTSTokenizerV2Config:
    return speech_tokenizer_config(
        {"num_quantizers": ENCODER_QUANTIZERS, "codebook_size": CODEBOOK_SIZE},
        {"codebook_dim": DECODER_CODEBOOK_DIM},
        NUM_CODE_GROUPS,
    )


RELEASED_0_6B_SHAPE = RandomModelShape(
    talker_config=_talker_config,
    speaker_encoder_config={"enc_dim": HIDDEN, "sample_rate": SAMPLE_RATE},
    speech_tokenizer_config=_speech_tokenizer_config,
)


def build_released_shape_model(output_dir: Path, seed: int = 0, *, never_eos: bool = True) -> Path:
    """Build the model into ``output_dir`` (created, files overwritten; 3.4 GB) and return that path."""
    return build_random_model(output_dir, RELEASED_0_6B_SHAPE, seed, never_eos=never_eos)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tools.released_shape_model", description=__doc__)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help=f"default: {DEFAULT_OUTPUT}")
    parser.add_argument("--seed", type=int, default=0, help="torch seed for the random weights (default: 0)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    path = build_released_shape_model(args.output, seed=args.seed)
    print(f"built {path} in {time.perf_counter() - started:.1f} s: {directory_size(path) / 1e9:.2f} GB")


if __name__ == "__main__":
    main()
