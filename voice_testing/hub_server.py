"""A Hugging Face hub on loopback for tests: model repositories served from directories on disk.

    with LocalHub() as hub:
        hub.add_model("Org/Tiny", directory)
        os.environ["HF_ENDPOINT"] = hub.endpoint   # huggingface_hub (and ModelDownloader) talk to it
        ...
        assert ("GET", "/lfs/...", "bytes=500000-") in hub.requests

It speaks the part of the hub's protocol that huggingface_hub 0.36 uses to download:

* ``GET /api/models/{repo}[/revision/{revision}]`` — the model info: ``sha`` (the commit) and ``siblings`` with
  ``size``, ``blobId`` (the git object id) and, for LFS files, ``lfs`` (``sha256``, ``size``, ``pointerSize``).
* ``HEAD``/``GET /{repo}/resolve/{revision}/{path}`` — a small file is answered directly with ``X-Repo-Commit`` and
  its git blob id as ``ETag``; an LFS file is redirected (302, an absolute ``Location`` on the same host, as the hub
  sends to its CDN) with ``X-Linked-Etag`` (the sha256) and ``X-Linked-Size``, which huggingface_hub prefers.
* ``GET /lfs/{sha256}`` — the LFS content, honouring ``Range: bytes=N-`` (206 with ``Content-Range``).
* Errors carry ``X-Error-Code`` (``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``), from which
  huggingface_hub raises its typed errors.

No ``X-Xet-*`` header or xet ``Link`` is ever sent, so huggingface_hub never switches to xet transfers.

Faults, for the failure paths: :meth:`LocalHub.cut_once` sends part of a file and drops the connection (once),
:meth:`LocalHub.corrupt` serves different bytes of the same length, ``bytes_per_second`` slows every transfer.
Every request is recorded in :attr:`LocalHub.requests` as (method, path, Range header or None).
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from urllib.parse import unquote, urlsplit

# The suffixes the hub's default .gitattributes sends to LFS.
LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".onnx", ".msgpack", ".h5", ".npy")
_PIECE_BYTES = 64 * 1024


def git_blob_id(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


@dataclass(frozen=True)
class _File:
    path: str
    source: Path
    size: int
    blob_id: str
    sha256: str | None
    pointer_size: int

    def sibling(self) -> dict[str, object]:
        entry: dict[str, object] = {"rfilename": self.path, "size": self.size, "blobId": self.blob_id}
        if self.sha256 is not None:
            entry["lfs"] = {"sha256": self.sha256, "size": self.size, "pointerSize": self.pointer_size}
        return entry


@dataclass
class _Repo:
    repo_id: str
    commit: str
    files: dict[str, _File] = field(default_factory=dict)


def _describe(path: str, source: Path) -> _File:
    content = source.read_bytes()
    if source.suffix in LFS_SUFFIXES:
        sha256 = hashlib.sha256(content).hexdigest()
        pointer = (
            f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {len(content)}\n".encode()
        )
        return _File(path, source, len(content), git_blob_id(pointer), sha256, len(pointer))
    return _File(path, source, len(content), git_blob_id(content), None, 0)


class LocalHub:
    """Start with ``start()`` or ``with``; ``stop()`` (or leaving the block) closes it."""

    def __init__(self, *, host: str = "127.0.0.1", bytes_per_second: float | None = None) -> None:
        self.host = host
        self.bytes_per_second = bytes_per_second
        self.requests: list[tuple[str, str, str | None]] = []
        self._repos: dict[str, _Repo] = {}
        self._cuts: dict[tuple[str, str], int] = {}
        self._corrupt: set[tuple[str, str]] = set()
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        if self._server is None:
            raise RuntimeError("the hub is not started")
        return f"http://{self.host}:{self._server.server_address[1]}"

    def client_environment(self, cache_dir: Path) -> dict[str, str]:
        """What a client process needs to download from this hub into ``cache_dir`` (a proxy must not take the
        loopback calls)."""
        return {"HF_ENDPOINT": self.endpoint, "HF_HUB_CACHE": str(cache_dir), "NO_PROXY": self.host}

    def add_model(self, repo_id: str, directory: Path) -> str:
        """Serve every file under ``directory`` as the model ``repo_id``; returns its commit id."""
        files = {
            source.relative_to(directory).as_posix(): source
            for source in sorted(directory.rglob("*"))
            if source.is_file()
        }
        described = {path: _describe(path, source) for path, source in files.items()}
        commit = hashlib.sha1(
            "".join(f"{path}:{file.blob_id}\n" for path, file in described.items()).encode()
        ).hexdigest()
        with self._lock:
            self._repos[repo_id] = _Repo(repo_id, commit, described)
        return commit

    def file_sha256(self, repo_id: str, path: str) -> str | None:
        return self._repos[repo_id].files[path].sha256

    def cut_once(self, repo_id: str, path: str, after_bytes: int) -> None:
        """The next GET of ``path`` sends ``after_bytes`` of what it promised, then drops the connection."""
        with self._lock:
            self._cuts[(repo_id, path)] = after_bytes

    def corrupt(self, repo_id: str, path: str) -> None:
        """Serve ``path`` with its bytes changed (same length) until further notice."""
        with self._lock:
            self._corrupt.add((repo_id, path))

    def file_requests(self, method: str = "GET") -> list[tuple[str, str | None]]:
        """(path, Range) of the file transfers seen (resolve and LFS), for assertions."""
        with self._lock:
            return [
                (path, range_header)
                for seen_method, path, range_header in self.requests
                if seen_method == method and not path.startswith("/api/")
            ]

    # The server side.

    def _record(self, method: str, path: str, range_header: str | None) -> None:
        with self._lock:
            self.requests.append((method, path, range_header))

    def _take_cut(self, repo_id: str, path: str) -> int | None:
        with self._lock:
            return self._cuts.pop((repo_id, path), None)

    def _is_corrupt(self, repo_id: str, path: str) -> bool:
        with self._lock:
            return (repo_id, path) in self._corrupt

    def _repo(self, repo_id: str) -> _Repo | None:
        with self._lock:
            return self._repos.get(repo_id)

    def _lfs_file(self, sha256: str) -> tuple[_Repo, _File] | None:
        with self._lock:
            for repo in self._repos.values():
                for file in repo.files.values():
                    if file.sha256 == sha256:
                        return repo, file
        return None

    def start(self) -> LocalHub:
        hub = self

        class Handler(_HubHandler):
            local_hub = hub

        self._server = ThreadingHTTPServer((self.host, 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="local-hub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> LocalHub:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


_INFO = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)(?:/revision/(?P<revision>[^/]+))?$")
_RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<revision>[^/]+)/(?P<path>.+)$")
_LFS = re.compile(r"^/lfs/(?P<sha256>[0-9a-f]{64})$")
_RANGE = re.compile(r"^bytes=(?P<start>\d+)-(?P<end>\d*)$")


class _HubHandler(BaseHTTPRequestHandler):
    local_hub: LocalHub
    protocol_version = "HTTP/1.1"  # keep-alive, as the hub; requests' pooled connections expect it

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the test reads :attr:`LocalHub.requests` instead."""

    def do_HEAD(self) -> None:
        self._answer(send_body=False)

    def do_GET(self) -> None:
        self._answer(send_body=True)

    def _answer(self, *, send_body: bool) -> None:
        path = unquote(urlsplit(self.path).path)
        self.local_hub._record(self.command, path, self.headers.get("Range"))
        if match := _INFO.match(path):
            self._info(match["repo"], match["revision"] or "main")
        elif match := _RESOLVE.match(path):
            self._resolve(match["repo"], match["revision"], match["path"], send_body)
        elif match := _LFS.match(path):
            found = self.local_hub._lfs_file(match["sha256"])
            if found is None:
                self._error(404, "EntryNotFound", "no such LFS object")
            else:
                self._content(found[0], found[1], send_body, {})
        else:
            self._error(404, "", "not a path this hub serves")

    def _revision(self, repo_id: str, revision: str) -> _Repo | None:
        repo = self.local_hub._repo(repo_id)
        if repo is None:
            self._error(404, "RepoNotFound", f"Repository {repo_id} not found")
            return None
        if revision not in ("main", repo.commit):
            self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
            return None
        return repo

    def _info(self, repo_id: str, revision: str) -> None:
        repo = self._revision(repo_id, revision)
        if repo is None:
            return
        body = json.dumps(
            {
                "_id": repo.commit[:24],
                "id": repo.repo_id,
                "modelId": repo.repo_id,
                "sha": repo.commit,
                "private": False,
                "siblings": [file.sibling() for file in repo.files.values()],
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _resolve(self, repo_id: str, revision: str, path: str, send_body: bool) -> None:
        repo = self._revision(repo_id, revision)
        if repo is None:
            return
        file = repo.files.get(path)
        if file is None:
            self._error(404, "EntryNotFound", f"{path} does not exist", {"X-Repo-Commit": repo.commit})
            return
        if file.sha256 is None:
            self._content(repo, file, send_body, {"X-Repo-Commit": repo.commit, "ETag": f'"{file.blob_id}"'})
            return
        # An LFS file: the hub redirects to its CDN, naming the content in the X-Linked-* headers.
        self.send_response(302)
        self.send_header("Location", f"{self.local_hub.endpoint}/lfs/{file.sha256}")
        self.send_header("X-Repo-Commit", repo.commit)
        self.send_header("ETag", f'"{file.blob_id}"')
        self.send_header("X-Linked-Etag", f'"{file.sha256}"')
        self.send_header("X-Linked-Size", str(file.size))
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _content(self, repo: _Repo, file: _File, send_body: bool, headers: dict[str, str]) -> None:
        hub = self.local_hub
        content = file.source.read_bytes()
        if hub._is_corrupt(repo.repo_id, file.path):
            content = bytes(byte ^ 0xFF for byte in content[:64]) + content[64:]
        start, end = 0, len(content)
        range_header = self.headers.get("Range")
        match = _RANGE.match(range_header or "")
        if match:
            start = int(match["start"])
            end = min(len(content), int(match["end"]) + 1) if match["end"] else len(content)
            if start >= len(content):
                self._error(416, "", "range not satisfiable", {"Content-Range": f"bytes */{len(content)}"})
                return
        self.send_response(206 if match else 200)
        for name, value in headers.items():
            self.send_header(name, value)
        if file.sha256 is not None:
            self.send_header("ETag", f'"{file.sha256}"')
        self.send_header("Accept-Ranges", "bytes")
        if match:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{len(content)}")
        self.send_header("Content-Length", str(end - start))
        self.end_headers()
        if not send_body:
            return
        cut = hub._take_cut(repo.repo_id, file.path)
        body = content[start:end] if cut is None else content[start : start + cut]
        for offset in range(0, len(body), _PIECE_BYTES):
            piece = body[offset : offset + _PIECE_BYTES]
            self.wfile.write(piece)
            if hub.bytes_per_second:
                time.sleep(len(piece) / hub.bytes_per_second)
        if cut is not None:
            # Fewer bytes than Content-Length promised, then the connection is gone: a cut transfer.
            self.wfile.flush()
            self.close_connection = True

    def _error(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        body = json.dumps({"error": message}).encode()
        self.send_response(status)
        if code:
            self.send_header("X-Error-Code", code)
            self.send_header("X-Error-Message", message)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)) if self.command != "HEAD" else "0")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
