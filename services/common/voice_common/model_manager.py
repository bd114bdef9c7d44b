"""Loading, holding and unloading one model for a service, whatever the model (TTS, ASR).

States: NOT_LOADED -> LOADING -> READY, or FAILED with a message a person can act on. The first use loads the model
lazily (or a preload at start); ``idle_unload_seconds`` gives the memory back when nobody has used it for that long.
Loading runs in a worker thread, never on the event loop, and concurrent callers share one load.

Switching models (LoadModel) never leaves a service without one it had: the new model loads *beside* the serving
one, which stays READY and keeps taking requests until the new one works; then new requests get the new model,
requests already running finish on the old one (each holds its model to its end: :meth:`ModelManager.use`), and
the old one is released when the last of them ends. So memory for two models is needed while a switch runs. A load
that fails raises an error saying what failed (:func:`load_error`: NOT_FOUND, FAILED_PRECONDITION, UNAVAILABLE)
and the old model serves on, the failure noted in its status. Only with no model READY does a failure make the
state FAILED (and readiness NOT_SERVING). One load at a time: a LoadModel of the spec that is loading waits for that
load; one of another spec is refused (ABORTED) until it has ended.

What differs between services comes in through the constructor: the ``loader`` (blocking; returns the model, the
device it landed on and its precision, e.g. a torch dtype or a CTranslate2 compute type), the ``check`` that says
cheaply why a spec cannot load at all (readiness asks it every few seconds), the ``fetch`` that brings a model's
files onto the machine first (:class:`HubFetch`: a download from the Hugging Face hub), the service's own load
metrics, and optional hooks for GPU memory and for giving memory back on unload.

A download is part of the load: it runs in the same worker thread, before the loader. With no model READY the state
is LOADING meanwhile, and readiness says NOT_SERVING with the progress ("downloading Qwen/…: 35% of 2.5 GB"); beside
a READY model the service stays SERVING and the status shows the progress. A log line reports it every
``progress_log_seconds``. A model that must be downloaded is loaded at start (:meth:`plan_preload`): the first
request would otherwise wait minutes, and a load balancer would send traffic to a replica that has no model.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import gc
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, Protocol, TypeVar

from prometheus_client import Counter, Gauge

from voice_common.errors import Aborted, DomainError, FailedPrecondition, NotFound, Unavailable
from voice_common.model_download import (
    DownloadProgress,
    HubUnreachable,
    ModelDownloader,
    ModelDownloadError,
    ModelNotOnHub,
    cached_snapshot,
    hub_cache_dir,
    is_hub_id,
    size_text,
)

log = logging.getLogger(__name__)

# The meaning of TTS_ALLOW_DOWNLOAD and ASR_ALLOW_DOWNLOAD: one behaviour (this manager's), so one description.
ALLOW_DOWNLOAD_DESCRIPTION = (
    "Download a hub model that is not in the local cache: at start, NOT_SERVING with the progress until it is "
    "there (a LoadModel of such a model downloads it too). false: never contact the hub, for clusters that mount a "
    "pre-filled cache or model directory; a missing model is then NOT_SERVING with the way out."
)


class ModelState(enum.Enum):
    NOT_LOADED = "not_loaded"
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"


class HasModelName(Protocol):
    """What the manager needs of a spec: the name it shows in messages and status (a path, an id, a size)."""

    @property
    def model(self) -> str: ...


SpecT = TypeVar("SpecT", bound=HasModelName)
ModelT = TypeVar("ModelT")
SpecContraT = TypeVar("SpecContraT", contravariant=True)


class ModelFetch(Protocol[SpecContraT]):
    """Brings a spec's files onto this machine before the loader runs."""

    def needed(self, spec: SpecContraT) -> bool:
        """Whether a fetch would transfer anything; cheap (file lookups), asked at start and before each load."""
        ...

    def __call__(self, spec: SpecContraT, report: Callable[[DownloadProgress], None]) -> None:
        """Blocking; ``report`` is called with the progress now and then (from another thread)."""
        ...


class HubSpec(HasModelName, Protocol):
    """What :class:`HubFetch` needs of a spec."""

    @property
    def allow_download(self) -> bool: ...

    def hub_id(self) -> str | None:
        """The hub repository the spec names ("Qwen/…"), or None (a model directory, a path that is not there)."""
        ...


@dataclass(frozen=True)
class ModelProblem:
    """Why a spec cannot load, found without loading it (a service's ``check``): what an operator is told, and
    whether nothing is there at all (a directory that does not exist: a LoadModel naming it answers NOT_FOUND; any
    other problem, something there that is no model or a setting that forbids the download, FAILED_PRECONDITION)."""

    message: str
    nothing_there: bool = False


@dataclass(frozen=True)
class ModelFiles:
    """Where a service's model comes from (a directory, the Hugging Face cache, the hub) and what an operator is
    told when it cannot: one rule for TTS and ASR, with what is each service's own as values.

    ``model`` below is the directory or hub id to load (a size name already resolved); ``named`` is how the
    operator wrote it, for the command the message suggests.
    """

    kind: str  # what a model directory must be: "a Qwen3-TTS checkpoint"
    required_files: tuple[str, ...]  # what such a directory (or a cached snapshot) must hold
    download_setting: str  # "TTS_ALLOW_DOWNLOAD"
    how_to_set: str  # the ways out that need no network
    how_to_get: Callable[
        [str], str
    ]  # the ways out for a hub model this machine does not have, given ``named``

    def hub_id(self, model: str) -> str | None:
        """The hub repository ``model`` names, or None: a directory, or a path that is not there."""
        return model if is_hub_id(model) and not Path(model).expanduser().exists() else None

    def why_unavailable(
        self, model: str, *, named: str, allow_download: bool, cache_dir: Path | None = None
    ) -> ModelProblem | None:
        """Why ``model`` cannot load, or None when it might: a cheap look at files, nothing is loaded or
        downloaded. A hub id missing from the cache (``cache_dir``, else the environment's) can load when downloads
        are allowed: the load downloads it first."""
        path = Path(model).expanduser()
        if path.is_dir():
            missing = [name for name in self.required_files if not (path / name).is_file()]
            if missing:
                return ModelProblem(
                    f"model directory {model!r} is not {self.kind} (no {', '.join(missing)}): "
                    + self.how_to_set
                )
            return None
        if path.exists():
            return ModelProblem(f"model {model!r} is a file, not a model directory: " + self.how_to_set)
        hub_id = self.hub_id(model)
        if hub_id is None:
            # Not shaped like a hub id ("owner/name"): a path that is not there.
            return ModelProblem(
                f"model directory {model!r} does not exist: " + self.how_to_set, nothing_there=True
            )
        cache = cache_dir or hub_cache_dir()
        if (
            allow_download
            or cached_snapshot(hub_id, required=self.required_files, cache_dir=cache) is not None
        ):
            return None
        return ModelProblem(
            f"model {model!r} is neither a directory nor in the local Hugging Face cache ({cache}), and downloads "
            f"are off ({self.download_setting}=false): " + self.how_to_get(named)
        )

    def directory(self, model: str) -> Path:
        """The directory to load: ``model`` itself, or the cached snapshot of the hub model it names (the download,
        if any, has happened: the loader must never look online)."""
        hub_id = self.hub_id(model)
        if hub_id is None:
            return Path(model).expanduser()
        snapshot = cached_snapshot(hub_id, required=self.required_files)
        if snapshot is None:
            raise FileNotFoundError(f"{hub_id} is not in the local Hugging Face cache ({hub_cache_dir()})")
        return snapshot

    def download_failure(self, model: str, error: BaseException, *, named: str) -> str | None:
        """What to tell an operator about a load that failed in its download, or None for any other failure."""
        if isinstance(error, HubUnreachable):
            return (
                f"model {model!r} is not in the local Hugging Face cache ({hub_cache_dir()}) and {error}: "
                + self.how_to_get(named)
            )
        if isinstance(error, ModelNotOnHub):
            return f"model {model!r} is neither a model directory nor on the hub: {error}. " + self.how_to_set
        if isinstance(error, ModelDownloadError):
            return f"model {model!r} could not be downloaded: {error}. " + self.how_to_get(named)
        return None


@dataclass(frozen=True)
class HubFetch:
    """Downloads a hub model that is not in the local cache, when the spec allows downloads.

    ``required_files`` are what the service's check looks for in a cached snapshot; ``patterns`` limit the files
    downloaded (None: the whole repository).
    """

    required_files: tuple[str, ...]
    patterns: tuple[str, ...] | None = None
    downloader: ModelDownloader = field(default_factory=ModelDownloader)

    def needed(self, spec: HubSpec) -> bool:
        repo_id = spec.hub_id()
        return (
            repo_id is not None
            and spec.allow_download
            and self.downloader.cached(repo_id, required=self.required_files) is None
        )

    def __call__(self, spec: HubSpec, report: Callable[[DownloadProgress], None]) -> None:
        repo_id = spec.hub_id()
        if repo_id is not None and self.needed(spec):
            self.downloader.download(repo_id, patterns=self.patterns, on_progress=report)


@dataclass(frozen=True)
class ModelStatus:
    state: ModelState
    model: str
    device: str  # where the loaded model runs ("cpu", "cuda:0"); empty unless READY
    precision: str  # the service's word for it: a torch dtype, a CTranslate2 compute type; empty unless READY
    gpu_memory_bytes: int
    load_seconds: float
    message: str


@dataclass(frozen=True)
class LoadMetrics:
    """A service's own collectors (each service keeps its Prometheus names): the last successful load's
    duration, and loads that ended, labelled ``result`` = ready or failed."""

    seconds: Gauge
    loads: Counter


class _NotAvailable(Exception):
    """check's answer, carried through the load's error handling unchanged."""

    def __init__(self, problem: ModelProblem) -> None:
        super().__init__(problem.message)
        self.problem = problem


def default_failure_message(spec: HasModelName, error: BaseException) -> str:
    return f"model {spec.model!r} could not be loaded: {type(error).__name__}: {error}"


def load_error(spec: HasModelName, failure: BaseException, message: str) -> DomainError:
    """The error a LoadModel that failed answers with: the status code says what kind of failure it was (the
    message, what to do about it). Nothing there: NOT_FOUND; a hub that cannot be reached or a download that broke
    off: UNAVAILABLE (trying again later may work); anything else (not a model, downloads off, damaged weights, a
    device this machine does not have): FAILED_PRECONDITION."""
    if isinstance(failure, _NotAvailable):
        if failure.problem.nothing_there:
            return NotFound("model", spec.model, message=message)
        return FailedPrecondition(message)
    if isinstance(failure, ModelNotOnHub):
        return NotFound("model", spec.model, message=message)
    if isinstance(failure, ModelDownloadError):
        return Unavailable(message)
    return FailedPrecondition(message)


@dataclass(eq=False)
class _Loaded(Generic[SpecT, ModelT]):
    """A model in memory and the requests running on it. The one serving, or one that was replaced (LoadModel) or
    unloaded while requests still ran on it: ``retired``, released when the last of them ends."""

    spec: SpecT
    model: ModelT | None  # None once released
    device: str
    precision: str
    load_seconds: float
    users: int = 0
    retired: bool = False

    def describe(self) -> str:
        return f"{self.spec.model} on {self.device} ({self.precision})"


@dataclass(frozen=True)
class LoadedModel(Generic[SpecT, ModelT]):
    """A model a request holds (:meth:`ModelManager.lease`) and the spec it was loaded from."""

    spec: SpecT
    model: ModelT


class ModelManager(Generic[SpecT, ModelT]):
    def __init__(
        self,
        spec: SpecT,
        *,
        label: str,
        loader: Callable[[SpecT], tuple[ModelT, str, str]],
        check: Callable[[SpecT], ModelProblem | None],
        fetch: ModelFetch[SpecT] | None = None,
        idle_unload_seconds: float = 0.0,
        metrics: LoadMetrics | None = None,
        describe_failure: Callable[[SpecT, BaseException], str] = default_failure_message,
        gpu_memory: Callable[[str], int] | None = None,
        release: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        progress_log_seconds: float = 10.0,
    ) -> None:
        """``label`` ("TTS", "ASR") names the model in messages and logs. ``check`` belongs with ``loader``: a test
        loader that needs no files comes with a check that passes. ``fetch`` runs before ``loader`` when it is
        needed (a download). ``gpu_memory(device)`` reports what a READY model holds on a CUDA device;
        ``release(device)`` runs after a model is dropped (e.g. emptying torch's CUDA cache)."""
        self._spec = spec  # the serving model's while READY, else the one loading, failed or to load
        self._label = label
        self._loader = loader
        self._check = check
        self._fetch = fetch
        self._progress_log_seconds = progress_log_seconds
        self._idle_unload = idle_unload_seconds
        self._metrics = metrics
        self._describe_failure = describe_failure
        self._gpu_memory = gpu_memory
        self._release = release
        self._clock = clock
        self._serving: _Loaded[SpecT, ModelT] | None = None  # set exactly while READY
        self._state = ModelState.NOT_LOADED
        self._message = f"not loaded yet; the first request loads {spec.model!r}"  # while not READY
        # While READY: a load running beside the serving model, or the last one that failed (status tells both).
        self._replacement_note = ""
        self._loading: asyncio.Future[None] | None = None
        self._loading_spec: SpecT | None = None
        self._last_used = clock()
        self._preload_setting: str | None = None  # e.g. "TTS_PRELOAD" while a preload is due or running
        self._download: DownloadProgress | None = None  # while a fetch runs: its latest progress
        self._download_logged: DownloadProgress | None = None  # the last progress the log reported
        self._download_logged_at = 0.0

    @property
    def spec(self) -> SpecT:
        """The serving model's spec while READY; else the spec that is loading, failed, or loads on first use."""
        return self._spec

    @property
    def state(self) -> ModelState:
        return self._state

    @property
    def label(self) -> str:
        return self._label

    @property
    def loaded(self) -> ModelT | None:
        """The serving model while READY, else None: for status details (use :meth:`use` to run requests on it)."""
        return self._serving.model if self._serving is not None else None

    def expect_preload(self, setting: str) -> None:
        """A preload (``setting``, e.g. "TTS_PRELOAD") will run: until :meth:`preload` ends, the service is not
        ready, so a load balancer sends no traffic to a replica that would make its first client wait."""
        self._preload_setting = setting

    def plan_preload(self, requested: bool, setting: str) -> None:
        """At start: a preload when ``setting`` (e.g. "TTS_PRELOAD") asks for one, or when the model must be
        downloaded first (a hub id missing from the local cache, with downloads allowed)."""
        if requested:
            self.expect_preload(setting)
        elif self.must_download():
            log.info(
                f"the {self._label} model is not in the local cache: downloading and loading it now",
                extra={"model": self._spec.model},
            )
            self.expect_preload("downloading it first: it was not in the local cache")

    @property
    def preload_expected(self) -> bool:
        """A preload is due or running (the process starts it with :meth:`preload`)."""
        return self._preload_setting is not None

    def must_download(self) -> bool:
        """Whether loading the current spec starts with a download (cheap: file lookups)."""
        return self._fetch is not None and self._fetch.needed(self._spec)

    async def preload(self) -> None:
        """Load at start; readiness waits for this (loaded or failed: a failure is in the status and the log)."""
        try:
            await self.load()
        except DomainError:
            pass
        finally:
            self._preload_setting = None

    def readiness_problem(self) -> str | None:
        """Why the service holding this model must not take traffic now: a download running (with its progress), a
        preload still running, or a model that cannot serve (:meth:`problem`); None when it can. A model READY
        serves whatever a LoadModel beside it does (downloads, loads, fails)."""
        if self._state is ModelState.READY:
            return None
        download = self._download
        if download is not None:
            return f"downloading {download.repo_id}: {download.percent}% of {size_text(download.total_bytes)}"
        if self._preload_setting is not None:
            return f"still loading the {self._label} model {self._spec.model!r} ({self._preload_setting})"
        problem = self.problem()
        return None if problem is None else f"the {self._label} model is not available: {problem}"

    def problem(self) -> str | None:
        """Why the model cannot serve now, or None: a FAILED load's reason, or why the spec cannot load at all.

        Cheap (no load): readiness calls it every few seconds. A READY model has no problem, whatever its files do.
        """
        if self._state is ModelState.READY:
            return None
        if self._state is ModelState.FAILED:
            return self._message
        problem = self._check(self._spec)
        return None if problem is None else problem.message

    def status(self) -> ModelStatus:
        serving = self._serving
        if serving is None:
            message = self._message
            if self._state is ModelState.LOADING and self._download is not None:
                message = self._download_text(self._download)
            return ModelStatus(self._state, self._spec.model, "", "", 0, 0.0, message)
        gpu_bytes = 0
        if serving.device.startswith("cuda") and self._gpu_memory is not None:
            gpu_bytes = self._gpu_memory(serving.device)
        note = self._replacement_note
        if self._loading is not None and self._download is not None:
            note = self._download_text(self._download) + " to replace it"
        return ModelStatus(
            ModelState.READY,
            serving.spec.model,
            serving.device,
            serving.precision,
            gpu_bytes,
            serving.load_seconds,
            serving.describe() + (f"; {note}" if note else ""),
        )

    async def load(self, spec: SpecT | None = None) -> ModelStatus:
        """Load ``spec`` and serve it (None: the current spec, a no-op while READY); the status once it serves.

        A model READY keeps serving while ``spec`` loads beside it (memory for both is needed meanwhile), and is
        replaced only once the new one works: requests running on it finish on it, later ones get the new one, and
        the old one is released when the last of its requests ends. A failed load raises what failed (see
        :func:`load_error`) and leaves a READY model serving, the failure noted in its status; with no model READY
        the state becomes FAILED with the reason. Callers asking for the spec that is loading wait for that load;
        one asking for another spec meanwhile gets ``Aborted``.
        """
        if spec is None and self._serving is not None:
            return self.status()
        target = self._spec if spec is None else spec
        loading = self._loading
        if loading is not None:
            if target != self._loading_spec:
                assert self._loading_spec is not None
                raise Aborted(
                    f"the {self._label} model {self._loading_spec.model!r} is loading now; ask for "
                    f"{target.model!r} again once that load has ended (GetModelStatus shows when)"
                )
        elif self._serving is not None and self._serving.spec == target:
            return self.status()
        else:
            if self._serving is None:
                self._spec = target
                self._state = ModelState.LOADING
                self._message = f"loading {target.model!r}"
            else:
                self._replacement_note = f"loading {target.model!r} to replace it"
            self._loading_spec = target
            loading = self._loading = asyncio.ensure_future(self._load(target))
            # Every waiter may have been cancelled (the clients went away): the failure is in the status anyway.
            loading.add_done_callback(_retrieve_exception)
        await asyncio.shield(loading)
        return self.status()

    async def _load(self, spec: SpecT) -> None:
        """Loads ``spec`` (beside the serving model, if any) and makes it the serving one; raises the failure."""
        started = self._clock()
        try:
            # Checked first: a name that is not there would otherwise spend a while in hub lookups before failing.
            problem = self._check(spec)
            if problem is not None:
                raise _NotAvailable(problem)
            model, device, precision = await asyncio.to_thread(self._fetch_and_load, spec)
        except Exception as error:
            message = str(error) if isinstance(error, _NotAvailable) else self._describe_failure(spec, error)
            if self._metrics is not None:
                self._metrics.loads.labels(result="failed").inc()
            if self._serving is None:
                self._state = ModelState.FAILED
                self._message = message
                log.warning(
                    f"{self._label} model failed to load", extra={"model": spec.model, "reason": message}
                )
            else:
                self._replacement_note = f"loading {spec.model!r} to replace it failed: {message}"
                log.warning(
                    f"{self._label} model failed to load; the one loaded before keeps serving",
                    extra={"model": spec.model, "serving": self._serving.spec.model, "reason": message},
                )
            raise load_error(spec, error, message) from None
        else:
            loaded = _Loaded(spec, model, device, precision, self._clock() - started)
            if self._metrics is not None:
                self._metrics.seconds.set(loaded.load_seconds)
                self._metrics.loads.labels(result="ready").inc()
            replaced = self._serving
            self._serving, self._spec, self._state = loaded, spec, ModelState.READY
            self._replacement_note = ""
            self._last_used = self._clock()
            log.info(
                f"{self._label} model loaded",
                extra={
                    "model": spec.model,
                    "device": device,
                    "seconds": round(loaded.load_seconds, 3),
                    **({"replaces": replaced.spec.model} if replaced is not None else {}),
                },
            )
            if replaced is not None:
                self._retire(replaced)
        finally:
            self._loading = None
            self._loading_spec = None

    def _fetch_and_load(self, spec: SpecT) -> tuple[ModelT, str, str]:
        """In the worker thread: the download (when needed), then the loader."""
        if self._fetch is not None and self._fetch.needed(spec):
            self._download_logged = None
            try:
                self._fetch(spec, self._report_download)
            finally:
                self._download = None
        return self._loader(spec)

    @staticmethod
    def _download_text(progress: DownloadProgress) -> str:
        return f"downloading {progress.repo_id}: {progress.percent}% of {size_text(progress.total_bytes)}"

    def _report_download(self, progress: DownloadProgress) -> None:
        """From the download's progress thread: for readiness and the status now, for the log now and then."""
        self._download = progress
        now, last = self._clock(), self._download_logged
        finished = progress.done_bytes >= progress.total_bytes
        if (
            last is None
            or (finished and last.done_bytes < last.total_bytes)
            or (not finished and now - self._download_logged_at >= self._progress_log_seconds)
        ):
            self._download_logged, self._download_logged_at = progress, now
            log.info(
                f"downloading the {self._label} model",
                extra={
                    "model": progress.repo_id,
                    "percent": progress.percent,
                    "downloaded": size_text(progress.done_bytes),
                    "size": size_text(progress.total_bytes),
                    "files": f"{progress.files_done}/{progress.files_total}",
                },
            )

    async def unload(self) -> ModelStatus:
        """Stop serving the model (after a load that is running ends); it is released once its requests end."""
        if self._loading is not None:
            with contextlib.suppress(DomainError):  # a failed load: nothing more to unload for it
                await asyncio.shield(self._loading)
        serving = self._serving
        if serving is not None:
            self._serving = None
            self._retire(serving)
        self._state = ModelState.NOT_LOADED
        self._replacement_note = ""
        self._message = f"unloaded; the next request loads {self._spec.model!r} again"
        return self.status()

    def _retire(self, loaded: _Loaded[SpecT, ModelT]) -> None:
        loaded.retired = True
        if loaded.users == 0:
            self._drop(loaded)

    def _drop(self, loaded: _Loaded[SpecT, ModelT]) -> None:
        """Release a retired model nobody uses any more (its memory, then the service's ``release`` hook)."""
        loaded.model = None
        gc.collect()
        if self._release is not None:
            self._release(loaded.device)
        log.info(f"{self._label} model unloaded", extra={"model": loaded.spec.model})

    @asynccontextmanager
    async def use(self) -> AsyncIterator[ModelT]:
        """The serving model for the duration of a request (loading it first if needed). The request keeps this
        model to its end, even if a LoadModel replaces it meanwhile."""
        async with self.lease() as loaded:
            yield loaded.model

    @asynccontextmanager
    async def lease(self) -> AsyncIterator[LoadedModel[SpecT, ModelT]]:
        """:meth:`use`, with the spec the model was loaded from (what is tied to one model, like voice prompts)."""
        if self._serving is None:
            with contextlib.suppress(DomainError):  # the reason is in the status: Unavailable below says it
                await self.load()
        serving = self._serving
        if serving is None or serving.model is None:
            raise Unavailable(f"the {self._label} model is not available: {self._message}")
        serving.users += 1
        try:
            yield LoadedModel(serving.spec, serving.model)
        finally:
            serving.users -= 1
            self._last_used = self._clock()
            if serving.retired and serving.users == 0:
                self._drop(serving)

    async def unload_if_idle(self) -> bool:
        """Unload when idle for ``idle_unload_seconds`` (0: never); returns whether it did."""
        serving = self._serving
        if (
            self._idle_unload <= 0
            or serving is None
            or serving.users
            or self._loading is not None
            or self._clock() - self._last_used < self._idle_unload
        ):
            return False
        await self.unload()
        return True

    async def run_idle_unloader(self, interval_seconds: float = 5.0) -> None:
        while True:
            await asyncio.sleep(interval_seconds)
            await self.unload_if_idle()


def _retrieve_exception(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()
