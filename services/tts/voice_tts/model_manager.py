"""Loading, holding and unloading the Qwen3-TTS model (an adapter: it faces torch and the filesystem).

States: NOT_LOADED -> LOADING -> READY, or FAILED with a message a person can act on. The first use loads the model
lazily (or ``preload`` at start); ``idle_unload_seconds`` gives the memory back when nobody has used it for that
long. Loading runs in a worker thread, never on the event loop, and concurrent callers share one load.
"""

from __future__ import annotations

import asyncio
import enum
import gc
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from voice_common.errors import Unavailable

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


def _not_available_message(model: str, error: BaseException) -> str:
    if not Path(model).exists() and "/" in model:
        return (
            f"model {model!r} could not be loaded ({type(error).__name__}: {error}). Weights cannot be downloaded "
            "here: point TTS_MODEL at a model directory (for a test model: `make tiny-model`, then "
            "TTS_MODEL=models/tiny-qwen3-tts), or mount the real checkpoint and set TTS_MODEL to its path"
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


class ModelManager:
    def __init__(
        self,
        spec: ModelSpec,
        *,
        idle_unload_seconds: float = 0.0,
        loader: Loader = load_qwen3_tts,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._spec = spec
        self._idle_unload = idle_unload_seconds
        self._loader = loader
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
            model, device, dtype = await asyncio.to_thread(self._loader, self._spec)
        except Exception as error:
            self._state = ModelState.FAILED
            self._message = _not_available_message(resolve_model(self._spec.model), error)
            log.warning(
                "TTS model failed to load", extra={"model": self._spec.model, "reason": self._message}
            )
        else:
            self._model, self._device, self._dtype = model, device, dtype
            self._load_seconds = self._clock() - started
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
