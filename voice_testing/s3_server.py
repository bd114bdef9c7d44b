"""A real S3 server for tests: ``moto`` running as a subprocess on loopback.

    with MotoServer() as server:
        store = S3ObjectStore(server.endpoint, server.access_key, server.secret_key, "bucket")
        ...
        server.reset()  # wipe every bucket between tests
        server.stop(keep_objects=True)  # the store goes away (connections refused), as a restarting MinIO does
        server.start()  # back on the same port, with the buckets and objects it had

The process speaks S3 over HTTP like MinIO does, so the adapter's whole stack (SDK, signing, connection pool,
retries) is exercised; nothing is mocked in-process.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from types import TracebackType
from typing import IO, Any

_STARTUP_TIMEOUT = 20.0
_STOP_TIMEOUT = 5.0


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def unique_bucket_name(prefix: str = "test") -> str:
    """A bucket name no other test uses (valid for S3: lowercase, digits, '-')."""
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


class MotoServerError(RuntimeError):
    """The moto server could not be started or answered badly."""


class MotoServer:
    """Start with ``start()`` or ``with``; stop with ``stop()`` (also on exit of the ``with`` block)."""

    access_key = "testing"
    secret_key = "testing"
    region = "us-east-1"

    def __init__(self, host: str = "127.0.0.1", startup_timeout: float = _STARTUP_TIMEOUT) -> None:
        self.host = host
        self.startup_timeout = startup_timeout
        self.port: int | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        # What stop(keep_objects=True) read out: bucket -> key -> (content type, bytes).
        self._kept: dict[str, dict[str, tuple[str, bytes]]] | None = None

    @property
    def endpoint(self) -> str:
        if self.port is None:
            raise MotoServerError("moto server is not started")
        return f"http://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def _environment(self) -> dict[str, str]:
        env = {
            name: value
            for name, value in os.environ.items()
            # Nothing from the developer's AWS setup may leak in (profiles, real endpoints, proxies).
            if not name.startswith(("AWS_", "MOTO_", "BOTO_"))
            and name.lower() not in ("http_proxy", "https_proxy")
        }
        env.update(
            {
                "AWS_DEFAULT_REGION": self.region,
                "AWS_ACCESS_KEY_ID": self.access_key,
                "AWS_SECRET_ACCESS_KEY": self.secret_key,
                "AWS_EC2_METADATA_DISABLED": "true",
                "NO_PROXY": "*",
                "no_proxy": "*",
                "PYTHONUNBUFFERED": "1",
            }
        )
        return env

    def start(self) -> MotoServer:
        """Start on a free port, or on the port of the previous start (a restart: clients keep their endpoint),
        with the buckets and objects that ``stop(keep_objects=True)`` kept."""
        if self._process is not None:
            raise MotoServerError("moto server already started")
        if self.port is None:
            self.port = _free_port(self.host)
        # The server logs every request: to a file, not a pipe nobody drains (a full pipe stalls the server).
        self._log = tempfile.TemporaryFile(prefix="moto-server-")  # noqa: SIM115 - closed by stop()
        self._process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", self.host, "-p", str(self.port)],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=self._environment(),
        )
        try:
            self._wait_until_up()
            self._put_back_kept_objects()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_until_up(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + self.startup_timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                status = self._process.returncode
                output = self._output()
                raise MotoServerError(f"moto server exited with status {status} while starting:\n{output}")
            try:
                with urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=2):
                    return
            except urllib.error.HTTPError:
                return  # any HTTP answer means it is serving
            except OSError as exc:
                last_error = exc
            time.sleep(0.1)
        raise MotoServerError(
            f"moto server at {self.endpoint} did not answer within {self.startup_timeout:.0f} s "
            f"(last error: {last_error}):\n{self._output()}"
        )

    def _output(self, limit: int = 8000) -> str:
        if self._log is None:
            return ""
        try:
            self._log.flush()
            self._log.seek(0)
            text = self._log.read().decode("utf-8", "replace")
        except (OSError, ValueError):
            return "<output unavailable>"
        return text[-limit:] if text else "<no output>"

    def reset(self) -> None:
        """Wipe all state (buckets, objects) of the running server."""
        request = urllib.request.Request(f"{self.endpoint}/moto-api/reset", method="POST", data=b"")
        with urllib.request.urlopen(request, timeout=10) as response:
            if response.status != 200:
                raise MotoServerError(f"moto reset answered HTTP {response.status}")

    def _s3_client(self) -> Any:
        import boto3  # a dev dependency, needed only by restarts that keep objects

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
        )

    def _read_out_objects(self) -> dict[str, dict[str, tuple[str, bytes]]]:
        client = self._s3_client()
        kept: dict[str, dict[str, tuple[str, bytes]]] = {}
        for bucket in client.list_buckets().get("Buckets", []):
            name = bucket["Name"]
            kept[name] = {}
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
                for item in page.get("Contents", []):
                    got = client.get_object(Bucket=name, Key=item["Key"])
                    kept[name][item["Key"]] = (got.get("ContentType", ""), got["Body"].read())
        return kept

    def _put_back_kept_objects(self) -> None:
        kept, self._kept = self._kept, None
        if not kept:
            return
        client = self._s3_client()
        for bucket, objects in kept.items():
            client.create_bucket(Bucket=bucket)
            for key, (content_type, data) in objects.items():
                client.put_object(Bucket=bucket, Key=key, Body=data, ContentType=content_type)

    def stop(self, keep_objects: bool = False) -> None:
        """Stop the process. ``keep_objects``: read every bucket and object out first, for the next ``start()`` to
        put back (moto keeps nothing across a restart; a MinIO keeps its disk)."""
        if keep_objects and self.running:
            self._kept = self._read_out_objects()
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=_STOP_TIMEOUT)
        if self._log is not None:
            with contextlib.suppress(OSError):
                self._log.close()
            self._log = None

    def __enter__(self) -> MotoServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
