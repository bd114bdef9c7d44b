"""A tiny random-weight Qwen3-TTS Base model (12 Hz speech tokenizer) for tests and offline development.

Everything is built with qwen_tts's own classes and saved in the layout the released checkpoints use, so
``Qwen3TTSModel.from_pretrained(path, device_map="cpu", dtype=torch.float32)`` loads it with no network:

    path/config.json, model.safetensors, generation_config.json   talker + code predictor + speaker encoder
    path/tokenizer.json, tokenizer_config.json, ...                text tokenizer (byte-level BPE, Qwen2 style)
    path/speech_tokenizer/config.json, model.safetensors,          Qwen3TTSTokenizerV2Model (Mimi-style encoder,
        preprocessor_config.json                                   12.5 Hz codes) and its EncodecFeatureExtractor

The shapes follow the real 0.6B model scaled down (talker hidden 64, 4 code groups of 64 codes, 1920 samples a
frame at 24 kHz); the weights are random, so it speaks noise, and its EOS comes at a random frame: seed torch.

``never_eos=True`` (``--never-eos``) builds a variant whose talker never picks EOS, so every generation runs to
``max_new_tokens``: benchmarks use it to compare runs of the same length. The talker's ``codec_head`` has no bias,
so no row can make the EOS logit negative for every hidden state (the final RMSNorm's output takes any sign in every
channel); instead the EOS row is zeroed (its logit is always 0) and the codebook rows are scaled up
:data:`NEVER_EOS_CODE_SCALE`-fold. Among 64 codes some logit is positive for any hidden state in practice, so the
best code beats EOS by tens of logits (measured on seed 0: at least 36 over 1000 frames; a 50-fold scale gave 10),
so EOS's probability after temperature is below e^-35. Only the first code of each frame becomes nearly greedy; the
code predictor, decoder and everything else are the same weights as the plain model of that seed.

:func:`build_random_model` builds any :class:`RandomModelShape` the same way; :mod:`tools.released_shape_model` uses
it for a model at the released 0.6B shape (the benchmarks' time-to-first-audio ratio).

``python -m tools.tiny_model [--output models/tiny-qwen3-tts] [--seed 0] [--never-eos]`` builds it and prints
its size and load time.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# First qwen_tts itself, imported without its banners; the submodules below are then already loaded, and quiet.
from voice_tts.qwen import Qwen3TTSModel

# isort: split
import torch
from qwen_tts.core.models import Qwen3TTSConfig, Qwen3TTSForConditionalGeneration, Qwen3TTSProcessor
from qwen_tts.core.tokenizer_12hz.configuration_qwen3_tts_tokenizer_v2 import Qwen3TTSTokenizerV2Config
from qwen_tts.core.tokenizer_12hz.modeling_qwen3_tts_tokenizer_v2 import (
    Qwen3TTSTokenizerV2Decoder,
    Qwen3TTSTokenizerV2Model,
)
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import EncodecFeatureExtractor, Qwen2TokenizerFast

DEFAULT_OUTPUT = Path("models/tiny-qwen3-tts")
SAMPLE_RATE = 24_000
# One codec frame: Mimi-style encoder strides 8*6*5*4 (=960) then x2; decoder upsamples 8*5*4*3 * 2*2.
SAMPLES_PER_FRAME = 1920

CODEBOOK_SIZE = 64  # codes per group (real models: 2048); the Mimi quantizer wants a power of two
NUM_CODE_GROUPS = 4  # residual codebooks a frame (real models: 16)
TALKER_HIDDEN = 64
OUTPUT_RMS = 0.1  # level of the random decoder's output for random codes
# The talker's codec vocabulary is the codebook plus 1024 special ids, as in the real models (2048 + 1024):
# generation suppresses the top 1024 ids except EOS, so only codes and EOS can be sampled.
TALKER_VOCAB = CODEBOOK_SIZE + 1024
# never_eos: how much the talker's codebook rows of codec_head are scaled up (their logits then dwarf EOS's 0).
NEVER_EOS_CODE_SCALE = 200.0
# Codec special ids sit just above the codebook (real 0.6B/1.7B: pad 2148, bos 2149, eos 2150, ...).
CODEC_PAD_ID = CODEBOOK_SIZE + 0
CODEC_BOS_ID = CODEBOOK_SIZE + 1
CODEC_EOS_ID = CODEBOOK_SIZE + 2
CODEC_THINK_ID = CODEBOOK_SIZE + 3
CODEC_NOTHINK_ID = CODEBOOK_SIZE + 4
CODEC_THINK_BOS_ID = CODEBOOK_SIZE + 5
CODEC_THINK_EOS_ID = CODEBOOK_SIZE + 6
# The ten languages the released models list (lower case, as the model compares them); "auto" needs no id.
LANGUAGES = (
    "chinese",
    "english",
    "japanese",
    "korean",
    "german",
    "french",
    "russian",
    "portuguese",
    "spanish",
    "italian",
)
CODEC_LANGUAGE_IDS = {name: CODEBOOK_SIZE + 16 + index for index, name in enumerate(LANGUAGES)}

# Text tokenizer: generation slices the prompt "<|im_start|>assistant\n{text}<|im_end|>\n<|im_start|>assistant\n"
# by position, so "<|im_start|>", "assistant", "\n" and "<|im_end|>" must each be one token.
SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<tts_pad>",
    "<tts_text_bos>",
    "<tts_text_eod>",
)
NEWLINE = "Ċ"  # "\n" as a byte-level BPE token
TEXT_VOCAB_SIZE = 512  # BPE target; the embedding table is sized to the trained vocabulary
TEXT_HIDDEN = 32
# Qwen2's pre-tokenizer split pattern (transformers.models.qwen2.tokenization_qwen2.PRETOKENIZE_REGEX).
QWEN2_SPLIT_PATTERN = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
TOKENIZER_CORPUS = (
    "<|im_start|>assistant\nHello, this is a tiny voice model speaking.<|im_end|>\n",
    "<|im_start|>user\nPlease read the next sentence aloud.<|im_end|>\n",
    "<|im_start|>assistant\nThe quick brown fox jumps over the lazy dog.<|im_end|>\n",
    "<|im_start|>assistant\nOne, two, three, four, five: numbers 0 1 2 3 4 5 6 7 8 9.<|im_end|>\n",
    "<|im_start|>assistant\nGood morning! How are you today? I am fine, thank you.<|im_end|>\n",
    "<|im_start|>assistant\nVoice cloning copies the timbre of a short reference clip.<|im_end|>\n",
)

GENERATION_CONFIG: dict[str, Any] = {
    # Read by Qwen3TTSModel as its generate defaults (the same keys the released checkpoints ship).
    "do_sample": True,
    "top_k": 50,
    "top_p": 1.0,
    "temperature": 0.9,
    "repetition_penalty": 1.05,
    "subtalker_dosample": True,
    "subtalker_top_k": 50,
    "subtalker_top_p": 1.0,
    "subtalker_temperature": 0.9,
    "max_new_tokens": 256,
}


@dataclass(frozen=True)
class RandomModelShape:
    """What sets one random-weight model apart from another: the talker's config (with its code predictor's; a
    function of the text vocabulary's size), the speaker encoder's and the speech tokenizer's. The text tokenizer,
    its special tokens and the generation defaults are the same for every shape."""

    talker_config: Callable[[int], dict[str, Any]]
    speaker_encoder_config: dict[str, Any]
    speech_tokenizer_config: Callable[[], Qwen3TTSTokenizerV2Config]


def build_tiny_model(output_dir: Path, seed: int = 0, *, never_eos: bool = False) -> Path:
    """Build the tiny model into ``output_dir`` (created, files overwritten) and return that path.

    The same seed (and ``never_eos``) gives byte-identical files. The caller's torch RNG state is left as it was.
    ``never_eos``: the talker never chooses EOS, so generation always runs to ``max_new_tokens`` (see the module
    docstring); everything else equals the plain model of the same seed.
    """
    return build_random_model(output_dir, TINY_SHAPE, seed, never_eos=never_eos)


def build_random_model(output_dir: Path, shape: RandomModelShape, seed: int, *, never_eos: bool) -> Path:
    """A random-weight model of ``shape`` in the released checkpoints' layout (see :func:`build_tiny_model`)."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        tokenizer = _build_text_tokenizer()
        _save_model(
            output_dir,
            shape,
            text_vocab_size=len(tokenizer),
            special_ids=_special_ids(tokenizer),
            never_eos=never_eos,
        )
        Qwen3TTSProcessor(tokenizer=tokenizer).save_pretrained(str(output_dir))
        _save_speech_tokenizer(output_dir / "speech_tokenizer", shape.speech_tokenizer_config())
    return output_dir


def _build_text_tokenizer() -> Qwen2TokenizerFast:
    """A byte-level BPE with Qwen2's pre-tokenizer layout (a Sequence of Split + ByteLevel), trained on a few lines."""
    backend = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    backend.normalizer = normalizers.NFC()
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
        ]
    )
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TEXT_VOCAB_SIZE,
        min_frequency=1,
        show_progress=False,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    backend.train_from_iterator(TOKENIZER_CORPUS, trainer=trainer)
    tokenizer = Qwen2TokenizerFast(
        tokenizer_object=backend,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        additional_special_tokens=list(SPECIAL_TOKENS[1:]),
        model_max_length=32768,
        clean_up_tokenization_spaces=False,
        errors="replace",
    )
    probe = tokenizer("<|im_start|>assistant\nHi.<|im_end|>\n<|im_start|>assistant\n")["input_ids"]
    head, tail = tokenizer.convert_ids_to_tokens(probe[:3]), tokenizer.convert_ids_to_tokens(probe[-5:])
    if head != ["<|im_start|>", "assistant", NEWLINE] or tail != ["<|im_end|>", NEWLINE, *head]:
        raise RuntimeError(f"tiny tokenizer splits the chat template wrongly: {head} ... {tail}")
    return tokenizer


def _special_ids(tokenizer: Qwen2TokenizerFast) -> dict[str, int]:
    def token_id(token: str) -> int:
        found = tokenizer.convert_tokens_to_ids(token)
        if not isinstance(found, int):
            raise TypeError(f"{token!r} is not one token: {found!r}")
        return found

    return {
        "im_start_token_id": token_id("<|im_start|>"),
        "im_end_token_id": token_id("<|im_end|>"),
        "tts_pad_token_id": token_id("<tts_pad>"),
        "tts_bos_token_id": token_id("<tts_text_bos>"),
        "tts_eos_token_id": token_id("<tts_text_eod>"),
    }


def _talker_config(text_vocab_size: int) -> dict[str, Any]:
    return {
        "vocab_size": TALKER_VOCAB,
        "hidden_size": TALKER_HIDDEN,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "hidden_act": "silu",
        "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-6,
        "rope_theta": 1_000_000,
        # Multimodal RoPE as in the real talker ([24, 20, 20] for head_dim 128): sections sum to head_dim / 2.
        "rope_scaling": {"rope_type": "default", "mrope_section": [4, 2, 2], "interleaved": True},
        "position_id_per_seconds": 13,
        "num_code_groups": NUM_CODE_GROUPS,
        "text_vocab_size": text_vocab_size,
        "text_hidden_size": TEXT_HIDDEN,
        "codec_pad_id": CODEC_PAD_ID,
        "codec_bos_id": CODEC_BOS_ID,
        "codec_eos_token_id": CODEC_EOS_ID,
        "codec_think_id": CODEC_THINK_ID,
        "codec_nothink_id": CODEC_NOTHINK_ID,
        "codec_think_bos_id": CODEC_THINK_BOS_ID,
        "codec_think_eos_id": CODEC_THINK_EOS_ID,
        "codec_language_id": dict(CODEC_LANGUAGE_IDS),
        "spk_id": {},  # Base models have no built-in speakers
        "spk_is_dialect": {},
        "code_predictor_config": {
            "vocab_size": CODEBOOK_SIZE,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "head_dim": 16,
            "hidden_act": "silu",
            "max_position_embeddings": 256,
            "rms_norm_eps": 1e-6,
            "rope_theta": 1_000_000,
            "num_code_groups": NUM_CODE_GROUPS,
        },
    }


def _save_model(
    output_dir: Path,
    shape: RandomModelShape,
    *,
    text_vocab_size: int,
    special_ids: dict[str, int],
    never_eos: bool = False,
) -> None:
    config = Qwen3TTSConfig(
        talker_config=shape.talker_config(text_vocab_size),
        speaker_encoder_config=dict(shape.speaker_encoder_config),
        tokenizer_type="qwen3_tts_tokenizer_12hz",
        tts_model_size="0b6",
        tts_model_type="base",
        architectures=["Qwen3TTSForConditionalGeneration"],
        **special_ids,
    )
    model = Qwen3TTSForConditionalGeneration(config).eval()
    if never_eos:
        _silence_eos(model)
    model.save_pretrained(str(output_dir), safe_serialization=True)

    config_path = output_dir / "config.json"
    saved = json.loads(config_path.read_text(encoding="utf-8"))
    # Qwen3TTSSpeakerEncoderConfig.__init__ takes no **kwargs, so a saved "model_type" key breaks the reload.
    saved["speaker_encoder_config"].pop("model_type", None)
    config_path.write_text(json.dumps(saved, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    # qwen_tts reads generation_config.json as plain JSON for its generate defaults (and requires the file).
    (output_dir / "generation_config.json").write_text(
        json.dumps(GENERATION_CONFIG, indent=2, sort_keys=True) + "\n", encoding="utf-8"
    )


def _silence_eos(model: Qwen3TTSForConditionalGeneration) -> None:
    """EOS logit always 0, code logits scaled up: the best code always wins by far (module docstring)."""
    talker = model.config.talker_config
    codebook_size = talker.code_predictor_config.vocab_size
    with torch.no_grad():
        head = model.talker.codec_head.weight  # (talker vocabulary, talker hidden), no bias
        head[:codebook_size].mul_(NEVER_EOS_CODE_SCALE)
        head[talker.codec_eos_token_id].zero_()


def _speech_tokenizer_config() -> Qwen3TTSTokenizerV2Config:
    encoder = {
        "sampling_rate": SAMPLE_RATE,
        "frame_rate": SAMPLE_RATE / SAMPLES_PER_FRAME,
        "audio_channels": 1,
        "hidden_size": 32,
        "num_filters": 8,
        "num_residual_layers": 1,
        "upsampling_ratios": [8, 6, 5, 4],
        "kernel_size": 7,
        "last_kernel_size": 3,
        "residual_kernel_size": 3,
        "dilation_growth_rate": 2,
        "use_causal_conv": True,
        "compress": 2,
        "codebook_size": CODEBOOK_SIZE,
        "codebook_dim": 16,
        "num_quantizers": NUM_CODE_GROUPS,
        "num_semantic_quantizers": 1,
        "vector_quantization_hidden_dimension": 16,
        "upsample_groups": 32,  # must divide hidden_size (the real encoder: 512)
        "num_hidden_layers": 1,
        "intermediate_size": 64,
        "num_attention_heads": 2,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "sliding_window": 250,
        "use_cache": False,
    }
    decoder = {
        "codebook_size": CODEBOOK_SIZE,
        "codebook_dim": 16,
        "num_quantizers": NUM_CODE_GROUPS,
        "hidden_size": 32,
        "latent_dim": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "sliding_window": 72,
        "max_position_embeddings": 8000,
        "upsample_rates": [8, 5, 4, 3],
        "upsampling_ratios": [2, 2],
        "decoder_dim": 64,
    }
    return speech_tokenizer_config(encoder, decoder, NUM_CODE_GROUPS)


def speech_tokenizer_config(
    encoder: dict[str, Any], decoder: dict[str, Any], code_groups: int
) -> Qwen3TTSTokenizerV2Config:
    """A 24 kHz, 12.5 Hz speech tokenizer's config: the encoder's (Mimi) and decoder's settings over their
    defaults, of which the first ``code_groups`` quantizers are used."""
    return Qwen3TTSTokenizerV2Config(
        encoder_config=encoder,
        decoder_config=decoder,
        encoder_valid_num_quantizers=code_groups,
        input_sample_rate=SAMPLE_RATE,
        output_sample_rate=SAMPLE_RATE,
        encode_downsample_rate=SAMPLES_PER_FRAME,
        decode_upsample_rate=SAMPLES_PER_FRAME,
        architectures=["Qwen3TTSTokenizerV2Model"],
    )


def _save_speech_tokenizer(directory: Path, config: Qwen3TTSTokenizerV2Config) -> None:
    model = Qwen3TTSTokenizerV2Model(config).eval()
    with torch.no_grad():
        # Both codecs start with all-zero codebooks (trained as running averages): give them random centroids,
        # or every frame encodes to code 0 and every code decodes to the same thing.
        for name, tensor in _codebook_tensors(model):
            if name.endswith(("embed_sum", "embedding_sum")):
                tensor.normal_(0.0, 1.0)
        # transformers initialises the decoder's layers with std 0.02, which shrinks the signal ~1e7-fold on its
        # way to the waveform. Fan-in scaled weights and zero biases keep the waveform driven by the codes; the
        # last convolution is then scaled so that random codes decode to noise at about -20 dBFS, not clipping.
        for module in model.decoder.modules():
            if isinstance(module, torch.nn.Conv1d | torch.nn.ConvTranspose1d | torch.nn.Linear):
                torch.nn.init.kaiming_normal_(module.weight, nonlinearity="linear")
                if module.bias is not None:
                    module.bias.zero_()
        _calibrate_output_level(model.decoder, target_rms=OUTPUT_RMS)
    model.save_pretrained(str(directory), safe_serialization=True)
    EncodecFeatureExtractor(feature_size=1, sampling_rate=SAMPLE_RATE, padding_value=0.0).save_pretrained(
        str(directory)
    )


def _calibrate_output_level(decoder: Qwen3TTSTokenizerV2Decoder, *, target_rms: float) -> None:
    last_conv = decoder.decoder[-1].conv
    captured: list[torch.Tensor] = []
    handle = last_conv.register_forward_hook(lambda _module, _inputs, output: captured.append(output))
    try:
        decoder(torch.randint(0, decoder.config.codebook_size, (1, decoder.config.num_quantizers, 50)))
    finally:
        handle.remove()
    last_conv.weight.mul_(target_rms / float(captured[0].std()))


def _codebook_tensors(model: torch.nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    yield from model.named_parameters()
    yield from model.named_buffers()


TINY_SHAPE = RandomModelShape(
    talker_config=_talker_config,
    speaker_encoder_config={
        "mel_dim": 128,  # extract_speaker_embedding always computes 128 mel bins
        "enc_dim": TALKER_HIDDEN,  # the x-vector is fed to the talker as one input embedding
        "enc_channels": [32, 32, 32, 32, 96],
        "enc_kernel_sizes": [5, 3, 3, 3, 1],
        "enc_dilations": [1, 2, 3, 4, 1],
        "enc_attention_channels": 16,
        "enc_res2net_scale": 4,
        "enc_se_channels": 16,
        "sample_rate": SAMPLE_RATE,
    },
    speech_tokenizer_config=_speech_tokenizer_config,
)


def directory_size(path: Path) -> int:
    """Bytes in all files under ``path``."""
    return sum(file.stat().st_size for file in path.rglob("*") if file.is_file())


BUILD_HELP = "Build the tiny random-weight Qwen3-TTS Base model and check that qwen_tts loads it."


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tools.tiny_model", description=BUILD_HELP)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help=f"default: {DEFAULT_OUTPUT}")
    parser.add_argument("--seed", type=int, default=0, help="torch seed for the random weights (default: 0)")
    parser.add_argument(
        "--never-eos",
        action="store_true",
        help="a talker that never chooses EOS: every generation runs to max_new_tokens (for benchmarks)",
    )
    args = parser.parse_args(argv)

    started = time.perf_counter()
    path = build_tiny_model(args.output, seed=args.seed, never_eos=args.never_eos)
    built = time.perf_counter() - started
    print(f"built {path} in {built:.1f} s: {directory_size(path) / 1e6:.2f} MB")

    started = time.perf_counter()
    Qwen3TTSModel.from_pretrained(str(path), device_map="cpu", dtype=torch.float32)
    print(f"loaded with Qwen3TTSModel.from_pretrained in {time.perf_counter() - started:.2f} s")


if __name__ == "__main__":
    main()
