"""Voice-clone prompts: combining a profile's clips, cache keys, prompt files and the memory/store cache.

The model tests use the tiny random-weight Qwen3-TTS (built in a temporary directory, a few seconds); references are
at 24 kHz, so qwen_tts never resamples them with librosa.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from prometheus_client import REGISTRY
from qwen_tts import Qwen3TTSModel, VoiceClonePromptItem
from safetensors.torch import save

from tools.tiny_model import build_tiny_model
from voice_common.object_store import (
    FilesystemObjectStore,
    ObjectStore,
    ObjectStoreError,
    S3ObjectStore,
    validate_key,
)
from voice_common.prompt_keys import PromptOwner
from voice_testing.faulty_store import FaultyObjectStore
from voice_testing.media_files import speechlike
from voice_testing.s3_server import MotoServer, unique_bucket_name
from voice_tts.prompts import (
    SAMPLE_RATE,
    ClipIdentity,
    PromptCache,
    PromptFormatError,
    ReferenceClip,
    combine_references,
    create_prompt,
    deserialize_prompt,
    model_hash,
    prompt_cache_key,
    serialize_prompt,
)

GAP = round(0.3 * SAMPLE_RATE)
TEXT = "Good morning! How are you today?"
MAX_NEW_TOKENS = 24
SEED = 1234
MODEL_ID = "tiny-qwen3-tts@test"
OWNER = PromptOwner("t-prompts", "4f6c2d1e-8a7b-4c3d-9e0f-1a2b3c4d5e6f")


def make_clip(seconds: float, transcript: str | None = "hello", seed: int = 0) -> ReferenceClip:
    audio = speechlike(seconds, SAMPLE_RATE, seed=seed)
    return ReferenceClip(
        audio=audio, transcript=transcript, sha256=hashlib.sha256(audio.tobytes()).hexdigest()
    )


def seconds(clip: ReferenceClip) -> float:
    return len(clip.audio) / SAMPLE_RATE


# -- combine_references --------------------------------------------------------------------------------------------


def test_single_clip_comes_back_unchanged() -> None:
    clip = make_clip(4.0, "Hello there.")
    assert combine_references([clip]) is clip


def test_clips_are_joined_longest_first_with_silent_gaps() -> None:
    short, long, middle = (
        make_clip(2.0, "short one.", 1),
        make_clip(5.0, "long one.", 2),
        make_clip(3.0, "mid.", 3),
    )
    combined = combine_references([short, long, middle])
    expected = np.concatenate(
        [long.audio, np.zeros(GAP, np.float32), middle.audio, np.zeros(GAP, np.float32), short.audio]
    )
    np.testing.assert_array_equal(combined.audio, expected)
    assert combined.audio.dtype == np.float32
    assert combined.transcript == "long one. mid. short one."
    assert len(combined.sha256) == 64 and combined.sha256 not in {short.sha256, long.sha256, middle.sha256}
    # Deterministic, and independent of the order the samples are listed in.
    for order in itertools.permutations([short, long, middle]):
        again = combine_references(order)
        np.testing.assert_array_equal(again.audio, combined.audio)
        assert (again.transcript, again.sha256) == (combined.transcript, combined.sha256)


def test_gap_length_is_configurable() -> None:
    first, second = make_clip(2.0, "a", 1), make_clip(1.0, "b", 2)
    combined = combine_references([first, second], gap_seconds=0.5)
    gap = round(0.5 * SAMPLE_RATE)
    assert len(combined.audio) == len(first.audio) + gap + len(second.audio)
    assert not combined.audio[len(first.audio) : len(first.audio) + gap].any()
    no_gap = combine_references([first, second], gap_seconds=0.0)
    np.testing.assert_array_equal(no_gap.audio, np.concatenate([first.audio, second.audio]))
    assert no_gap.sha256 != combined.sha256


def test_cap_skips_clips_that_do_not_fit_and_never_cuts_one() -> None:
    six, five, three = make_clip(6.0, "six", 1), make_clip(5.0, "five", 2), make_clip(3.0, "three", 3)
    combined = combine_references([three, five, six], max_seconds=10.0)
    # 6 + 0.3 + 5 > 10: five is skipped, three still fits (6 + 0.3 + 3 = 9.3 s).
    np.testing.assert_array_equal(
        combined.audio, np.concatenate([six.audio, np.zeros(GAP, np.float32), three.audio])
    )
    assert combined.transcript == "six three"
    assert seconds(combined) == pytest.approx(9.3)
    # Exactly at the cap fits.
    assert seconds(combine_references([six, three], max_seconds=9.3)) == pytest.approx(9.3)
    assert combine_references([six, three], max_seconds=9.29).transcript == "six"


def test_transcripts_are_whitespace_normalised() -> None:
    clip = make_clip(2.0, "  Hello,\n  world.  ")
    assert combine_references([clip]).transcript == "Hello, world."
    other = make_clip(1.0, "\tAgain ", 2)
    assert combine_references([clip, other]).transcript == "Hello, world. Again"


def test_untranscribed_clip_leaves_out_of_icl_when_enough_transcribed_audio_remains() -> None:
    untranscribed, transcribed = make_clip(5.0, None, 1), make_clip(4.0, "known words", 2)
    blank = make_clip(6.0, "   ", 3)  # blank counts as missing
    assert combine_references([untranscribed, transcribed, blank]) is transcribed
    second = make_clip(2.0, "more words", 4)
    combined = combine_references([untranscribed, transcribed, second])
    assert combined.transcript == "known words more words"
    np.testing.assert_array_equal(
        combined.audio, np.concatenate([transcribed.audio, np.zeros(GAP, np.float32), second.audio])
    )


def test_falls_back_to_x_vector_only_when_too_little_is_transcribed() -> None:
    untranscribed, transcribed = make_clip(5.0, None, 1), make_clip(2.0, "few words", 2)
    combined = combine_references([transcribed, untranscribed])
    assert combined.transcript is None
    # The x-vector reference keeps all the chosen audio (longest first).
    np.testing.assert_array_equal(
        combined.audio, np.concatenate([untranscribed.audio, np.zeros(GAP, np.float32), transcribed.audio])
    )
    assert combine_references([transcribed, untranscribed], min_transcribed_seconds=2.0) is transcribed
    lone = make_clip(3.0, None)
    assert combine_references([lone]) is lone


def test_clips_all_longer_than_the_cap_give_a_cut_x_vector_reference() -> None:
    long, longer = make_clip(8.0, "long", 1), make_clip(9.0, "longer", 2)
    combined = combine_references([longer, long], max_seconds=5.0)
    assert combined.transcript is None
    np.testing.assert_array_equal(combined.audio, long.audio[: 5 * SAMPLE_RATE])


def test_invalid_inputs_are_refused() -> None:
    with pytest.raises(ValueError):
        combine_references([])
    with pytest.raises(ValueError):
        combine_references([ReferenceClip(np.zeros(0, np.float32), "x", "0" * 64)])
    with pytest.raises(ValueError):
        combine_references([make_clip(1.0)], max_seconds=0)


# -- prompt_cache_key ----------------------------------------------------------------------------------------------


def test_cache_key_changes_exactly_when_the_prompt_would() -> None:
    a, b = make_clip(2.0, "first", 1), make_clip(3.0, "second", 2)
    key = prompt_cache_key(MODEL_ID, [a, b])
    assert len(key) == 64 and validate_key(f"{OWNER.prefix}{key}.safetensors")
    # Not otherwise: same inputs, other order, other objects, whitespace-only transcript edits.
    assert prompt_cache_key(MODEL_ID, [b, a]) == key
    a_copy = ReferenceClip(a.audio.copy(), " first ", a.sha256)
    assert prompt_cache_key(MODEL_ID, [a_copy, b]) == key
    changed = [
        prompt_cache_key("other-model", [a, b]),
        prompt_cache_key(MODEL_ID, [ReferenceClip(a.audio, a.transcript, "f" * 64), b]),  # re-recorded
        prompt_cache_key(MODEL_ID, [ReferenceClip(a.audio, "first!", a.sha256), b]),  # re-transcribed
        prompt_cache_key(MODEL_ID, [ReferenceClip(a.audio, None, a.sha256), b]),  # transcript removed
        prompt_cache_key(MODEL_ID, [a]),  # sample removed
        prompt_cache_key(MODEL_ID, [a, b, make_clip(1.0, "third", 3)]),  # sample added
        prompt_cache_key(MODEL_ID, [a, b], max_seconds=10.0),
        prompt_cache_key(MODEL_ID, [a, b], gap_seconds=0.5),
        prompt_cache_key(MODEL_ID, [a, b], min_transcribed_seconds=1.0),
    ]
    assert len({key, *changed}) == len(changed) + 1
    # The metadata alone (hash + transcript, as the service has it before downloading audio) gives the same key.
    assert (
        prompt_cache_key(MODEL_ID, [ClipIdentity(b.sha256, b.transcript), ClipIdentity(a.sha256, "first")])
        == key
    )


# -- the tiny model ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Qwen3TTSModel]:
    # One intra-op thread: the tiny model gains nothing from more, and on a busy 2-core machine torch's spinning
    # worker threads made these tests ~20x slower (10 s instead of 0.5 s for one generation).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("HF_HUB_OFFLINE", "1")
            model_dir = build_tiny_model(tmp_path_factory.mktemp("tiny-qwen3-tts"), seed=0)
            yield Qwen3TTSModel.from_pretrained(str(model_dir), device_map="cpu", dtype=torch.float32)
    finally:
        torch.set_num_threads(threads)


def reference() -> ReferenceClip:
    return combine_references(
        [
            make_clip(3.0, "Hello, this is a tiny voice model speaking.", 1),
            make_clip(2.0, "The quick brown fox jumps over the lazy dog.", 2),
        ]
    )


def clone(tts: Qwen3TTSModel, prompt: VoiceClonePromptItem) -> np.ndarray:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        wavs, rate = tts.generate_voice_clone(
            TEXT, language="English", voice_clone_prompt=[prompt], max_new_tokens=MAX_NEW_TOKENS
        )
    assert rate == SAMPLE_RATE
    return wavs[0]


@pytest.fixture(scope="module")
def model_prompt(tts: Qwen3TTSModel) -> VoiceClonePromptItem:
    return create_prompt(tts, reference())


@pytest.fixture
def icl_prompt() -> VoiceClonePromptItem:
    """A synthetic ICL prompt shaped like the tiny model's (no model needed); ref_code is a non-contiguous view."""
    generator = torch.Generator().manual_seed(7)
    codes = torch.randint(0, 64, (4, 30), generator=generator)
    return VoiceClonePromptItem(
        ref_code=codes.T,
        ref_spk_embedding=torch.randn(64, generator=generator),
        x_vector_only_mode=False,
        icl_mode=True,
        ref_text="Hello there.",
    )


@pytest.mark.slow
def test_prompt_round_trip_gives_identical_generation(
    tts: Qwen3TTSModel, model_prompt: VoiceClonePromptItem
) -> None:
    icl_prompt = model_prompt
    assert icl_prompt.icl_mode and icl_prompt.ref_code is not None
    data = serialize_prompt(icl_prompt)  # ref_code is a non-contiguous view into the batch's codes
    assert len(data) < 10_000
    restored = deserialize_prompt(data)
    assert restored.ref_code is not None
    assert torch.equal(restored.ref_code, icl_prompt.ref_code)
    assert torch.equal(restored.ref_spk_embedding, icl_prompt.ref_spk_embedding)
    assert restored.ref_text == reference().transcript
    assert (restored.icl_mode, restored.x_vector_only_mode) == (True, False)
    np.testing.assert_array_equal(clone(tts, restored), clone(tts, icl_prompt))
    assert serialize_prompt(restored) == data


@pytest.mark.slow
def test_x_vector_prompt_round_trip(tts: Qwen3TTSModel) -> None:
    item = create_prompt(tts, ReferenceClip(speechlike(2.0, SAMPLE_RATE, seed=5), None, "0" * 64))
    assert item.x_vector_only_mode and item.ref_code is None
    restored = deserialize_prompt(serialize_prompt(item))
    assert restored.ref_code is None and restored.ref_text is None and restored.x_vector_only_mode
    np.testing.assert_array_equal(clone(tts, restored), clone(tts, item))


def test_damaged_prompt_files_are_refused(icl_prompt: VoiceClonePromptItem) -> None:
    assert icl_prompt.ref_code is not None and not icl_prompt.ref_code.is_contiguous()
    data = serialize_prompt(icl_prompt)
    assert deserialize_prompt(data).ref_text == "Hello there."
    flipped = bytearray(data)
    flipped[-3] ^= 0x40  # inside the tensor payload: safetensors alone would not notice
    damaged = [b"", b"garbage", data[:-10], data[:20], bytes(flipped), b"\xff" * 8 + data[8:]]
    for bad in damaged:
        with pytest.raises(PromptFormatError):
            deserialize_prompt(bad)
    with pytest.raises(PromptFormatError, match="no prompt metadata"):
        deserialize_prompt(save({"ref_spk_embedding": torch.zeros(4)}))


# -- PromptCache ---------------------------------------------------------------------------------------------------


class CountingBuild:
    """A build function that counts its calls (thread-safe) and may be slowed down or made to fail."""

    def __init__(self, make: Callable[[], VoiceClonePromptItem], delay: float = 0.0) -> None:
        self.make, self.delay, self.calls, self.fail = make, delay, 0, False
        self._lock = threading.Lock()

    def __call__(self) -> VoiceClonePromptItem:
        with self._lock:
            self.calls += 1
        time.sleep(self.delay)
        if self.fail:
            raise RuntimeError("build failed")
        return self.make()


async def check_cache_levels(store: ObjectStore, tts: Qwen3TTSModel) -> None:
    ref = reference()
    key = prompt_cache_key(MODEL_ID, [ref])
    build = CountingBuild(lambda: create_prompt(tts, ref))
    cache = PromptCache(store, MODEL_ID, max_entries=4)

    started = time.perf_counter()
    built, source = await cache.get_or_create(OWNER, key, build)
    cold = time.perf_counter() - started
    assert source == "built" and build.calls == 1

    started = time.perf_counter()
    warm_item, source = await cache.get_or_create(OWNER, key, build)
    warm = time.perf_counter() - started
    assert source == "memory" and warm_item is built

    fresh = PromptCache(store, MODEL_ID)
    started = time.perf_counter()
    stored, source = await fresh.get_or_create(OWNER, key, build)
    from_store = time.perf_counter() - started
    assert source == "store" and build.calls == 1
    assert stored.ref_code is not None and built.ref_code is not None
    assert torch.equal(stored.ref_code, built.ref_code) and stored.ref_text == built.ref_text
    assert (await fresh.get_or_create(OWNER, key, build))[1] == "memory"

    stats = cache.stats
    assert (stats.memory_hits, stats.store_hits, stats.misses, stats.hits) == (1, 0, 1, 1)
    assert (fresh.stats.memory_hits, fresh.stats.store_hits, fresh.stats.misses) == (1, 1, 0)
    assert (await store.stat(f"{OWNER.prefix}{model_hash(MODEL_ID)}/{key}.safetensors")).size > 0
    print(
        f"\nprompt step on the tiny model ({type(store).__name__}, {seconds(ref):.1f} s reference): "
        f"cold build {cold * 1e3:.1f} ms, store hit {from_store * 1e3:.2f} ms, memory hit {warm * 1e6:.1f} us "
        f"(warm {cold / warm:.0f}x faster)"
    )
    assert warm * 20 < cold


@pytest.mark.slow
async def test_cache_builds_then_serves_from_memory_then_from_the_store(
    tmp_path: Path, tts: Qwen3TTSModel
) -> None:
    await check_cache_levels(FilesystemObjectStore(tmp_path), tts)


@pytest.mark.slow
async def test_cache_over_s3(moto_server: MotoServer, tts: Qwen3TTSModel) -> None:
    store = S3ObjectStore(
        moto_server.endpoint, moto_server.access_key, moto_server.secret_key, unique_bucket_name()
    )
    try:
        await store.ensure_bucket()
        await check_cache_levels(store, tts)
    finally:
        await store.close()


async def test_corrupt_stored_entry_is_rebuilt_and_overwritten(
    tmp_path: Path, icl_prompt: VoiceClonePromptItem
) -> None:
    store = FilesystemObjectStore(tmp_path)
    cache = PromptCache(store, MODEL_ID)
    key = "a" * 64
    await store.put(cache.object_key(OWNER, key), b"not a prompt at all")
    build = CountingBuild(lambda: icl_prompt)
    item, source = await cache.get_or_create(OWNER, key, build)
    assert (item, source, build.calls) == (icl_prompt, "built", 1)
    assert cache.stats.corrupt_entries == 1
    restored = deserialize_prompt(await store.get(cache.object_key(OWNER, key)))
    assert restored.ref_code is not None and icl_prompt.ref_code is not None
    assert torch.equal(restored.ref_code, icl_prompt.ref_code)
    assert (await PromptCache(store, MODEL_ID).get_or_create(OWNER, key, build))[1] == "store"


async def test_concurrent_requests_build_once(tmp_path: Path, icl_prompt: VoiceClonePromptItem) -> None:
    cache = PromptCache(FilesystemObjectStore(tmp_path), MODEL_ID)
    build = CountingBuild(lambda: icl_prompt, delay=0.2)
    results = await asyncio.gather(*(cache.get_or_create(OWNER, "k1", build) for _ in range(5)))
    assert build.calls == 1
    assert all(item is icl_prompt and source == "built" for item, source in results)
    assert (cache.stats.misses, cache.stats.coalesced) == (1, 4)
    # A cancelled request does not cancel the build the others wait on.
    other = CountingBuild(lambda: icl_prompt, delay=0.2)
    first = asyncio.create_task(cache.get_or_create(OWNER, "k2", other))
    second = asyncio.create_task(cache.get_or_create(OWNER, "k2", other))
    await asyncio.sleep(0.05)
    first.cancel()
    assert (await second)[1] == "built" and other.calls == 1


async def test_failed_build_reaches_every_waiter_and_is_not_cached(
    tmp_path: Path, icl_prompt: VoiceClonePromptItem
) -> None:
    cache = PromptCache(FilesystemObjectStore(tmp_path), MODEL_ID)
    build = CountingBuild(lambda: icl_prompt, delay=0.1)
    build.fail = True
    results = await asyncio.gather(
        *(cache.get_or_create(OWNER, "k", build) for _ in range(3)), return_exceptions=True
    )
    assert all(isinstance(result, RuntimeError) for result in results) and build.calls == 1
    build.fail = False
    assert (await cache.get_or_create(OWNER, "k", build))[1] == "built" and build.calls == 2


async def test_memory_is_least_recently_used(tmp_path: Path, icl_prompt: VoiceClonePromptItem) -> None:
    cache = PromptCache(FilesystemObjectStore(tmp_path), MODEL_ID, max_entries=2)
    build = CountingBuild(lambda: icl_prompt)
    for key in ("a", "b", "a", "c"):  # "b" is the least recently used when "c" arrives
        await cache.get_or_create(OWNER, key, build)
    assert len(cache) == 2
    assert (await cache.get_or_create(OWNER, "a", build))[1] == "memory"
    assert (await cache.get_or_create(OWNER, "b", build))[1] == "store"
    with pytest.raises(ValueError):
        await cache.get_or_create(OWNER, "../escape", build)


class UnreadableStore(FaultyObjectStore):
    async def get(self, key: str) -> bytes:
        raise ObjectStoreError("injected read failure")


async def test_unavailable_store_is_bypassed(tmp_path: Path, icl_prompt: VoiceClonePromptItem) -> None:
    store = UnreadableStore(FilesystemObjectStore(tmp_path), fail_put_key_contains="/prompts/")
    cache = PromptCache(store, MODEL_ID)
    build = CountingBuild(lambda: icl_prompt)
    assert (await cache.get_or_create(OWNER, "k", build))[1] == "built"
    assert (await cache.get_or_create(OWNER, "k", build))[1] == "memory"
    assert cache.stats.store_errors == 2 and build.calls == 1


def _lookups() -> dict[str, float]:
    return {
        result: REGISTRY.get_sample_value("voice_tts_prompt_cache_requests_total", {"result": result}) or 0.0
        for result in ("memory_hit", "store_hit", "miss")
    }


async def test_lookups_are_counted_in_the_metrics(tmp_path: Path, icl_prompt: VoiceClonePromptItem) -> None:
    store = FilesystemObjectStore(tmp_path)
    build = CountingBuild(lambda: icl_prompt)
    before = _lookups()
    cache = PromptCache(store, MODEL_ID)
    await cache.get_or_create(OWNER, "m1", build)  # built
    await cache.get_or_create(OWNER, "m1", build)  # memory
    await PromptCache(store, MODEL_ID).get_or_create(OWNER, "m1", build)  # the object store
    after = _lookups()
    assert {result: after[result] - before[result] for result in after} == {
        "memory_hit": 1,
        "store_hit": 1,
        "miss": 1,
    }


async def test_owners_never_share_a_prompt(tmp_path: Path, icl_prompt: VoiceClonePromptItem) -> None:
    """The same key (identical audio) for two tenants, or a tenant's profile and its inline references: each
    its own build and object, and memory never answers one with the other's."""
    store = FilesystemObjectStore(tmp_path)
    cache = PromptCache(store, MODEL_ID)
    build = CountingBuild(lambda: icl_prompt)
    owners = [PromptOwner("t-one"), PromptOwner("t-two"), PromptOwner("t-one", OWNER.profile_id)]
    for owner in owners:
        assert (await cache.get_or_create(owner, "same", build))[1] == "built"
        assert cache.peek(owner, "same") is not None
    assert build.calls == 3
    assert cache.peek(PromptOwner("t-three"), "same") is None
    assert await all_keys(store) == {
        f"tenants/t-one/prompts/inline/{model_hash(MODEL_ID)}/same.safetensors",
        f"tenants/t-two/prompts/inline/{model_hash(MODEL_ID)}/same.safetensors",
        f"tenants/t-one/prompts/profiles/{OWNER.profile_id}/{model_hash(MODEL_ID)}/same.safetensors",
    }


async def all_keys(store: ObjectStore) -> set[str]:
    return {key async for key in store.list_keys()}


async def test_a_prompt_in_use_is_touched_once_per_interval_and_written_again_once_swept(
    tmp_path: Path, icl_prompt: VoiceClonePromptItem
) -> None:
    store = FilesystemObjectStore(tmp_path)
    now = [1000.0]
    cache = PromptCache(store, MODEL_ID, refresh_seconds=10, clock=lambda: now[0])
    build = CountingBuild(lambda: icl_prompt)
    await cache.get_or_create(OWNER, "k", build)
    path = tmp_path / cache.object_key(OWNER, "k")
    long_ago = path.stat().st_mtime - 86400

    async def used_after(seconds: float) -> float:
        """The prompt's stored mtime after a memory hit ``seconds`` later (and its background touch)."""
        os.utime(path, (long_ago, long_ago))
        now[0] += seconds
        assert cache.peek(OWNER, "k") is not None
        await cache.close()
        return path.stat().st_mtime

    assert await used_after(5) == long_ago  # written 5 s ago: no touch yet
    assert await used_after(6) > long_ago  # 11 s after the write: touched
    assert await used_after(1) == long_ago  # touched 1 s ago
    assert cache.stats.touches == 1
    await store.delete(cache.object_key(OWNER, "k"))  # what the expiry sweep does to an old prompt
    now[0] += 10
    assert cache.peek(OWNER, "k") is not None
    await cache.close()
    assert deserialize_prompt(await store.get(cache.object_key(OWNER, "k"))).ref_text == icl_prompt.ref_text
    # Another process serving it from the store does not know its age: it touches at once.
    os.utime(path, (long_ago, long_ago))
    other = PromptCache(store, MODEL_ID, refresh_seconds=10)
    assert (await other.get_or_create(OWNER, "k", build))[1] == "store"
    assert other.stats.touches == 1 and path.stat().st_mtime > long_ago
    assert build.calls == 1
    # Without expiry nothing is touched.
    os.utime(path, (long_ago, long_ago))
    assert (await PromptCache(store, MODEL_ID).get_or_create(OWNER, "k", build))[1] == "store"
    assert path.stat().st_mtime == long_ago
