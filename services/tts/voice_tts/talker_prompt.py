"""The talker's prompt for one voice-clone request, adapted from qwen_tts 0.1.1.

:func:`build_prefill` builds the talker's input embeddings exactly as ``Qwen3TTSForConditionalGeneration.generate``
does before it calls ``talker.generate`` (batch of one, voice clone prompt, ``non_streaming_mode=False`` as the
wrapper's default; the code is copied from the package), so that the frames generated from it
(:mod:`voice_tts.frame_generation`) are the package's frames.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from voice_tts.qwen import Qwen3TTSModel, VoiceClonePromptItem


@dataclass
class Prefill:
    """What ``Qwen3TTSForConditionalGeneration.generate`` hands to ``talker.generate`` for one request."""

    inputs_embeds: torch.Tensor  # (1, T, H): the talker's prompt
    trailing_text_hidden: torch.Tensor  # (1, L, H): text embeddings added to the first L generated frames
    tts_pad_embed: torch.Tensor  # (1, 1, H): added to every later frame
    ref_code: torch.Tensor | None  # (T_ref, G) in ICL mode: decoder context for the first audio


def _tokenize(model: Qwen3TTSModel, text: str) -> torch.Tensor:
    ids: torch.Tensor = model.processor(text=text, return_tensors="pt", padding=True)["input_ids"]
    ids = ids.to(model.device)
    return ids.unsqueeze(0) if ids.dim() == 1 else ids


def check_language(model: Qwen3TTSModel, language: str) -> None:
    """Refuse (ValueError) a language the model does not list; a model that lists none takes any."""
    supported = model.get_supported_languages()
    if supported is not None and language.lower() not in {name.lower() for name in supported}:
        raise ValueError(f"Unsupported language {language!r}; supported: {sorted(supported)}")


@torch.inference_mode()
def build_prefill(model: Qwen3TTSModel, text: str, language: str, prompt: VoiceClonePromptItem) -> Prefill:
    """The talker prompt for one voice-clone request (qwen_tts 0.1.1 ``generate``, batch 1, streaming text)."""
    outer = model.model
    if outer.tts_model_type != "base":
        raise ValueError(f"voice cloning needs a Base model, not {outer.tts_model_type!r}")
    check_language(model, language)
    config = outer.config
    talker_config = config.talker_config
    talker = outer.talker
    device = talker.device

    def text_embed(ids: torch.Tensor) -> torch.Tensor:
        embedded: torch.Tensor = talker.text_projection(talker.get_text_embeddings()(ids))
        return embedded

    def codec_embed(ids: list[int]) -> torch.Tensor:
        embedded: torch.Tensor = talker.get_input_embeddings()(
            torch.tensor([ids], device=device, dtype=torch.long)
        )
        return embedded

    input_id = _tokenize(model, f"<|im_start|>assistant\n{text}<|im_end|>\n<|im_start|>assistant\n")

    speaker_embed: torch.Tensor | None = None
    if prompt.x_vector_only_mode or prompt.icl_mode:
        speaker_embed = prompt.ref_spk_embedding.to(device).to(talker.dtype)

    language_id = None if language.lower() == "auto" else talker_config.codec_language_id[language.lower()]

    tts_bos_embed, tts_eos_embed, tts_pad_embed = text_embed(
        torch.tensor(
            [[config.tts_bos_token_id, config.tts_eos_token_id, config.tts_pad_token_id]],
            device=device,
            dtype=input_id.dtype,
        )
    ).chunk(3, dim=1)

    if language_id is None:
        codec_prefill = [
            talker_config.codec_nothink_id,
            talker_config.codec_think_bos_id,
            talker_config.codec_think_eos_id,
        ]
    else:
        codec_prefill = [
            talker_config.codec_think_id,
            talker_config.codec_think_bos_id,
            language_id,
            talker_config.codec_think_eos_id,
        ]
    codec_0 = codec_embed(codec_prefill)
    codec_1 = codec_embed([talker_config.codec_pad_id, talker_config.codec_bos_id])
    if speaker_embed is None:
        codec_input = torch.cat([codec_0, codec_1], dim=1)
    else:
        codec_input = torch.cat([codec_0, speaker_embed.view(1, 1, -1), codec_1], dim=1)

    role = text_embed(input_id[:, :3])  # <|im_start|>assistant\n
    body = (
        torch.cat((tts_pad_embed.expand(-1, codec_input.shape[1] - 2, -1), tts_bos_embed), dim=1)
        + codec_input[:, :-1]
    )
    talker_input = torch.cat((role, body), dim=1)

    ref_code: torch.Tensor | None = None
    if prompt.icl_mode and prompt.ref_code is not None:
        if not prompt.ref_text:
            raise ValueError("an ICL voice clone prompt needs its ref_text")
        ref_id = _tokenize(model, f"<|im_start|>assistant\n{prompt.ref_text}<|im_end|>\n")
        ref_code = prompt.ref_code.to(device)
        icl_embed, trailing = outer.generate_icl_prompt(
            text_id=input_id[:, 3:-5],
            ref_id=ref_id[:, 3:-2],
            ref_code=ref_code,
            tts_pad_embed=tts_pad_embed,
            tts_eos_embed=tts_eos_embed,
            non_streaming_mode=False,
        )
        talker_input = torch.cat([talker_input, icl_embed], dim=1)
    else:
        talker_input = torch.cat([talker_input, text_embed(input_id[:, 3:4]) + codec_input[:, -1:]], dim=1)
        trailing = torch.cat((text_embed(input_id[:, 4:-5]), tts_eos_embed), dim=1)

    return Prefill(
        inputs_embeds=talker_input,
        trailing_text_hidden=trailing,
        tts_pad_embed=tts_pad_embed,
        ref_code=ref_code,
    )
