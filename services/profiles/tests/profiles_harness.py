"""A real profile server on port 0 with a real channel, plus ways to look behind it (rows, objects)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
from grpc import aio
from sqlalchemy import func, select

from voice.profiles.v1 import generation_ingest_service_pb2_grpc as ingest_pb_grpc
from voice.profiles.v1 import profiles_service_pb2 as pb
from voice.profiles.v1 import profiles_service_pb2_grpc as pb_grpc
from voice_common.config import CommonSettings
from voice_common.object_store import ObjectStore
from voice_common.server.bootstrap import VoiceServer, build_server
from voice_profiles.app import ProfilesApp
from voice_profiles.repositories.models import GenerationRow, PendingObjectDeletionRow, ProfileRow, SampleRow
from voice_profiles.settings import ProfilesSettings
from voice_testing.client_races import server_answer


class FakeClock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        # Advance a microsecond per reading so creation times are distinct and ordered, like a real clock.
        self.now += timedelta(microseconds=1)
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


def tenant_metadata(tenant: str) -> tuple[tuple[str, str], ...]:
    return (("x-voice-tenant", tenant),)


@dataclass
class Harness:
    app: ProfilesApp
    server: VoiceServer
    channel: aio.Channel
    stub: pb_grpc.ProfileServiceStub
    # The internal service beside it, on the same channel: where generations are stored (what TTS calls).
    ingest: ingest_pb_grpc.GenerationIngestServiceStub
    store: ObjectStore

    async def rows(self, tenant: str) -> dict[str, int]:
        counts = {}
        async with self.app.database.transaction() as tx:
            for name, model in (
                ("profiles", ProfileRow),
                ("samples", SampleRow),
                ("generations", GenerationRow),
            ):
                counts[name] = (
                    await tx.session.execute(
                        select(func.count()).select_from(model).where(model.tenant_id == tenant)
                    )
                ).scalar_one()
        return counts

    async def pending_deletions(self) -> list[str]:
        async with self.app.database.transaction() as tx:
            return list((await tx.session.execute(select(PendingObjectDeletionRow.object_key))).scalars())

    async def objects(self, tenant: str) -> list[str]:
        return sorted([key async for key in self.store.list_keys(f"tenants/{tenant}/")])

    async def close(self) -> None:
        await self.channel.close(None)
        await self.server.stop(0)


async def start_harness(
    common: CommonSettings,
    settings: ProfilesSettings | None = None,
    *,
    store: ObjectStore | None = None,
    clock: Callable[[], datetime] | None = None,
) -> Harness:
    settings = settings or ProfilesSettings(port=0, metrics_port=0)
    kwargs = {"clock": clock} if clock is not None else {}
    app = await ProfilesApp.open(common, settings, store=store, migrate=True, **kwargs)
    server = build_server(
        settings=common, services=app.registrations(), host="127.0.0.1", port=0, readiness=app.readiness
    )
    await server.start()
    for _ in range(100):
        if server.serving:
            break
        await asyncio.sleep(0.05)
    assert server.serving, server.last_readiness_error
    channel = aio.insecure_channel(
        f"127.0.0.1:{server.port}",
        options=[("grpc.max_receive_message_length", 64 * 1024 * 1024)],
    )
    return Harness(
        app,
        server,
        channel,
        pb_grpc.ProfileServiceStub(channel),
        ingest_pb_grpc.GenerationIngestServiceStub(channel),
        app.store,
    )


async def expect_error(call: Any, code: grpc.StatusCode) -> aio.AioRpcError:
    """Await a call (or drain a response stream) and check it failed with ``code``.

    ``call`` may also be a function that starts the call: then a call whose answer the aio client lost (see
    :func:`voice_testing.client_races.server_answer`) is made again, so the assertion reads the server's answer."""
    error = await server_answer(call if callable(call) else lambda: call)
    assert error.code() == code, f"expected {code.name}, got {error.code().name}: {error.details()}"
    return error


def sample_requests(
    profile_id: str,
    data: bytes,
    *,
    reference_text: str | None = "Hello there.",
    chunk: int = 64 * 1024,
    file_name: str = "sample.wav",
    mime_type: str = "audio/wav",
) -> list[pb.AddSampleRequest]:
    metadata = pb.SampleMetadata(profile_id=profile_id, file_name=file_name, mime_type=mime_type)
    if reference_text is not None:
        metadata.reference_text = reference_text
    messages = [pb.AddSampleRequest(metadata=metadata)]
    messages += [pb.AddSampleRequest(chunk=data[i : i + chunk]) for i in range(0, len(data), chunk)]
    return messages
