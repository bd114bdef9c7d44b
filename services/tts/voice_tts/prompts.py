"""Voice-clone prompts: one reference per voice profile, cache keys, safetensors files and a two-level cache.

A Qwen3-TTS voice-clone *prompt* (``qwen_tts.VoiceClonePromptItem``) is what ``create_voice_clone_prompt`` extracts
from a reference clip: the clip's speech codes (``ref_code``, frames x code groups; ICL mode only), the speaker's
x-vector (``ref_spk_embedding``) and the clip's transcript (``ref_text``). Building it runs the speech tokenizer's
encoder and the speaker encoder over the whole clip, so it is cached: in memory (LRU) in front of the object store.

Combining a profile's samples (:func:`combine_references`)
----------------------------------------------------------
A profile may hold several samples; the model takes one reference. As voicebox does, the samples are concatenated
with short silences between them (``gap_seconds``, 0.3 s) and their transcripts joined with single spaces. The
choices made here, all deterministic:

* **Longest first.** Clips are taken longest first (ties: by ``sha256``, then transcript), greedily: a clip that
  would take the total (clips and gaps) over ``max_seconds`` is skipped and shorter ones are still tried. The
  longest clips carry the most voice, and the result does not depend on the order the caller lists the samples
  in (database order is not stable), so :func:`prompt_cache_key` sorts the clips too.
* **Never cut a clip** that keeps its transcript: its transcript would no longer match its audio, and ICL would
  then teach the model wrong text-to-speech alignment. The one exception is a profile whose every clip is longer
  than ``max_seconds``: the shortest clip is cut to ``max_seconds`` and used *without* its transcript
  (x-vector only), which is better than refusing the profile.
* **Missing transcripts.** ICL (codes + text) needs a transcript for every clip in the reference. If a chosen clip
  has none (``None`` or blank), the reference is rebuilt from the transcribed clips alone (same greedy rule) when
  they add up to at least ``min_transcribed_seconds`` (3 s); otherwise the reference is the first choice's audio
  with ``transcript=None``, which callers must turn into an x-vector-only prompt.
* A single clip chosen as it is comes back unchanged (the same object); a combination gets a ``sha256`` derived
  from its parts (format version, the parts' hashes, the gap), not a hash of its samples.

Cache keys (:func:`prompt_cache_key`)
-------------------------------------
SHA-256 over the model id, every clip's ``sha256`` and (normalised) transcript, the combining parameters, the
mode (x-vector only or not) and :data:`PROMPT_FORMAT_VERSION`. Any change to a profile's samples (added, removed,
re-recorded, re-transcribed) gives a new key, so a stale prompt is never hit; stale entries are just never read
again, and the expiry sweep (:mod:`voice_tts.prompt_expiry`) deletes them once unused for ``TTS_PROMPT_TTL_SECONDS``.
Bump the version whenever the combining rules or the file format change.

Prompt files (:func:`serialize_prompt`, :func:`deserialize_prompt`)
------------------------------------------------------------------
A safetensors file with the tensors ``ref_spk_embedding`` and (ICL prompts) ``ref_code``, saved contiguous on the
CPU, and one header-metadata entry ``voice_tts.prompt`` holding JSON: format version, ``x_vector_only_mode``,
``icl_mode``, ``ref_text`` and a SHA-256 over the tensors' names, dtypes, shapes and bytes. safetensors itself has
no checksum, so the digest is what catches a damaged payload; every check failure raises
:class:`PromptFormatError`. Reloading gives tensors equal to the originals, hence identical generation output.

The cache (:class:`PromptCache`)
--------------------------------
Memory (LRU, ``max_entries``) -> object store -> ``build`` (blocking model work, run in a worker thread). Every
lookup names its owner (:class:`~voice_common.prompt_keys.PromptOwner`: the tenant and the profile, or the tenant's
inline references), and the owner's folder is part of the object key *and* of the memory key
(``tenants/<tenant>/prompts/profiles/<profile-id>/<model-hash>/<key>.safetensors``, see
:mod:`voice_common.prompt_keys`): a tenant never gets a prompt made from another tenant's audio, even for
identical audio, and a profile's prompts are deleted with the profile. Concurrent requests for a key share one
load/build (single flight). A corrupt stored entry is rebuilt and overwritten; an unreachable store is logged and
bypassed (the prompt is built and served, and kept in memory), since a prompt can always be rebuilt.

Use and expiry: with ``refresh_seconds`` > 0 the cache renews a stored prompt's last-modified time
(:meth:`ObjectStore.touch`) when it serves it, at most once per ``refresh_seconds`` per prompt and process (a
store hit touches at once, a memory hit in the background); the expiry sweep deletes prompts not modified for the
TTL. A touch that finds the object gone (swept while this process still held it) writes it again.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np
import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from voice_common.object_store import ObjectNotFound, ObjectStore, ObjectStoreError, validate_key
from voice_common.prompt_keys import PromptOwner
from voice_tts import metrics
from voice_tts.qwen import VoiceClonePromptItem

logger = logging.getLogger(__name__)

SAMPLE_RATE = 24_000
PROMPT_FORMAT_VERSION = 1
DEFAULT_MAX_SECONDS = 20.0
DEFAULT_GAP_SECONDS = 0.3
DEFAULT_MIN_TRANSCRIBED_SECONDS = 3.0
DEFAULT_MAX_ENTRIES = 64
CONTENT_TYPE = "application/vnd.voice-tts.prompt+safetensors"

_METADATA_KEY = "voice_tts.prompt"
_HEADER_LIMIT = 1 << 20  # a prompt's safetensors header is a few hundred bytes
_KEY_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
# Prompts whose last touch this process remembers (to touch each at most once per refresh interval): a bound,
# since with max_entries=0 every prompt served passes through here without staying in memory.
_TOUCH_RECORDS = 4096

PromptSource = Literal["memory", "store", "built"]


class PromptFormatError(ValueError):
    """The bytes are not a prompt file written by :func:`serialize_prompt` (or were damaged)."""


@dataclass(frozen=True)
class ClipIdentity:
    """What a clip contributes to a prompt cache key: the hash of its audio and its transcript."""

    sha256: str
    transcript: str | None


@dataclass(frozen=True, eq=False)
class ReferenceClip:
    """One reference: float32 mono samples at 24 kHz, its transcript (``None`` when unknown) and a content hash.

    ``sha256`` identifies the audio: for a profile sample, the profile service's ``audio_sha256`` (of its normalised
    24 kHz WAV); for a combination, see :func:`combine_references`. ``eq=False``: arrays do not compare as values.
    """

    audio: np.ndarray
    transcript: str | None
    sha256: str

    @property
    def duration_seconds(self) -> float:
        return len(self.audio) / SAMPLE_RATE

    @property
    def has_transcript(self) -> bool:
        return _clean_transcript(self.transcript) is not None


def _clean_transcript(text: str | None) -> str | None:
    if text is None:
        return None
    text = " ".join(text.split())
    return text or None


def _seconds_to_samples(seconds: float) -> int:
    return round(seconds * SAMPLE_RATE)


def _order(clips: Sequence[ReferenceClip]) -> list[ReferenceClip]:
    """Longest first; ties by hash, then transcript: independent of the caller's order."""
    return sorted(
        clips, key=lambda clip: (-len(clip.audio), clip.sha256, _clean_transcript(clip.transcript) or "")
    )


def _pick(clips: Sequence[ReferenceClip], cap: int, gap: int) -> list[ReferenceClip]:
    """Greedy longest-first selection whose total length (clips and the gaps between them) stays within cap."""
    chosen: list[ReferenceClip] = []
    total = 0
    for clip in _order(clips):
        needed = len(clip.audio) + (gap if chosen else 0)
        if len(clip.audio) > 0 and total + needed <= cap:
            chosen.append(clip)
            total += needed
    return chosen


def _join(chosen: Sequence[ReferenceClip], gap: int, *, with_transcript: bool, mode: str) -> ReferenceClip:
    if len(chosen) == 1:
        (clip,) = chosen
        transcript = _clean_transcript(clip.transcript) if with_transcript else None
        return clip if transcript == clip.transcript else replace(clip, transcript=transcript)
    silence = np.zeros(gap, dtype=np.float32)
    parts: list[np.ndarray] = []
    for index, clip in enumerate(chosen):
        if index:
            parts.append(silence)
        parts.append(np.asarray(clip.audio, dtype=np.float32).reshape(-1))
    transcript = None
    if with_transcript:
        transcript = " ".join(_clean_transcript(clip.transcript) or "" for clip in chosen)
    identity = json.dumps(
        {"v": PROMPT_FORMAT_VERSION, "mode": mode, "gap": gap, "parts": [clip.sha256 for clip in chosen]},
        sort_keys=True,
    )
    return ReferenceClip(
        audio=np.concatenate(parts),
        transcript=transcript,
        sha256=hashlib.sha256(identity.encode()).hexdigest(),
    )


def combine_references(
    clips: Sequence[ReferenceClip],
    *,
    max_seconds: float = DEFAULT_MAX_SECONDS,
    gap_seconds: float = DEFAULT_GAP_SECONDS,
    min_transcribed_seconds: float = DEFAULT_MIN_TRANSCRIBED_SECONDS,
) -> ReferenceClip:
    """One reference for a profile's clips (rules in the module docstring); ``transcript=None`` means x-vector only.

    Raises ValueError for no clips, only empty clips, or a non-positive ``max_seconds`` / negative ``gap_seconds``.
    """
    if max_seconds <= 0 or gap_seconds < 0:
        raise ValueError("max_seconds must be positive and gap_seconds not negative")
    usable = [clip for clip in clips if len(clip.audio) > 0]
    if not usable:
        raise ValueError("no reference audio: every clip is empty")
    cap, gap = _seconds_to_samples(max_seconds), _seconds_to_samples(gap_seconds)

    chosen = _pick(usable, cap, gap)
    if not chosen:
        # Every clip is longer than the cap: cut the shortest, and drop its transcript (it no longer matches).
        shortest = min(usable, key=lambda clip: (len(clip.audio), clip.sha256))
        identity = json.dumps(
            {"v": PROMPT_FORMAT_VERSION, "mode": "cut", "cap": cap, "part": shortest.sha256}
        )
        return ReferenceClip(
            audio=np.asarray(shortest.audio[:cap], dtype=np.float32),
            transcript=None,
            sha256=hashlib.sha256(identity.encode()).hexdigest(),
        )
    if all(clip.has_transcript for clip in chosen):
        return _join(chosen, gap, with_transcript=True, mode="icl")

    transcribed = _pick([clip for clip in usable if clip.has_transcript], cap, gap)
    if transcribed:
        length = sum(len(clip.audio) for clip in transcribed) + gap * (len(transcribed) - 1)
        if length >= _seconds_to_samples(min_transcribed_seconds):
            return _join(transcribed, gap, with_transcript=True, mode="icl")
    return _join(chosen, gap, with_transcript=False, mode="xvector")


def prompt_cache_key(
    model_id: str,
    clips: Sequence[ReferenceClip | ClipIdentity],
    *,
    max_seconds: float = DEFAULT_MAX_SECONDS,
    gap_seconds: float = DEFAULT_GAP_SECONDS,
    min_transcribed_seconds: float = DEFAULT_MIN_TRANSCRIBED_SECONDS,
) -> str:
    """A 64-hex-digit key for the prompt of ``clips`` (a profile's samples, before combining) under ``model_id``.

    Pass the same combining parameters as to :func:`combine_references`. The clips' order does not matter (the
    combination does not depend on it); transcripts count after whitespace normalisation, as in combining.

    The key needs only each clip's audio hash and transcript, not the audio: which clips are combined, and whether
    the result is x-vector only, follow from the clips' contents and the parameters. So a service can compute the
    key from sample metadata and download the audio only on a miss.
    """
    # Two clips may share their audio (one recording uploaded twice, with and without a text): None sorts first.
    described = sorted(
        ((clip.sha256, _clean_transcript(clip.transcript)) for clip in clips),
        key=lambda pair: (pair[0], pair[1] is not None, pair[1] or ""),
    )
    document = {
        "format": PROMPT_FORMAT_VERSION,
        "model": model_id,
        "clips": [{"sha256": sha, "transcript": text} for sha, text in described],
        "max_seconds": float(max_seconds),
        "gap_seconds": float(gap_seconds),
        "min_transcribed_seconds": float(min_transcribed_seconds),
    }
    encoded = json.dumps(document, sort_keys=True, ensure_ascii=True, separators=(",", ":"))
    return hashlib.sha256(encoded.encode("ascii")).hexdigest()


def create_prompt(
    model: Any, reference: ReferenceClip, *, x_vector_only: bool = False
) -> VoiceClonePromptItem:
    """Blocking: ``model.create_voice_clone_prompt`` (a ``qwen_tts.Qwen3TTSModel``) for one reference.

    A reference without a transcript (see :func:`combine_references`) always gives an x-vector-only prompt. Meant
    as the ``build`` of :meth:`PromptCache.get_or_create`, e.g. ``lambda: create_prompt(model, reference)``.
    """
    x_vector_only = x_vector_only or reference.transcript is None
    (item,) = model.create_voice_clone_prompt(
        ref_audio=(np.asarray(reference.audio, dtype=np.float32), SAMPLE_RATE),
        ref_text=None if x_vector_only else reference.transcript,
        x_vector_only_mode=x_vector_only,
    )
    if not isinstance(item, VoiceClonePromptItem):
        raise TypeError(f"create_voice_clone_prompt returned {type(item).__name__}")
    return item


# -- prompt files --------------------------------------------------------------------------------------------------


def _tensor_digest(tensors: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name]
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.contiguous().view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def serialize_prompt(item: VoiceClonePromptItem) -> bytes:
    """The prompt as a self-checking safetensors file (format in the module docstring)."""
    tensors = {"ref_spk_embedding": item.ref_spk_embedding.detach().to("cpu").contiguous()}
    if item.ref_code is not None:
        tensors["ref_code"] = item.ref_code.detach().to("cpu").contiguous()
    info = {
        "format": PROMPT_FORMAT_VERSION,
        "x_vector_only_mode": bool(item.x_vector_only_mode),
        "icl_mode": bool(item.icl_mode),
        "ref_text": item.ref_text,
        "sha256": _tensor_digest(tensors),
    }
    return bytes(save_tensors(tensors, metadata={_METADATA_KEY: json.dumps(info, sort_keys=True)}))


def _header_metadata(data: bytes) -> dict[str, Any]:
    # safetensors.torch.load has no metadata result: the header is an 8-byte little-endian length and JSON.
    if len(data) < 8:
        raise PromptFormatError("prompt file too short")
    length = int.from_bytes(data[:8], "little")
    if length > min(_HEADER_LIMIT, len(data) - 8):
        raise PromptFormatError("prompt file header length out of range")
    header = json.loads(data[8 : 8 + length])
    metadata = header.get("__metadata__") if isinstance(header, dict) else None
    if not isinstance(metadata, dict) or not isinstance(metadata.get(_METADATA_KEY), str):
        raise PromptFormatError("not a voice_tts prompt file (no prompt metadata)")
    info = json.loads(metadata[_METADATA_KEY])
    if not isinstance(info, dict):
        raise PromptFormatError("prompt metadata is not an object")
    return info


def deserialize_prompt(data: bytes) -> VoiceClonePromptItem:
    """Read a file written by :func:`serialize_prompt` (CPU tensors); raises PromptFormatError on anything amiss."""
    try:
        info = _header_metadata(data)
        tensors = load_tensors(data)
    except PromptFormatError:
        raise
    except Exception as exc:  # safetensors' SafetensorError, JSON and Unicode errors: all mean "damaged"
        raise PromptFormatError(f"unreadable prompt file: {exc}") from exc
    if info.get("format") != PROMPT_FORMAT_VERSION:
        raise PromptFormatError(f"prompt format {info.get('format')!r}, expected {PROMPT_FORMAT_VERSION}")
    if _tensor_digest(tensors) != info.get("sha256"):
        raise PromptFormatError("prompt tensors do not match their checksum")
    x_vector_only, icl, ref_text = info.get("x_vector_only_mode"), info.get("icl_mode"), info.get("ref_text")
    if not isinstance(x_vector_only, bool) or not isinstance(icl, bool) or x_vector_only == icl:
        raise PromptFormatError("prompt modes missing or inconsistent")
    if ref_text is not None and not isinstance(ref_text, str):
        raise PromptFormatError("prompt ref_text is not a string")
    embedding, code = tensors.get("ref_spk_embedding"), tensors.get("ref_code")
    if embedding is None or embedding.ndim != 1 or not embedding.is_floating_point():
        raise PromptFormatError("prompt has no usable ref_spk_embedding")
    if set(tensors) - {"ref_spk_embedding", "ref_code"}:
        raise PromptFormatError(f"unexpected tensors in prompt: {sorted(tensors)}")
    if icl and (code is None or code.is_floating_point() or (ref_text or "") == ""):
        raise PromptFormatError("ICL prompt needs integer ref_code and ref_text")
    return VoiceClonePromptItem(
        ref_code=code,
        ref_spk_embedding=embedding,
        x_vector_only_mode=x_vector_only,
        icl_mode=icl,
        ref_text=ref_text,
    )


# -- the cache -----------------------------------------------------------------------------------------------------


@dataclass
class PromptCacheStats:
    """Counters for metrics. ``hits`` = memory + store hits; ``misses`` = builds."""

    memory_hits: int = 0
    store_hits: int = 0
    misses: int = 0
    coalesced: int = 0  # requests that waited on another request's load/build of the same key
    corrupt_entries: int = 0  # stored entries that failed to load (then rebuilt and overwritten)
    store_errors: int = 0  # store reads/writes that failed (the store was bypassed)
    touches: int = 0  # last-modified renewals of stored prompts in use (see refresh_seconds)

    @property
    def hits(self) -> int:
        return self.memory_hits + self.store_hits


def model_hash(model_id: str) -> str:
    """The object-store folder for a model's prompts (model ids contain characters keys may not)."""
    return hashlib.sha256(model_id.encode()).hexdigest()[:32]


class PromptCache:
    """LRU memory cache over the object store; see the module docstring.

    One instance per loaded model. Items are shared between callers: treat them as read-only (qwen_tts only reads
    them). ``max_entries=0`` disables the memory level; ``refresh_seconds=0`` never touches stored prompts (no
    expiry is configured).
    """

    def __init__(
        self,
        store: ObjectStore,
        model_id: str,
        *,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        refresh_seconds: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_entries < 0:
            raise ValueError("max_entries must not be negative")
        if refresh_seconds < 0:
            raise ValueError("refresh_seconds must not be negative")
        self._store = store
        self._model_id = model_id
        self._model_folder = model_hash(model_id)
        self._max_entries = max_entries
        self._refresh_seconds = refresh_seconds
        self._clock = clock
        # Keyed by object key: the owner's folder is part of it (module docstring).
        self._memory: OrderedDict[str, VoiceClonePromptItem] = OrderedDict()
        self._inflight: dict[str, asyncio.Task[tuple[VoiceClonePromptItem, PromptSource]]] = {}
        # Object key -> clock() of its last write or touch here.
        self._touched: OrderedDict[str, float] = OrderedDict()
        self._background: set[asyncio.Task[None]] = set()
        self.stats = PromptCacheStats()

    @property
    def model_id(self) -> str:
        return self._model_id

    def __len__(self) -> int:
        return len(self._memory)

    def object_key(self, owner: PromptOwner, key: str) -> str:
        if not _KEY_SEGMENT.match(key):
            raise ValueError(f"invalid prompt cache key {key!r}")
        return validate_key(f"{owner.prefix}{self._model_folder}/{key}.safetensors")

    def peek(self, owner: PromptOwner, key: str, *, count: bool = True) -> VoiceClonePromptItem | None:
        """The prompt if it is in memory (counted as a memory hit); None otherwise, counting nothing (the caller
        then prepares the reference and calls :meth:`get_or_create`, which counts the store hit or the miss).
        ``count=False``: a look that counts nothing yet (a prompt used before its key is confirmed; the caller
        peeks again, counting, once it is)."""
        object_key = self.object_key(owner, key)
        item = self._memory.get(object_key)
        if item is not None and count:
            self._memory_hit(object_key, item)
        return item

    def forget(self, owner: PromptOwner, key: str) -> None:
        """Drop a key from memory (the stored entry stays)."""
        self._memory.pop(self.object_key(owner, key), None)

    async def get_or_create(
        self, owner: PromptOwner, key: str, build: Callable[[], VoiceClonePromptItem]
    ) -> tuple[VoiceClonePromptItem, PromptSource]:
        """The prompt of ``owner`` for ``key`` and where it came from; ``build`` runs (in a worker thread) only on
        a full miss.

        Exceptions from ``build`` reach every caller waiting on that build; nothing is cached then.
        """
        object_key = self.object_key(owner, key)
        item = self._memory.get(object_key)
        if item is not None:
            self._memory_hit(object_key, item)
            return item, "memory"
        task = self._inflight.get(object_key)
        if task is None:
            task = asyncio.create_task(self._single_flight(object_key, build))
            self._inflight[object_key] = task
            task.add_done_callback(_retrieve_exception)
        else:
            self.stats.coalesced += 1
        # shield: a cancelled request must not cancel the load/build others wait on.
        return await asyncio.shield(task)

    async def close(self) -> None:
        """Wait for background touches (a closing app must not leave them running against a closed store)."""
        while self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    def _memory_hit(self, object_key: str, item: VoiceClonePromptItem) -> None:
        self._memory.move_to_end(object_key)
        self.stats.memory_hits += 1
        metrics.PROMPT_CACHE_REQUESTS.labels(result="memory_hit").inc()
        if self._due_for_touch(object_key):
            # In the background: a memory hit is the fast path, and a touch is only bookkeeping.
            self._record_touch(object_key)  # now, so a key has one touch in flight, not one per hit
            task = asyncio.get_running_loop().create_task(self._touch(object_key, item))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    def _due_for_touch(self, object_key: str) -> bool:
        if self._refresh_seconds <= 0:
            return False
        last = self._touched.get(object_key)
        return last is None or self._clock() - last >= self._refresh_seconds

    def _record_touch(self, object_key: str) -> None:
        self._touched[object_key] = self._clock()
        self._touched.move_to_end(object_key)
        while len(self._touched) > _TOUCH_RECORDS:
            self._touched.popitem(last=False)

    async def _touch(self, object_key: str, item: VoiceClonePromptItem) -> None:
        """Renew the stored prompt's last-modified time; write it again if the expiry sweep removed it."""
        try:
            await self._store.touch(object_key)
        except ObjectNotFound:
            await self._save(object_key, item)  # records the write as this key's touch
            return
        except ObjectStoreError as exc:
            self.stats.store_errors += 1
            logger.warning("prompt %s could not be marked as in use: %s", object_key, exc)
            return
        self.stats.touches += 1
        self._record_touch(object_key)

    async def _single_flight(
        self, object_key: str, build: Callable[[], VoiceClonePromptItem]
    ) -> tuple[VoiceClonePromptItem, PromptSource]:
        try:
            return await self._load_or_build(object_key, build)
        finally:
            # Inside the task, so no later request can find a finished task under the key.
            self._inflight.pop(object_key, None)

    async def _load_or_build(
        self, object_key: str, build: Callable[[], VoiceClonePromptItem]
    ) -> tuple[VoiceClonePromptItem, PromptSource]:
        stored = await self._load(object_key)
        if stored is not None:
            self.stats.store_hits += 1
            metrics.PROMPT_CACHE_REQUESTS.labels(result="store_hit").inc()
            if self._due_for_touch(object_key):
                # Its age is unknown here (another replica may not have touched it for a while): touch now.
                await self._touch(object_key, stored)
            self._remember(object_key, stored)
            return stored, "store"
        self.stats.misses += 1
        metrics.PROMPT_CACHE_REQUESTS.labels(result="miss").inc()
        item = await asyncio.to_thread(build)
        await self._save(object_key, item)
        self._remember(object_key, item)
        return item, "built"

    async def _load(self, object_key: str) -> VoiceClonePromptItem | None:
        try:
            data = await self._store.get(object_key)
        except ObjectNotFound:
            return None
        except ObjectStoreError as exc:
            self.stats.store_errors += 1
            logger.warning("prompt store read of %s failed, building instead: %s", object_key, exc)
            return None
        try:
            return deserialize_prompt(data)
        except PromptFormatError as exc:
            self.stats.corrupt_entries += 1
            logger.warning("stored prompt %s is damaged, rebuilding it: %s", object_key, exc)
            return None

    async def _save(self, object_key: str, item: VoiceClonePromptItem) -> None:
        try:
            data = serialize_prompt(item)
        except Exception:
            logger.exception("prompt %s could not be serialised; not stored", object_key)
            return
        try:
            await self._store.put(object_key, data, CONTENT_TYPE)
        except ObjectStoreError as exc:
            self.stats.store_errors += 1
            logger.warning("prompt store write of %s failed (served from memory only): %s", object_key, exc)
            return
        self._record_touch(object_key)

    def _remember(self, object_key: str, item: VoiceClonePromptItem) -> None:
        if self._max_entries == 0:
            return
        self._memory[object_key] = item
        self._memory.move_to_end(object_key)
        while len(self._memory) > self._max_entries:
            self._memory.popitem(last=False)


def _retrieve_exception(task: asyncio.Task[Any]) -> None:
    """Mark a failed build's exception as seen even when every waiting request was cancelled."""
    if not task.cancelled():
        task.exception()
