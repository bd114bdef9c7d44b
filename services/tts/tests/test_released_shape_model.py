"""The random-weight model at the released 0.6B shape (bench's time-to-first-audio figure): its configs build
qwen_tts's classes with the released widths, and its decoder has the released decoder's shape.

Built on the meta device: shapes only, no memory and no weights (the model itself is 3.4 GB)."""

from __future__ import annotations

import torch
from qwen_tts.core.models import Qwen3TTSConfig, Qwen3TTSForConditionalGeneration
from qwen_tts.core.tokenizer_12hz.modeling_qwen3_tts_tokenizer_v2 import Qwen3TTSTokenizerV2Model

from tools.released_shape_model import CODEBOOK_SIZE, NUM_CODE_GROUPS, RELEASED_0_6B_SHAPE
from tools.tiny_model import SAMPLES_PER_FRAME

TEXT_VOCAB = 512


def _parameters(module: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in module.parameters())


def test_the_talker_and_code_predictor_have_the_released_widths_and_depths() -> None:
    shape = RELEASED_0_6B_SHAPE
    config = Qwen3TTSConfig(
        talker_config=shape.talker_config(TEXT_VOCAB),
        speaker_encoder_config=dict(shape.speaker_encoder_config),
        tts_model_type="base",
    )
    with torch.device("meta"):
        model = Qwen3TTSForConditionalGeneration(config)
    talker = model.talker
    assert len(talker.model.layers) == 28
    assert len(talker.code_predictor.model.layers) == 5
    assert talker.codec_head.weight.shape == (CODEBOOK_SIZE + 1024, 1024)
    assert len(talker.code_predictor.lm_head) == NUM_CODE_GROUPS - 1
    # Multimodal RoPE: the three sections cover half of a 128-wide head.
    assert sum(config.talker_config.rope_scaling["mrope_section"]) == 128 // 2
    # The x-vector enters the talker as one input embedding, so it is the talker's width.
    assert config.speaker_encoder_config.enc_dim == config.talker_config.hidden_size == 1024
    # The layers without the text embedding table (which is the tiny tokenizer's here, not Qwen's 151,936 rows).
    text_table = talker.model.text_embedding.weight.numel()
    assert 0.58e9 < _parameters(model) - text_table < 0.62e9


def test_the_speech_tokenizer_has_16_groups_of_2048_codes_and_the_released_decoder() -> None:
    config = RELEASED_0_6B_SHAPE.speech_tokenizer_config()
    with torch.device("meta"):
        tokenizer = Qwen3TTSTokenizerV2Model(config)
    decoder = config.decoder_config
    assert (decoder.codebook_size, decoder.num_quantizers) == (CODEBOOK_SIZE, NUM_CODE_GROUPS)
    assert decoder.codebook_dim == 512  # the released config.json's (not a constructor default)
    assert config.encoder_valid_num_quantizers == NUM_CODE_GROUPS
    assert config.encoder_config.codebook_size == CODEBOOK_SIZE
    assert tokenizer.get_decode_upsample_rate() == SAMPLES_PER_FRAME
    assert len(tokenizer.decoder.pre_transformer.layers) == 8
