"""Loading, holding and unloading the Qwen3-TTS model (an adapter: it faces torch and the filesystem).

The state machine (NOT_LOADED -> LOADING -> READY or FAILED, lazy and shared loads, idle unload, the download of a
hub model that is not in the local cache) is :class:`voice_common.model_manager.ModelManager`; this module gives it
what is Qwen3-TTS's own: how a spec names a model, how to load it, how to tell cheaply that it cannot load, the TTS
metrics and torch's CUDA memory.

:func:`check_available` answers "could this spec load at all?" without loading anything (a few file lookups), so
readiness can say NOT_SERVING, with the way out, before any request has tried the model. A hub id missing from the
cache can load when downloads are allowed (``TTS_ALLOW_DOWNLOAD``, the default): the load downloads it first, with
:mod:`voice_common.model_download`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from voice_common import model_manager as generic

# Part of this module's API (the servicer and the tests import it from here).
from voice_common.model_manager import ModelState as ModelState
from voice_tts import metrics

DEFAULT_MODEL = "Qwen/Qwen3-TTS-12Hz-0.6B-Base"
SIZES = {"0.6b": "Qwen/Qwen3-TTS-12Hz-0.6B-Base", "1.7b": "Qwen/Qwen3-TTS-12Hz-1.7B-Base"}
DTYPES = ("auto", "float32", "bfloat16", "float16")


@dataclass(frozen=True)
class ModelSpec:
    """What to load; ``model`` is a hub id, a size ("0.6B", "1.7B") or a local directory."""

    model: str = DEFAULT_MODEL
    device: str = "auto"
    dtype: str = "auto"
    attn_implementation: str | None = None
    # The service's settings turn it on (TTS_ALLOW_DOWNLOAD, true by default); a spec built in code downloads only
    # when it says so.
    allow_download: bool = False

    def hub_id(self) -> str | None:
        """The hub repository this spec names, or None: a directory, or a path that is not there."""
        return QWEN3_TTS_FILES.hub_id(resolve_model(self.model))


@dataclass(frozen=True)
class ModelStatus(generic.ModelStatus):
    """The generic status; the TTS API calls its precision ``dtype`` (a torch dtype name)."""

    @property
    def dtype(self) -> str:
        return self.precision


def resolve_model(model: str) -> str:
    """A size becomes its Base model's id; a directory is used as it is; anything else is a hub id."""
    return SIZES.get(model.strip().lower(), model.strip())


def resolve_device(device: str) -> str:
    import torch

    if device in ("", "auto"):
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return device
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} was asked for, but this machine has no usable CUDA GPU")
        index = int(device.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r} does not exist: {torch.cuda.device_count()} GPU(s) here")
        return f"cuda:{index}"
    raise ValueError(f"device {device!r} is not one of auto, cpu, cuda, cuda:N")


def resolve_dtype(dtype: str, device: str) -> Any:
    import torch

    if dtype in ("", "auto"):
        # bf16 halves memory and runs at full speed on recent GPUs; CPUs are fastest and exact in fp32.
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    return getattr(torch, dtype)


# Said wherever the model cannot be found.
HOW_TO_SET_MODEL = (
    "set TTS_MODEL to a model directory (for a test model: `make tiny-model`, then "
    "TTS_MODEL=models/tiny-qwen3-tts), or mount the real checkpoint and set TTS_MODEL to its path"
)
# What from_pretrained reads first from a Qwen3-TTS checkpoint: the model's config and the speech tokenizer's.
REQUIRED_FILES = ("config.json", "speech_tokenizer/config.json")

AvailabilityCheck = Callable[[ModelSpec], generic.ModelProblem | None]


def how_to_get(model: str) -> str:
    """The ways out for a hub model this machine does not have."""
    pull = "`make models`" if model == DEFAULT_MODEL else f"`make models TTS_MODEL={model}`"
    return f"run {pull} where there is a network (it fills the Hugging Face cache), or " + HOW_TO_SET_MODEL


QWEN3_TTS_FILES = generic.ModelFiles(
    kind="a Qwen3-TTS checkpoint",
    required_files=REQUIRED_FILES,
    download_setting="TTS_ALLOW_DOWNLOAD",
    how_to_set=HOW_TO_SET_MODEL,
    how_to_get=how_to_get,
)


def check_available(spec: ModelSpec, *, cache_dir: Path | None = None) -> generic.ModelProblem | None:
    """Why ``spec`` cannot load, or None when it might: a cheap look at files, nothing is loaded or downloaded.

    A directory must hold ``config.json`` and ``speech_tokenizer/``; a hub id must be in the local hub cache
    (``cache_dir``, else the environment's) unless downloads are allowed (the load then downloads it). None does not
    promise the load succeeds (the hub may be unreachable, weights damaged, the device missing): that shows as a
    FAILED load.
    """
    model = resolve_model(spec.model)
    return QWEN3_TTS_FILES.why_unavailable(
        model, named=model, allow_download=spec.allow_download, cache_dir=cache_dir
    )


def _not_available_message(spec: ModelSpec, error: BaseException) -> str:
    model = resolve_model(spec.model)
    download = QWEN3_TTS_FILES.download_failure(model, error, named=model)
    return download or f"model {model!r} could not be loaded: {type(error).__name__}: {error}"


def load_qwen3_tts(spec: ModelSpec) -> tuple[Any, str, str]:
    """Blocking: returns (Qwen3TTSModel, device, dtype name)."""
    from voice_tts.qwen import Qwen3TTSModel

    device = resolve_device(spec.device)
    dtype = resolve_dtype(spec.dtype, device)
    kwargs: dict[str, Any] = {"device_map": device, "dtype": dtype}
    if spec.attn_implementation:
        kwargs["attn_implementation"] = spec.attn_implementation
    # A directory, never a hub id: the download (if any) has happened, and from_pretrained must not look online.
    model = Qwen3TTSModel.from_pretrained(str(QWEN3_TTS_FILES.directory(resolve_model(spec.model))), **kwargs)
    if getattr(model.model, "tts_model_type", "base") != "base":
        raise ValueError(
            f"{spec.model!r} is a {model.model.tts_model_type!r} model; voice cloning needs a Base model"
        )
    return model, device, str(dtype).removeprefix("torch.")


Loader = Callable[[ModelSpec], tuple[Any, str, str]]


def _cuda_memory(device: str) -> int:
    import torch

    return int(torch.cuda.memory_allocated(device))


def _empty_cuda_cache(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.empty_cache()


_LOAD_METRICS = generic.LoadMetrics(seconds=metrics.MODEL_LOAD_SECONDS, loads=metrics.MODEL_LOADS)
# A Qwen3-TTS repository is the checkpoint as a whole (weights, tokenizers, the speech tokenizer): all of it.
HUB_FETCH = generic.HubFetch(required_files=REQUIRED_FILES)


class ModelManager(generic.ModelManager[ModelSpec, Any]):
    """The Qwen3-TTS model's manager: the generic one with the TTS loader, check, metrics and messages."""

    def __init__(
        self,
        spec: ModelSpec,
        *,
        idle_unload_seconds: float = 0.0,
        loader: Loader = load_qwen3_tts,
        check: AvailabilityCheck = check_available,
        fetch: generic.ModelFetch[ModelSpec] | None = HUB_FETCH,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``check`` belongs with ``loader``: a test loader that needs no files comes with a check that passes."""
        super().__init__(
            spec,
            label="TTS",
            loader=loader,
            check=check,
            fetch=fetch,
            idle_unload_seconds=idle_unload_seconds,
            metrics=_LOAD_METRICS,
            describe_failure=_not_available_message,
            gpu_memory=_cuda_memory,
            release=_empty_cuda_cache,
            clock=clock,
        )

    def status(self) -> ModelStatus:
        base = super().status()
        return ModelStatus(**{f.name: getattr(base, f.name) for f in fields(base)})

    async def load(self, spec: ModelSpec | None = None) -> ModelStatus:
        await super().load(spec)
        return self.status()

    async def unload(self) -> ModelStatus:
        await super().unload()
        return self.status()
