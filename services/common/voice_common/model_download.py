"""Model repositories from the Hugging Face hub into its local cache: verified, resumable, with progress.

Domain-free (no grpc, nothing about TTS or ASR): the services' first load, ``voice-admin models pull`` and
``make models`` all come here. The cache is huggingface_hub's own (``HF_HUB_CACHE``, else ``HF_HOME/hub``), laid out
as it lays it out, so ``from_pretrained`` and faster-whisper find what is downloaded here, and what other tools
downloaded is found here.

What huggingface_hub does not do, and this module adds:

* **Verification.** huggingface_hub checks only a file's size. Here every file is hashed against the hub's metadata
  (the repository's revision API with ``blobs=true``): the sha256 of an LFS file, the git blob id (sha1 of
  ``"blob <size>\\0" + content``) of a small one. A cached file that does not match is reported and downloaded
  again; a received one that does not match is deleted and fetched again, and refused once the attempts are spent.
* **Resuming across attempts.** A connection cut mid-file leaves huggingface_hub's ``.incomplete`` blob behind, and
  the next attempt (here, or a later ``make models``) continues it with a Range request.
* **Failing fast.** Without a network the first request (the revision API, with :attr:`timeout_seconds`) fails and
  nothing else is tried: no retry loop stands between an operator and the message.
* **Progress as data.** huggingface_hub draws its own tqdm bar per file; here one thread watches the bytes arriving
  and hands :class:`DownloadProgress` to the caller, which draws a bar (the CLI) or logs a line now and then (a
  service). huggingface_hub's per-file bars are turned off in the process.
* **Complete or absent.** ``refs/<revision>`` is written only once every file is there and verified, so
  :func:`cached_snapshot` never mistakes a half-finished download for a model.

Downloads are plain HTTP: xet (huggingface_hub's chunked transfer, used when ``hf_xet`` is installed and the hub
offers it) is turned off in the process, because it bypasses the Range resume and the byte counting above.
"""

from __future__ import annotations

import fnmatch
import hashlib
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

DEFAULT_ENDPOINT = "https://huggingface.co"
# The revision API answers in well under a second; a hub that has not answered in this long is not there.
DEFAULT_TIMEOUT_SECONDS = 10.0
# Tries per file: a cut connection resumes where it stopped, a corrupted file starts over.
DEFAULT_ATTEMPTS = 3
RETRY_PAUSE_SECONDS = 1.0
_HASH_CHUNK_BYTES = 4 * 1024 * 1024


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache, read from the environment now (huggingface_hub reads it once, at import)."""
    from huggingface_hub import constants

    for variable in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(variable):
            return Path(os.environ[variable]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    return Path(constants.HF_HUB_CACHE)


def hub_endpoint() -> str:
    """The hub's address, read from the environment now (``HF_ENDPOINT``; huggingface_hub reads it at import)."""
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def hub_offline() -> bool:
    """``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) as huggingface_hub reads it, but now, not at its import."""
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().upper() in ("1", "ON", "YES", "TRUE")


def is_hub_id(name: str) -> bool:
    """Shaped like a hub repository id ("owner/name"), not like a path."""
    return name.count("/") == 1 and not name.startswith(("/", ".", "~")) and all(name.split("/"))


def _repo_folder(cache_dir: Path, repo_id: str) -> Path:
    return cache_dir / ("models--" + repo_id.replace("/", "--"))


def cached_snapshot(
    repo_id: str, *, required: Sequence[str] = (), revision: str = "main", cache_dir: Path | None = None
) -> Path | None:
    """The cached snapshot directory of ``repo_id`` at ``revision`` when it holds every ``required`` file, else
    None. Offline: a few file lookups."""
    folder = _repo_folder(cache_dir or hub_cache_dir(), repo_id)
    ref = folder / "refs" / revision
    try:
        commit = ref.read_text().strip() if ref.is_file() else revision
    except OSError:
        return None
    snapshot = folder / "snapshots" / commit
    if not snapshot.is_dir() or not all((snapshot / name).is_file() for name in required):
        return None
    return snapshot


@dataclass(frozen=True)
class HubFile:
    """One file of a repository as the hub describes it."""

    path: str  # relative to the repository's root
    size: int
    blob_id: str  # the git object id: of the content, or of the LFS pointer for an LFS file
    sha256: str | None  # LFS files: the content's sha256

    @property
    def blob_name(self) -> str:
        """The name of the file's blob in the cache (huggingface_hub names it after the hub's ETag)."""
        return self.sha256 or self.blob_id

    def mismatch(self, local: Path) -> str | None:
        """Why ``local`` is not this file (size, then hash), or None when it is."""
        size = local.stat().st_size
        if size != self.size:
            return f"{size} bytes instead of {self.size}"
        if self.sha256 is not None:
            digest, expected, kind = hashlib.sha256(), self.sha256, "sha256"
        else:
            # A small file is verified as git does: sha1 over a "blob <size>" header and the content.
            digest, expected, kind = hashlib.sha1(f"blob {size}\0".encode()), self.blob_id, "git blob id"
        with local.open("rb") as content:
            while chunk := content.read(_HASH_CHUNK_BYTES):
                digest.update(chunk)
        actual = digest.hexdigest()
        return None if actual == expected else f"{kind} {actual[:16]}… instead of {expected[:16]}…"


@dataclass(frozen=True)
class DownloadProgress:
    repo_id: str
    file: str  # the file arriving now; empty before the first and after the last
    done_bytes: int
    total_bytes: int  # of the files that had to be downloaded (cached, verified ones are not counted)
    files_done: int
    files_total: int

    @property
    def percent(self) -> int:
        return 100 if self.total_bytes <= 0 else min(100, self.done_bytes * 100 // self.total_bytes)


ProgressCallback = Callable[[DownloadProgress], None]


@dataclass(frozen=True)
class DownloadReport:
    repo_id: str
    commit: str
    snapshot: Path
    files: int  # in the snapshot, all verified
    downloaded: list[str] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)  # found corrupted in the cache, downloaded again
    downloaded_bytes: int = 0


class ModelDownloadError(Exception):
    """A download that did not happen; the message names the model and says why."""

    def __init__(self, repo_id: str, message: str) -> None:
        super().__init__(message)
        self.repo_id = repo_id


class HubUnreachable(ModelDownloadError):
    """The hub did not answer (no network, a firewall, ``HF_HUB_OFFLINE``, a hub that is down)."""


class ModelNotOnHub(ModelDownloadError):
    """The hub answered: no such repository, revision or file (or it needs a token)."""


class CorruptDownload(ModelDownloadError):
    """A file arrived different from the hub's metadata on every attempt."""

    def __init__(self, repo_id: str, path: str, message: str) -> None:
        super().__init__(repo_id, message)
        self.path = path


class TransferFailed(ModelDownloadError):
    """A file could not be transferred (the connection kept failing, the disk is full)."""


def size_text(size: int) -> str:
    """A byte count a person reads at a glance: 512 KB, 1.8 GB."""
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit in ("B", "KB") or value >= 100 else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def _short_reason(error: BaseException, timeout_seconds: float) -> str:
    """What went wrong, in a few words: requests' messages nest the cause three levels deep."""
    import requests

    if isinstance(error, requests.Timeout):
        return f"no answer within {timeout_seconds:g} s"
    text = str(error)
    match = re.search(r"\[Errno -?\d+\] ([^'\")]+)", text)
    if match:
        return match.group(1).strip().rstrip(".")
    if "HF_HUB_OFFLINE" in text or type(error).__name__ == "OfflineModeIsEnabled":
        return "HF_HUB_OFFLINE is set"
    return f"{type(error).__name__}: {text[:200]}"


def _plain_http_without_bars() -> None:
    """huggingface_hub's process-wide switches this module relies on (see the module docstring): its per-file bars
    off (the caller shows progress) and xet off (it would bypass the Range resume and the byte counting)."""
    from huggingface_hub import constants
    from huggingface_hub.utils import disable_progress_bars

    constants.HF_HUB_DISABLE_XET = True
    disable_progress_bars("huggingface_hub.http_get")


class _ProgressWatch:
    """Reports the bytes arriving in the cache's ``.incomplete`` blob every ``interval`` seconds, from one thread:
    huggingface_hub's transfer offers no callback, but it writes every chunk straight into that file."""

    def __init__(
        self, repo_id: str, blobs: Path, files: Sequence[HubFile], report: ProgressCallback, interval: float
    ) -> None:
        self._repo_id = repo_id
        self._blobs = blobs
        self._total = sum(file.size for file in files)
        self._files_total = len(files)
        self._report = report
        self._interval = interval
        self._lock = threading.Lock()
        self._current: HubFile | None = None
        self._done_bytes = 0
        self._files_done = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="model-download-progress", daemon=True)

    def __enter__(self) -> _ProgressWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        if exc[0] is None:
            self._report(self._snapshot())

    def arriving(self, file: HubFile) -> None:
        with self._lock:
            self._current = file

    def arrived(self, file: HubFile) -> None:
        with self._lock:
            self._current = None
            self._done_bytes += file.size
            self._files_done += 1

    def _snapshot(self) -> DownloadProgress:
        with self._lock:
            current, done, files_done = self._current, self._done_bytes, self._files_done
        partial = 0
        if current is not None:
            blob = self._blobs / current.blob_name
            try:
                partial = min(current.size, blob.with_name(f"{blob.name}.incomplete").stat().st_size)
            except OSError:
                # Not started yet, or already moved into place (and being verified).
                partial = current.size if blob.is_file() else 0
        return DownloadProgress(
            self._repo_id,
            current.path if current is not None else "",
            done + partial,
            self._total,
            files_done,
            self._files_total,
        )

    def _run(self) -> None:
        while True:
            try:
                self._report(self._snapshot())
            except Exception:
                # A broken progress display must not break the download.
                log.exception("reporting download progress failed")
            if self._stop.wait(self._interval):
                return


class ModelDownloader:
    """Downloads hub model repositories into the local cache (see the module docstring).

    ``cache_dir`` and ``endpoint`` default to the environment's (``HF_HUB_CACHE``/``HF_HOME``, ``HF_ENDPOINT``),
    read at each call. ``timeout_seconds`` bounds each request's connect and read waits.
    """

    def __init__(
        self,
        *,
        cache_dir: Path | None = None,
        endpoint: str | None = None,
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
        attempts: int = DEFAULT_ATTEMPTS,
        progress_interval_seconds: float = 0.5,
    ) -> None:
        if attempts < 1:
            raise ValueError(f"attempts must be at least 1, got {attempts}")
        self._cache_dir = cache_dir
        self._endpoint = endpoint
        self.timeout_seconds = timeout_seconds
        self._attempts = attempts
        self._progress_interval = progress_interval_seconds

    @property
    def cache_dir(self) -> Path:
        return self._cache_dir or hub_cache_dir()

    @property
    def endpoint(self) -> str:
        return (self._endpoint or hub_endpoint()).rstrip("/")

    def cached(self, repo_id: str, *, required: Sequence[str] = (), revision: str = "main") -> Path | None:
        """The cached snapshot holding every ``required`` file, or None (offline, cheap)."""
        return cached_snapshot(repo_id, required=required, revision=revision, cache_dir=self.cache_dir)

    def download(
        self,
        repo_id: str,
        *,
        revision: str = "main",
        patterns: Sequence[str] | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> DownloadReport:
        """Make the cache hold ``repo_id`` at ``revision``, every file verified; download what is missing or
        corrupted. ``patterns`` (fnmatch, e.g. "*.json") limits the files; None takes all. Blocking."""
        cache_dir, endpoint = self.cache_dir, self.endpoint
        files, commit = self._list_files(repo_id, revision, patterns, endpoint)
        folder = _repo_folder(cache_dir, repo_id)
        snapshot = folder / "snapshots" / commit
        repaired = [file.path for file in files if self._corrupted_in_cache(repo_id, snapshot, file)]
        missing = [file for file in files if not (snapshot / file.path).is_file()]
        if missing:
            _plain_http_without_bars()
            log.info(
                "downloading a model",
                extra={
                    "model": repo_id,
                    "files": len(missing),
                    "size": size_text(sum(f.size for f in missing)),
                    "endpoint": endpoint,
                },
            )
            with _ProgressWatch(
                repo_id, folder / "blobs", missing, on_progress or (lambda _: None), self._progress_interval
            ) as watch:
                for file in missing:
                    watch.arriving(file)
                    self._fetch(repo_id, commit, file, cache_dir, endpoint, snapshot)
                    watch.arrived(file)
        if revision != commit:
            # Last: only now does the revision name a complete, verified snapshot (cached_snapshot's promise).
            (folder / "refs").mkdir(parents=True, exist_ok=True)
            (folder / "refs" / revision).write_text(commit)
        return DownloadReport(
            repo_id,
            commit,
            snapshot,
            len(files),
            downloaded=[file.path for file in missing],
            repaired=repaired,
            downloaded_bytes=sum(file.size for file in missing),
        )

    def _list_files(
        self, repo_id: str, revision: str, patterns: Sequence[str] | None, endpoint: str
    ) -> tuple[list[HubFile], str]:
        import requests
        from huggingface_hub import HfApi
        from huggingface_hub.errors import (
            HfHubHTTPError,
            OfflineModeIsEnabled,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )

        if hub_offline():
            raise self._unreachable(repo_id, endpoint, "HF_HUB_OFFLINE is set")
        try:
            info = HfApi(endpoint=endpoint).model_info(
                repo_id, revision=revision, files_metadata=True, timeout=self.timeout_seconds
            )
        except RepositoryNotFoundError as error:
            raise ModelNotOnHub(
                repo_id,
                f"model {repo_id!r} is not on the hub at {endpoint} (or it is private or gated: set HF_TOKEN "
                f"to a token that may read it): {_short_reason(error, self.timeout_seconds)}",
            ) from None
        except RevisionNotFoundError:
            raise ModelNotOnHub(
                repo_id, f"model {repo_id!r} has no revision {revision!r} on the hub at {endpoint}"
            ) from None
        except (requests.ConnectionError, requests.Timeout, OfflineModeIsEnabled) as error:
            raise self._unreachable(repo_id, endpoint, _short_reason(error, self.timeout_seconds)) from None
        except HfHubHTTPError as error:
            status = error.response.status_code if error.response is not None else "?"
            raise self._unreachable(repo_id, endpoint, f"it answered HTTP {status}") from None
        commit = info.sha
        if not commit or info.siblings is None:
            raise ModelNotOnHub(repo_id, f"the hub at {endpoint} described {repo_id!r} without its files")
        files = []
        for sibling in info.siblings:
            if patterns is not None and not any(fnmatch.fnmatch(sibling.rfilename, p) for p in patterns):
                continue
            if sibling.size is None or sibling.blob_id is None:
                raise ModelNotOnHub(
                    repo_id,
                    f"the hub at {endpoint} gave no size or blob id for {sibling.rfilename!r} of {repo_id!r}: "
                    "the file cannot be verified",
                )
            files.append(
                HubFile(
                    sibling.rfilename,
                    sibling.size,
                    sibling.blob_id,
                    sibling.lfs.sha256 if sibling.lfs is not None else None,
                )
            )
        if not files:
            raise ModelNotOnHub(
                repo_id, f"model {repo_id!r} on the hub at {endpoint} has no files to download"
            )
        return files, commit

    def _unreachable(self, repo_id: str, endpoint: str, reason: str) -> HubUnreachable:
        message = f"the hub at {endpoint} cannot be reached ({reason})"
        cached = self.cached(repo_id)
        if cached is not None:
            message += f"; a copy of {repo_id!r} is in the local cache ({cached}), unverified"
        return HubUnreachable(repo_id, message)

    def _corrupted_in_cache(self, repo_id: str, snapshot: Path, file: HubFile) -> bool:
        """Verify a cached file; one that does not match is removed (to be downloaded again) and reported."""
        local = snapshot / file.path
        if not local.is_file():
            return False  # not there (or a link to a blob that is gone): downloaded as missing
        problem = file.mismatch(local)
        if problem is None:
            return False
        log.warning(
            "a cached model file is corrupted; downloading it again",
            extra={"model": repo_id, "file": file.path, "reason": problem, "path": str(local)},
        )
        _remove(local)
        return True

    def _fetch(
        self, repo_id: str, commit: str, file: HubFile, cache_dir: Path, endpoint: str, snapshot: Path
    ) -> None:
        """One file into the cache, verified, within the attempts."""
        import requests
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import (
            EntryNotFoundError,
            LocalEntryNotFoundError,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )

        failure = ""
        corrupted = False
        for attempt in range(1, self._attempts + 1):
            if attempt > 1:
                log.warning(
                    "retrying a model file",
                    extra={"model": repo_id, "file": file.path, "attempt": attempt, "reason": failure},
                )
                time.sleep(RETRY_PAUSE_SECONDS)
            try:
                local = Path(
                    hf_hub_download(
                        repo_id,
                        file.path,
                        revision=commit,
                        cache_dir=cache_dir,
                        endpoint=endpoint,
                        etag_timeout=self.timeout_seconds,
                    )
                )
            except LocalEntryNotFoundError as error:
                # Its HEAD request failed (a connection error, as a lookup that found nothing cached).
                failure, corrupted = _short_reason(error.__cause__ or error, self.timeout_seconds), False
                continue
            except (EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError) as error:
                raise ModelNotOnHub(
                    repo_id, f"{file.path!r} of model {repo_id!r} is gone from the hub at {endpoint}: {error}"
                ) from None
            except requests.RequestException as error:
                # A cut connection keeps the .incomplete blob: the next attempt resumes it with a Range request.
                failure, corrupted = _short_reason(error, self.timeout_seconds), False
                continue
            except OSError as error:
                if "Consistency check failed" not in str(error):
                    raise TransferFailed(
                        repo_id,
                        f"{file.path!r} of model {repo_id!r} could not be written to {cache_dir}: {error}",
                    ) from None
                # The wrong number of bytes arrived: resuming would only add to them.
                _remove(_repo_folder(cache_dir, repo_id) / "blobs" / f"{file.blob_name}.incomplete")
                failure, corrupted = "the wrong number of bytes arrived", True
                continue
            problem = file.mismatch(local)
            if problem is None:
                return
            _remove(snapshot / file.path)
            failure, corrupted = f"{file.path} arrived corrupted: {problem}", True
        if corrupted:
            raise CorruptDownload(
                repo_id,
                file.path,
                f"{file.path!r} of model {repo_id!r} did not match the hub's metadata in {self._attempts} "
                f"attempt(s) ({failure}); nothing was kept",
            )
        raise TransferFailed(
            repo_id,
            f"{file.path!r} of model {repo_id!r} could not be downloaded from {endpoint} in {self._attempts} "
            f"attempt(s) ({failure}); run it again to resume",
        )


def _remove(pointer: Path) -> None:
    """A snapshot file and the blob it points to (a link's target, or the file itself where links are copies)."""
    target = Path(os.path.realpath(pointer))
    for path in (pointer, target):
        try:
            path.unlink(missing_ok=True)
        except OSError:
            log.warning("could not remove a cached model file", extra={"path": str(path)})
