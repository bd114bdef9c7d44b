"""Loading, holding and unloading the Qwen3-TTS model (an adapter: it faces torch and the filesystem).

States: NOT_LOADED -> LOADING -> READY, or FAILED with a message a person can act on. The first use loads the model
lazily (or ``preload`` at start); ``idle_unload_seconds`` gives the memory back when nobody has used it for that
long. Loading runs in a worker thread, never on the event loop, and concurrent callers share one load.

:func:`check_available` answers "could this spec load at all?" without loading anything (a few file lookups), so
readiness can say NOT_SERVING, with the way out, before any request has tried the model.
"""

from __future__ import annotations

import asyncio
import enum
import gc
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from voice_common.errors import Unavailable
from voice_tts import metrics

log = logging.getLogger(__name__)

DEFAULT_MODEL = "Qwen/Qwen3-TTS-12Hz-0.6B-Base"
SIZES = {"0.6b": "Qwen/Qwen3-TTS-12Hz-0.6B-Base", "1.7b": "Qwen/Qwen3-TTS-12Hz-1.7B-Base"}
DTYPES = ("auto", "float32", "bfloat16", "float16")


class ModelState(enum.Enum):
    NOT_LOADED = "not_loaded"
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"


@dataclass(frozen=True)
class ModelSpec:
    """What to load; ``model`` is a hub id, a size ("0.6B", "1.7B") or a local directory."""

    model: str = DEFAULT_MODEL
    device: str = "auto"
    dtype: str = "auto"
    attn_implementation: str | None = None
    # Off by default: where this runs, weights cannot be downloaded, and a hub lookup only burns time in retries.
    allow_download: bool = False


@dataclass(frozen=True)
class ModelStatus:
    state: ModelState
    model: str
    device: str
    dtype: str
    gpu_memory_bytes: int
    load_seconds: float
    message: str


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


# Said wherever the model cannot be found: the one way out on machines that cannot download weights.
HOW_TO_SET_MODEL = (
    "point TTS_MODEL at a model directory (for a test model: `make tiny-model`, then "
    "TTS_MODEL=models/tiny-qwen3-tts), or mount the real checkpoint and set TTS_MODEL to its path"
)
# What from_pretrained reads first from a Qwen3-TTS checkpoint: the model's config and the speech tokenizer's.
_REQUIRED_FILES = ("config.json", "speech_tokenizer/config.json")

AvailabilityCheck = Callable[[ModelSpec], str | None]


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache, read from the environment now (huggingface_hub reads it once, at import)."""
    from huggingface_hub import constants

    for variable in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(variable):
            return Path(os.environ[variable]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    return Path(constants.HF_HUB_CACHE)


def check_available(spec: ModelSpec, *, cache_dir: Path | None = None) -> str | None:
    """Why ``spec`` cannot load, or None when it might: a cheap look at files, nothing is loaded or downloaded.

    A directory must hold ``config.json`` and ``speech_tokenizer/``; a hub id must be in the local hub cache
    (``cache_dir``, else the environment's) unless downloads are allowed. None does not promise the load succeeds
    (weights may be damaged, the device missing): that shows as a FAILED load.
    """
    model = resolve_model(spec.model)
    path = Path(model).expanduser()
    if path.is_dir():
        missing = [name for name in _REQUIRED_FILES if not (path / name).is_file()]
        if missing:
            return (
                f"model directory {model!r} is not a Qwen3-TTS checkpoint (no {', '.join(missing)}): "
                + HOW_TO_SET_MODEL
            )
        return None
    if path.exists():
        return f"model {model!r} is a file, not a model directory: " + HOW_TO_SET_MODEL
    if "/" not in model or model.startswith(("/", ".", "~")) or model.count("/") != 1:
        # Not shaped like a hub id ("owner/name"): a path that is not there.
        return f"model directory {model!r} does not exist: " + HOW_TO_SET_MODEL
    if spec.allow_download:
        return None
    from huggingface_hub import try_to_load_from_cache

    cache = cache_dir or hub_cache_dir()
    for name in _REQUIRED_FILES:
        if not isinstance(try_to_load_from_cache(model, name, cache_dir=cache), str):
            return (
                f"model {model!r} is neither a directory nor in the local Hugging Face cache ({cache}), and "
                "weights cannot be downloaded here: " + HOW_TO_SET_MODEL
            )
    return None


def _not_available_message(model: str, error: BaseException) -> str:
    if not Path(model).exists() and "/" in model:
        return (
            f"model {model!r} could not be loaded ({type(error).__name__}: {error}). Weights cannot be downloaded "
            "here: " + HOW_TO_SET_MODEL
        )
    return f"model {model!r} could not be loaded: {type(error).__name__}: {error}"


def load_qwen3_tts(spec: ModelSpec) -> tuple[Any, str, str]:
    """Blocking: returns (Qwen3TTSModel, device, dtype name)."""
    from qwen_tts import Qwen3TTSModel

    device = resolve_device(spec.device)
    dtype = resolve_dtype(spec.dtype, device)
    kwargs: dict[str, Any] = {
        "device_map": device,
        "dtype": dtype,
        "local_files_only": not spec.allow_download,
    }
    if spec.attn_implementation:
        kwargs["attn_implementation"] = spec.attn_implementation
    model = Qwen3TTSModel.from_pretrained(resolve_model(spec.model), **kwargs)
    if getattr(model.model, "tts_model_type", "base") != "base":
        raise ValueError(
            f"{spec.model!r} is a {model.model.tts_model_type!r} model; voice cloning needs a Base model"
        )
    return model, device, str(dtype).removeprefix("torch.")


Loader = Callable[[ModelSpec], tuple[Any, str, str]]


class _NotAvailable(Exception):
    """check_available's reason, carried through the load's error handling unchanged."""


class ModelManager:
    def __init__(
        self,
        spec: ModelSpec,
        *,
        idle_unload_seconds: float = 0.0,
        loader: Loader = load_qwen3_tts,
        check: AvailabilityCheck = check_available,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``check`` belongs with ``loader``: a test loader that needs no files comes with a check that passes."""
        self._spec = spec
        self._idle_unload = idle_unload_seconds
        self._loader = loader
        self._check = check
        self._clock = clock
        self._model: Any = None
        self._device = ""
        self._dtype = ""
        self._state = ModelState.NOT_LOADED
        self._message = f"not loaded yet; the first request loads {spec.model!r}"
        self._load_seconds = 0.0
        self._loading: asyncio.Future[None] | None = None
        self._in_use = 0
        self._last_used = clock()

    @property
    def spec(self) -> ModelSpec:
        return self._spec

    @property
    def state(self) -> ModelState:
        return self._state

    def problem(self) -> str | None:
        """Why the model cannot serve now, or None: a FAILED load's reason, or why the spec cannot load at all.

        Cheap (no load): readiness calls it every few seconds. A READY model has no problem, whatever its files do.
        """
        if self._state is ModelState.READY:
            return None
        if self._state is ModelState.FAILED:
            return self._message
        return self._check(self._spec)

    def status(self) -> ModelStatus:
        gpu_bytes = 0
        if self._state is ModelState.READY and self._device.startswith("cuda"):
            import torch

            gpu_bytes = int(torch.cuda.memory_allocated(self._device))
        return ModelStatus(
            self._state,
            self._spec.model,
            self._device,
            self._dtype,
            gpu_bytes,
            self._load_seconds,
            self._message,
        )

    async def load(self, spec: ModelSpec | None = None) -> ModelStatus:
        """Load (or switch to) ``spec``; callers arriving during a load wait for the same load."""
        if spec is not None and spec != self._spec:
            await self.unload()
            self._spec = spec
        if self._state is ModelState.READY:
            return self.status()
        if self._loading is None:
            self._loading = asyncio.ensure_future(self._load())
        loading = self._loading
        await asyncio.shield(loading)
        return self.status()

    async def _load(self) -> None:
        self._state = ModelState.LOADING
        self._message = f"loading {self._spec.model!r}"
        started = self._clock()
        try:
            # Checked first: a hub id that is not cached would otherwise spend a while in lookups before failing.
            problem = self._check(self._spec)
            if problem is not None:
                raise _NotAvailable(problem)
            model, device, dtype = await asyncio.to_thread(self._loader, self._spec)
        except Exception as error:
            self._state = ModelState.FAILED
            self._message = (
                str(error)
                if isinstance(error, _NotAvailable)
                else _not_available_message(resolve_model(self._spec.model), error)
            )
            metrics.MODEL_LOADS.labels(result="failed").inc()
            log.warning(
                "TTS model failed to load", extra={"model": self._spec.model, "reason": self._message}
            )
        else:
            self._model, self._device, self._dtype = model, device, dtype
            self._load_seconds = self._clock() - started
            metrics.MODEL_LOAD_SECONDS.set(self._load_seconds)
            metrics.MODEL_LOADS.labels(result="ready").inc()
            self._state = ModelState.READY
            self._message = f"{self._spec.model} on {device} ({dtype})"
            self._last_used = self._clock()
            log.info(
                "TTS model loaded",
                extra={"model": self._spec.model, "device": device, "seconds": round(self._load_seconds, 3)},
            )
        finally:
            self._loading = None

    async def unload(self) -> ModelStatus:
        if self._loading is not None:
            await asyncio.shield(self._loading)
        if self._model is not None:
            device = self._device
            self._model = None
            gc.collect()
            if device.startswith("cuda"):
                import torch

                torch.cuda.empty_cache()
            log.info("TTS model unloaded", extra={"model": self._spec.model})
        self._state = ModelState.NOT_LOADED
        self._device = self._dtype = ""
        self._message = f"unloaded; the next request loads {self._spec.model!r} again"
        return self.status()

    @asynccontextmanager
    async def use(self) -> AsyncIterator[Any]:
        """The loaded model for the duration of a request (loading it first if needed)."""
        if self._state is not ModelState.READY:
            await self.load()
        if self._state is not ModelState.READY:
            raise Unavailable(f"the TTS model is not available: {self._message}")
        self._in_use += 1
        try:
            yield self._model
        finally:
            self._in_use -= 1
            self._last_used = self._clock()

    async def unload_if_idle(self) -> bool:
        """Unload when idle for ``idle_unload_seconds`` (0: never); returns whether it did."""
        if (
            self._idle_unload <= 0
            or self._state is not ModelState.READY
            or self._in_use
            or self._clock() - self._last_used < self._idle_unload
        ):
            return False
        await self.unload()
        return True

    async def run_idle_unloader(self, interval_seconds: float = 5.0) -> None:
        while True:
            await asyncio.sleep(interval_seconds)
            await self.unload_if_idle()
