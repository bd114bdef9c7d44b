"""The tiny random-weight Qwen3-TTS model: built offline, loaded by qwen_tts, cloning a voice deterministically.

Everything runs on the CPU in a few seconds: the model is 2.7 MB, and the reference clip is at 24 kHz, so qwen_tts
never resamples it with librosa (whose first resample compiles numba code for seconds, see
docs/tts-dependencies.md).
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from qwen_tts import Qwen3TTSModel, VoiceClonePromptItem
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from tools.tiny_model import (
    CODEBOOK_SIZE,
    CODEC_EOS_ID,
    NUM_CODE_GROUPS,
    SAMPLE_RATE,
    SAMPLES_PER_FRAME,
    TALKER_HIDDEN,
    build_tiny_model,
)

pytestmark = pytest.mark.slow

REF_TEXT = "Hello, this is a tiny voice model speaking."
TEXT = "Good morning! How are you today?"
# At most 23 frames, under 2 s of audio: the last token sampled never gets its residual codes.
MAX_NEW_TOKENS = 24
SEED = 1234
# The never-EOS model: 60 frames (the package's max_new_tokens=N gives N - 1), longer than the plain model's
# random EOS usually allows.
STEADY_MAX_NEW_TOKENS = 61


def _no_network(*_args: object, **_kwargs: object) -> None:
    raise OSError("network access is disabled in this test: the model must load from local files")


@pytest.fixture(scope="module")
def offline() -> Iterator[None]:
    """No socket may connect (and the Hugging Face hub client is told it is offline) while the model loads."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setattr(socket.socket, "connect", _no_network)
        patch.setattr(socket.socket, "connect_ex", _no_network)
        yield


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory, offline: None) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-qwen3-tts"), seed=0)


@pytest.fixture(scope="module")
def tts(model_dir: Path, offline: None) -> Qwen3TTSModel:
    return Qwen3TTSModel.from_pretrained(str(model_dir), device_map="cpu", dtype=torch.float32)


@pytest.fixture(scope="module")
def steady_dir(tmp_path_factory: pytest.TempPathFactory, offline: None) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-qwen3-tts-steady"), seed=0, never_eos=True)


def reference_clip(seconds: float = 3.0) -> np.ndarray:
    """A voiced-sounding clip: a 140 Hz harmonic tone with a slow vibrato, shaped into four syllables a second."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    phase = 2 * np.pi * 140 * t + 3 * np.sin(2 * np.pi * 5 * t)
    tone = sum(np.sin(k * phase) / k for k in range(1, 9))
    syllables = np.clip(np.sin(2 * np.pi * 2 * t), 0, None) ** 0.5
    return (0.25 * tone * syllables).astype(np.float32)


@pytest.fixture(scope="module")
def prompt(tts: Qwen3TTSModel) -> VoiceClonePromptItem:
    items = tts.create_voice_clone_prompt(ref_audio=(reference_clip(), SAMPLE_RATE), ref_text=REF_TEXT)
    assert len(items) == 1
    return items[0]


def clone(
    tts: Qwen3TTSModel, prompt: VoiceClonePromptItem, seed: int = SEED, language: str = "English"
) -> np.ndarray:
    """One voice-clone generation with torch's global generator seeded (qwen_tts samples with it)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        wavs, sample_rate = tts.generate_voice_clone(
            TEXT, language=language, voice_clone_prompt=[prompt], max_new_tokens=MAX_NEW_TOKENS
        )
    assert sample_rate == SAMPLE_RATE
    assert len(wavs) == 1
    return wavs[0]


def check_audio(wav: np.ndarray) -> None:
    assert isinstance(wav, np.ndarray)
    assert wav.dtype == np.float32
    assert wav.ndim == 1
    # One codec frame decodes to exactly 1920 samples. In ICL mode qwen_tts decodes the reference's frames too
    # and cuts them off at int(ref_frames / all_frames * samples), where float rounding can cut one sample early.
    assert wav.size >= SAMPLES_PER_FRAME
    assert wav.size % SAMPLES_PER_FRAME <= 1
    assert wav.size <= (MAX_NEW_TOKENS - 1) * SAMPLES_PER_FRAME + 1
    assert np.isfinite(wav).all()
    assert np.abs(wav).max() <= 1.0
    assert float(np.sqrt(np.mean(np.square(wav)))) > 1e-3  # not silence


def prompt_to_bytes(item: VoiceClonePromptItem) -> bytes:
    tensors = {"ref_spk_embedding": item.ref_spk_embedding.detach().cpu().contiguous()}
    if item.ref_code is not None:
        tensors["ref_code"] = item.ref_code.detach().cpu().contiguous()
    metadata = {
        "x_vector_only_mode": str(int(item.x_vector_only_mode)),
        "icl_mode": str(int(item.icl_mode)),
    }
    if item.ref_text is not None:
        metadata["ref_text"] = item.ref_text
    return save_tensors(tensors, metadata=metadata)


def prompt_from_bytes(data: bytes) -> VoiceClonePromptItem:
    tensors = load_tensors(data)
    # safetensors.torch.load has no metadata argument: the header is an 8-byte length and a JSON document.
    metadata = _safetensors_metadata(data)
    return VoiceClonePromptItem(
        ref_code=tensors.get("ref_code"),
        ref_spk_embedding=tensors["ref_spk_embedding"],
        x_vector_only_mode=metadata["x_vector_only_mode"] == "1",
        icl_mode=metadata["icl_mode"] == "1",
        ref_text=metadata.get("ref_text"),
    )


def _safetensors_metadata(data: bytes) -> dict[str, str]:
    header_length = int.from_bytes(data[:8], "little")
    header: dict[str, Any] = json.loads(data[8 : 8 + header_length])
    return dict(header.get("__metadata__", {}))


def test_build_is_deterministic_for_a_seed(model_dir: Path, tmp_path: Path) -> None:
    again = build_tiny_model(tmp_path / "again", seed=0)
    other = build_tiny_model(tmp_path / "other", seed=1)
    files = sorted(path.relative_to(model_dir) for path in model_dir.rglob("*") if path.is_file())
    assert Path("model.safetensors") in files
    assert Path("speech_tokenizer/model.safetensors") in files
    assert Path("speech_tokenizer/preprocessor_config.json") in files
    assert Path("generation_config.json") in files
    for name in files:
        assert (again / name).read_bytes() == (model_dir / name).read_bytes(), name
    assert (other / "model.safetensors").read_bytes() != (model_dir / "model.safetensors").read_bytes()
    assert sum(path.stat().st_size for path in model_dir.rglob("*") if path.is_file()) < 5_000_000


def test_loads_as_a_12hz_base_model(tts: Qwen3TTSModel) -> None:
    assert tts.model.tts_model_type == "base"
    assert tts.model.tokenizer_type == "qwen3_tts_tokenizer_12hz"
    assert tts.model.speech_tokenizer.get_model_type() == "qwen3_tts_tokenizer_12hz"
    assert tts.model.speech_tokenizer.get_output_sample_rate() == SAMPLE_RATE
    assert tts.model.speech_tokenizer.get_decode_upsample_rate() == SAMPLES_PER_FRAME
    assert tts.device == torch.device("cpu")
    languages = tts.get_supported_languages()
    assert languages is not None
    assert {"auto", "english", "chinese"} <= set(languages)


def test_voice_clone_prompt_holds_codes_and_speaker_embedding(prompt: VoiceClonePromptItem) -> None:
    assert prompt.icl_mode
    assert not prompt.x_vector_only_mode
    assert prompt.ref_text == REF_TEXT
    assert prompt.ref_code is not None
    frames = -(-len(reference_clip()) // SAMPLES_PER_FRAME)  # 3 s at 12.5 Hz, rounded up
    assert tuple(prompt.ref_code.shape) == (frames, NUM_CODE_GROUPS)
    assert prompt.ref_code.dtype == torch.long
    assert int(prompt.ref_code.min()) >= 0
    assert int(prompt.ref_code.max()) < CODEBOOK_SIZE
    assert len(torch.unique(prompt.ref_code[:, 0])) > 1  # the random codebooks tell frames apart
    assert tuple(prompt.ref_spk_embedding.shape) == (TALKER_HIDDEN,)
    assert prompt.ref_spk_embedding.dtype == torch.float32
    assert torch.isfinite(prompt.ref_spk_embedding).all()


def test_clone_is_24khz_float32_mono_and_repeatable_for_a_seed(
    tts: Qwen3TTSModel, prompt: VoiceClonePromptItem
) -> None:
    first = clone(tts, prompt)
    check_audio(first)
    np.testing.assert_array_equal(clone(tts, prompt), first)
    other = clone(tts, prompt, seed=SEED + 1)
    check_audio(other)
    assert other.shape != first.shape or not np.array_equal(other, first)


def test_prompt_survives_a_safetensors_round_trip(tts: Qwen3TTSModel, prompt: VoiceClonePromptItem) -> None:
    data = prompt_to_bytes(prompt)
    assert len(data) < 10_000
    restored = prompt_from_bytes(data)
    assert restored.ref_code is not None and prompt.ref_code is not None
    assert torch.equal(restored.ref_code, prompt.ref_code)
    assert torch.equal(restored.ref_spk_embedding, prompt.ref_spk_embedding)
    assert (restored.ref_text, restored.icl_mode, restored.x_vector_only_mode) == (REF_TEXT, True, False)
    np.testing.assert_array_equal(clone(tts, restored), clone(tts, prompt))


def test_x_vector_only_prompt_needs_no_reference_text(tts: Qwen3TTSModel) -> None:
    (item,) = tts.create_voice_clone_prompt(
        ref_audio=(reference_clip(), SAMPLE_RATE), x_vector_only_mode=True
    )
    assert item.x_vector_only_mode
    assert not item.icl_mode
    assert item.ref_code is None
    assert tuple(item.ref_spk_embedding.shape) == (TALKER_HIDDEN,)
    wav = clone(tts, item)
    check_audio(wav)
    np.testing.assert_array_equal(clone(tts, prompt_from_bytes(prompt_to_bytes(item))), wav)


def test_icl_prompt_requires_reference_text(tts: Qwen3TTSModel) -> None:
    with pytest.raises(ValueError, match="ref_text is required"):
        tts.create_voice_clone_prompt(ref_audio=(reference_clip(), SAMPLE_RATE))


def test_unknown_language_is_refused(tts: Qwen3TTSModel, prompt: VoiceClonePromptItem) -> None:
    with pytest.raises(ValueError, match="Unsupported languages"):
        clone(tts, prompt, language="klingon")


def test_never_eos_model_differs_only_in_the_talkers_codec_head(model_dir: Path, steady_dir: Path) -> None:
    files = sorted(path.relative_to(model_dir) for path in model_dir.rglob("*") if path.is_file())
    assert files == sorted(path.relative_to(steady_dir) for path in steady_dir.rglob("*") if path.is_file())
    for name in files:
        if name != Path("model.safetensors"):
            assert (steady_dir / name).read_bytes() == (model_dir / name).read_bytes(), name
    plain = load_tensors((model_dir / "model.safetensors").read_bytes())
    steady = load_tensors((steady_dir / "model.safetensors").read_bytes())
    assert plain.keys() == steady.keys()
    changed = [name for name in plain if not torch.equal(plain[name], steady[name])]
    assert changed == ["talker.codec_head.weight"]
    head = steady["talker.codec_head.weight"]
    assert not head[CODEC_EOS_ID].any()
    assert float(head[:CODEBOOK_SIZE].abs().mean()) > 50 * float(
        plain[changed[0]][:CODEBOOK_SIZE].abs().mean()
    )


def test_never_eos_model_runs_to_max_new_tokens(steady_dir: Path, offline: None) -> None:
    """Sampled with the model's default settings (temperature 0.9, top-k 50), no seed stops early."""
    steady = Qwen3TTSModel.from_pretrained(str(steady_dir), device_map="cpu", dtype=torch.float32)
    (item,) = steady.create_voice_clone_prompt(ref_audio=(reference_clip(), SAMPLE_RATE), ref_text=REF_TEXT)
    frames = STEADY_MAX_NEW_TOKENS - 1
    for seed in (0, 1, 2, SEED):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            wavs, _ = steady.generate_voice_clone(
                TEXT, language="English", voice_clone_prompt=[item], max_new_tokens=STEADY_MAX_NEW_TOKENS
            )
        # ICL decoding cuts the reference off by a float ratio, which may take one sample too many or too few.
        assert abs(wavs[0].size - frames * SAMPLES_PER_FRAME) <= 1, seed
        assert np.isfinite(wavs[0]).all()
