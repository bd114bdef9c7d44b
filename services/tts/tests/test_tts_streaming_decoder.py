"""The stateful streaming decoder against the speech tokenizer decoder's own forward on all codes at once.

Exactness is shown in float64, where rounding is ~1e-14 and any lost state shows as a difference of 1e-3 or more:
streamed must equal whole within 1e-9. In float32 the package's forward is not chunk-invariant itself on this
random decoder (its fan-in scaled weights amplify rounding: the package's own decode of a 100-frame prefix differs
from the first 100 frames of its whole decode by ~1.7e-5 at output RMS 0.1, measured), so float32 streaming is
held to that floor's order, 1e-4 (a single whole chunk too: bit-exact on an AVX2 EPYC, 7e-6 apart on an AVX-512
one).
"""

from __future__ import annotations

import copy
import itertools
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from qwen_tts.core.tokenizer_12hz.modeling_qwen3_tts_tokenizer_v2 import (
    Qwen3TTSTokenizerV2Decoder,
    Qwen3TTSTokenizerV2Model,
)

from tools.tiny_model import CODEBOOK_SIZE, NUM_CODE_GROUPS, SAMPLES_PER_FRAME
from voice_tts.streaming_decoder import DecoderState, StreamingDecoder

EXACT = 1e-9  # float64: rounding only
FLOAT32 = 1e-4  # float32: the package's own chunking floor is ~1.7e-5 on this decoder
MAX_FRAMES = 300
BIAS_SCALE = 0.05


@pytest.fixture(scope="module")
def decoder32(tiny_dir: Path) -> Qwen3TTSTokenizerV2Decoder:
    model = Qwen3TTSTokenizerV2Model.from_pretrained(str(tiny_dir / "speech_tokenizer"), dtype=torch.float32)
    decoder: Qwen3TTSTokenizerV2Decoder = model.decoder.eval()
    # The tiny model's biases are zero; the released ones are not, and a bias counted twice where transposed
    # convolutions overlap must show. Small random biases keep the output unclipped (RMS ~0.1).
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, parameter in decoder.named_parameters():
            if name.endswith("bias"):
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * BIAS_SCALE)
    return decoder


@pytest.fixture(scope="module")
def decoder64(decoder32: Qwen3TTSTokenizerV2Decoder) -> Qwen3TTSTokenizerV2Decoder:
    return copy.deepcopy(decoder32).double()


def _codes(frames: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, CODEBOOK_SIZE, (NUM_CODE_GROUPS, frames), generator=generator)


@torch.inference_mode()
def _whole(decoder: Qwen3TTSTokenizerV2Decoder, codes: torch.Tensor) -> torch.Tensor:
    wav: torch.Tensor = decoder(codes.unsqueeze(0))[0, 0]
    return wav


def _streamed(streaming: StreamingDecoder, codes: torch.Tensor, chunks: list[int]) -> torch.Tensor:
    state = streaming.new_state()
    pieces, start = [], 0
    for size in chunks:
        pieces.append(streaming.decode(state, codes[:, start : start + size]))
        start += size
    assert start == codes.shape[1]
    return torch.cat(pieces)


def _split(frames: int, cuts: list[int]) -> list[int]:
    points = sorted({cut % frames for cut in cuts if cut % frames} | {0, frames})
    return [end - start for start, end in itertools.pairwise(points)]


def _max_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape
    return float((a - b).abs().max())


@pytest.mark.usefixtures("one_thread")
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    frames=st.integers(1, MAX_FRAMES),
    cuts=st.lists(st.integers(1, MAX_FRAMES), max_size=12),
    seed=st.integers(0, 2**16),
)
def test_any_chunking_equals_the_whole_decode_in_float64(
    decoder64: Qwen3TTSTokenizerV2Decoder, frames: int, cuts: list[int], seed: int
) -> None:
    codes = _codes(frames, seed)
    chunks = _split(frames, cuts)
    streamed = _streamed(StreamingDecoder(decoder64), codes, chunks)
    assert streamed.shape == (frames * SAMPLES_PER_FRAME,)
    assert _max_difference(streamed, _whole(decoder64, codes)) < EXACT


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("chunks", [[1] * 80, [1, 4, 12, 12, 51], [37, 1, 1, 200, 61], [MAX_FRAMES]])
def test_float32_streaming_is_within_the_packages_own_rounding(
    decoder32: Qwen3TTSTokenizerV2Decoder, chunks: list[int]
) -> None:
    codes = _codes(sum(chunks), seed=len(chunks))
    streamed = _streamed(StreamingDecoder(decoder32), codes, chunks)
    whole = _whole(decoder32, codes)
    # Even one chunk is not bit for bit the package's pass: its attention runs over the state's key slots and its
    # convolutions over explicit history, shapes for which the CPU kernels may sum in another order (bit-exact on
    # an AVX2 EPYC, 7e-6 apart on an AVX-512 one).
    assert _max_difference(streamed, whole) < FLOAT32


@pytest.mark.usefixtures("one_thread")
def test_a_one_frame_first_chunk_is_the_first_frame_of_the_whole_decode(
    decoder64: Qwen3TTSTokenizerV2Decoder,
) -> None:
    codes = _codes(100, seed=7)
    streaming = StreamingDecoder(decoder64)
    state = streaming.new_state()
    first = streaming.decode(state, codes[:, :1])
    rest = streaming.decode(state, codes[:, 1:])
    whole = _whole(decoder64, codes)
    assert first.shape == (SAMPLES_PER_FRAME,)
    assert _max_difference(first, whole[:SAMPLES_PER_FRAME]) < EXACT
    assert _max_difference(rest, whole[SAMPLES_PER_FRAME:]) < EXACT
    assert state.frames == 100 and state.samples_emitted == 100 * SAMPLES_PER_FRAME


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize(("precision", "tolerance"), [("decoder64", EXACT), ("decoder32", FLOAT32)])
def test_requests_joining_and_leaving_a_batch_each_equal_their_own_whole_decode(
    request: pytest.FixtureRequest, precision: str, tolerance: float
) -> None:
    decoder: Qwen3TTSTokenizerV2Decoder = request.getfixturevalue(precision)
    streaming = StreamingDecoder(decoder)
    # Each request's chunk per step (0: not in this step); A runs throughout, B joins at step 1 and leaves after
    # step 3, C joins at step 2 and outlives both, with a one-frame first chunk. Long enough to fill the window.
    plans = {
        "a": [5, 1, 12, 40, 30, 0, 3],
        "b": [0, 1, 80, 7],
        "c": [0, 0, 1, 4, 12, 90, 1, 20],
    }
    codes = {name: _codes(sum(plan), seed=index) for index, (name, plan) in enumerate(plans.items())}
    states: dict[str, DecoderState] = {}
    positions = dict.fromkeys(plans, 0)
    pieces: dict[str, list[torch.Tensor]] = {name: [] for name in plans}
    for step in range(max(len(plan) for plan in plans.values())):
        rows = []
        for name, plan in plans.items():
            if step < len(plan) and (plan[step] or name in states):
                state = states.setdefault(name, streaming.new_state())
                rows.append((name, state, codes[name][:, positions[name] : positions[name] + plan[step]]))
                positions[name] += plan[step]
        audio = streaming.step([(state, chunk) for _name, state, chunk in rows])
        for (name, _state, chunk), piece in zip(rows, audio, strict=True):
            assert piece.shape == (chunk.shape[1] * SAMPLES_PER_FRAME,)
            pieces[name].append(piece)
    for name, plan in plans.items():
        assert positions[name] == sum(plan)
        streamed = torch.cat(pieces[name])
        assert _max_difference(streamed, _whole(decoder, codes[name])) < tolerance, name


@pytest.mark.usefixtures("one_thread")
def test_chunks_decoded_without_carried_state_differ_far_beyond_the_tolerance(
    decoder64: Qwen3TTSTokenizerV2Decoder,
) -> None:
    """The comparison can fail: chunks decoded each from a fresh state (the state thrown away) do not match."""
    codes = _codes(120, seed=3)
    streaming = StreamingDecoder(decoder64)
    forgetful = torch.cat(
        [streaming.decode(streaming.new_state(), codes[:, s : s + 12]) for s in range(0, 120, 12)]
    )
    assert _max_difference(forgetful, _whole(decoder64, codes)) > 1e-3
    # Keeping only the convolutions' state but not the attention window is wrong too.
    state = streaming.new_state()
    pieces = []
    for start in range(0, 120, 12):
        fresh = streaming.new_state()
        state.keys, state.values, state.key_positions = fresh.keys, fresh.values, fresh.key_positions
        state.frames = 0
        pieces.append(streaming.decode(state, codes[:, start : start + 12]))
    assert _max_difference(torch.cat(pieces), _whole(decoder64, codes)) > 1e-3


def test_rows_are_checked(decoder32: Qwen3TTSTokenizerV2Decoder) -> None:
    streaming = StreamingDecoder(decoder32)
    state = streaming.new_state()
    with pytest.raises(ValueError, match="twice"):
        streaming.step([(state, _codes(2, 0)), (state, _codes(3, 1))])
    with pytest.raises(ValueError, match="codes must be"):
        streaming.decode(state, _codes(2, 0)[:2])
    (empty,) = streaming.step([(state, _codes(0, 0))])
    assert empty.shape == (0,) and state.frames == 0


@pytest.mark.usefixtures("one_thread")
def test_a_stream_after_reference_codes_equals_decoding_them_together_and_the_state_is_kept_once(
    decoder64: Qwen3TTSTokenizerV2Decoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ICL mode: the generated frames are decoded after the reference codes. The state after a reference is kept
    per content, handed out as copies (one request's decoding never reaches another's), and bounded."""
    import voice_tts.streaming_decoder as module

    streaming = StreamingDecoder(decoder64)
    reference, generated = _codes(50, seed=11), _codes(90, seed=12)
    whole = _whole(decoder64, torch.cat([reference, generated], dim=1))[50 * SAMPLES_PER_FRAME :]
    decoded: list[int] = []
    real_decode = streaming.decode

    def counting_decode(state: DecoderState, codes: torch.Tensor) -> torch.Tensor:
        decoded.append(codes.shape[-1])
        return real_decode(state, codes)

    monkeypatch.setattr(streaming, "decode", counting_decode)

    first = streaming.state_after(reference)
    second = streaming.state_after(reference.clone())  # same content, another tensor: the kept state
    assert decoded == [50] and first.frames == second.frames == 50
    for state in (first, second):  # each continues on its own copy, and both equal the joint decode
        pieces = [streaming.decode(state, generated[:, :4]), streaming.decode(state, generated[:, 4:])]
        assert _max_difference(torch.cat(pieces), whole) < EXACT
    third = streaming.state_after(reference)  # the kept state is untouched by the copies' decoding
    assert third.frames == 50
    assert _max_difference(torch.cat([streaming.decode(third, generated)]), whole) < EXACT

    monkeypatch.setattr(module, "REFERENCE_STATES", 2)
    decoded.clear()
    for seed in (21, 22, 23):
        streaming.state_after(_codes(3, seed))
    streaming.state_after(reference)  # pushed out by the last two: decoded again
    assert decoded.count(50) == 1 and decoded.count(3) == 3
