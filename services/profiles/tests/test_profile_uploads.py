"""Uploads through a real server: upload leases (nothing orphaned, even mid-write or when a drain cancels an upload)
and request ids (a retry returns the first result instead of a copy). Both configurations."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Awaitable, Callable, Iterator
from datetime import timedelta
from typing import Any

import grpc
import pytest
from field_helpers import new_profile
from grpc import aio
from profiles_harness import FakeClock, Harness, expect_error, sample_requests, tenant_metadata
from sqlalchemy import select
from test_profile_archive import export
from test_profile_generations import store_generation

from voice.profiles.v1 import profiles_service_pb2 as pb
from voice_common.object_store import ObjectStore
from voice_profiles.repositories.models import UploadRequestRow
from voice_profiles.settings import ProfilesSettings
from voice_testing.faulty_store import FaultyObjectStore
from voice_testing.media_files import encode_file, speechlike

MakeHarness = Callable[..., Awaitable[Harness]]


def clip(seconds: float = 2.5, seed: int = 0) -> bytes:
    return encode_file(speechlike(seconds, seed=seed), 24000, "wav")


class HeldStore(FaultyObjectStore):
    """Puts of keys containing ``hold`` wait in a worker thread until ``release`` is set, as a slow store's put
    does: cancelling the caller does not stop them (the real stores' puts run in threads too). It never closes
    the store it wraps (borrowed from the session's harness)."""

    def __init__(self, inner: ObjectStore, hold: str) -> None:
        super().__init__(inner)
        self.hold = hold
        self.release = threading.Event()
        self.held = 0  # puts that reached the hold
        self.landed = 0  # held puts that finished
        self.passed = 0  # puts of other keys that finished
        self.reached: asyncio.Event = asyncio.Event()
        self._changed = asyncio.Condition()

    async def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        if self.hold not in key:
            await super().put(key, data, content_type)
            async with self._changed:
                self.passed += 1
                self._changed.notify_all()
            return
        loop = asyncio.get_running_loop()
        self.held += 1
        self.reached.set()
        await self._count(0)

        def slow_put() -> None:
            self.release.wait(10)
            asyncio.run_coroutine_threadsafe(self.inner.put(key, data, content_type), loop).result(30)
            asyncio.run_coroutine_threadsafe(self._count(1), loop).result(30)

        await asyncio.to_thread(slow_put)

    async def _count(self, landed: int) -> None:
        async with self._changed:
            self.landed += landed
            self._changed.notify_all()

    async def until(self, condition: Callable[[], bool]) -> None:
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(condition), 30)

    async def close(self) -> None:
        pass


@pytest.fixture
def hold_puts(harness: Harness) -> Iterator[Callable[[str], HeldStore]]:
    """HeldStores around the session's store, released at the end of the test whatever happens (a put left
    waiting would hold a worker thread of the loop's executor)."""
    made: list[HeldStore] = []

    def make(hold: str) -> HeldStore:
        made.append(HeldStore(harness.store, hold))
        return made[-1]

    yield make
    for store in made:
        store.release.set()


async def tenant_outbox(harness: Harness, tenant: str) -> list[str]:
    return [key for key in await harness.pending_deletions() if key.startswith(f"tenants/{tenant}/")]


def sample_call(
    harness: Harness, tenant: str, profile_id: str, data: bytes, request_id: str = "", **metadata: str
) -> Callable[[], Any]:
    """A function that starts AddSample (expect_error retries a call whose answer the client lost)."""

    def start() -> Any:
        messages = sample_requests(profile_id, data, **metadata)
        messages[0].metadata.request_id = request_id
        return harness.stub.AddSample(iter(messages), metadata=tenant_metadata(tenant))

    return start


async def add(
    harness: Harness, tenant: str, profile_id: str, data: bytes, request_id: str = "", **md: str
) -> pb.Sample:
    response: pb.AddSampleResponse = await sample_call(harness, tenant, profile_id, data, request_id, **md)()
    return response.sample


# -- upload leases ---------------------------------------------------------------------------------


async def test_objects_of_an_upload_being_stored_are_pending_not_orphans(
    harness: Harness, make_harness: MakeHarness, hold_puts: Callable[[str], HeldStore], tenant: str
) -> None:
    """The original is in the store, the normalised audio is still being written: the doctor sees the keys leased
    in the outbox (pending), not orphaned; the commit takes them out of the outbox."""
    held = hold_puts("normalized")
    slow = await make_harness(store=held)
    profile = await new_profile(slow, tenant)
    call = asyncio.ensure_future(add(slow, tenant, profile.id, clip()))
    await held.until(lambda: held.held == 1 and held.passed == 1)
    objects = await harness.objects(tenant)
    assert [key.rsplit("/", 1)[1] for key in objects] == ["original"]

    report = await harness.app.doctor.examine()
    assert not set(objects) & set(report.objects_without_rows), "an upload in progress is not an orphan"
    assert len(await tenant_outbox(harness, tenant)) == 2  # both keys, leased before the first write

    held.release.set()
    sample = await asyncio.wait_for(call, 20)
    assert await tenant_outbox(harness, tenant) == []
    assert len(await harness.objects(tenant)) == 2
    stored = (await harness.app.samples.get(tenant, sample.id)).original_key
    assert stored in await harness.objects(tenant)


async def test_a_drain_that_cancels_an_upload_waits_for_its_undo(
    harness: Harness, make_harness: MakeHarness, hold_puts: Callable[[str], HeldStore], tenant: str
) -> None:
    """The server stops (cancelling the call) while the normalised audio's put still runs in its thread: closing
    the service waits for that put to land and then deletes both objects, so a drained process leaves nothing."""
    held = hold_puts("normalized")
    draining = await make_harness(store=held)
    profile = await new_profile(draining, tenant)
    call = asyncio.ensure_future(add(draining, tenant, profile.id, clip()))
    await asyncio.wait_for(held.reached.wait(), 10)

    asyncio.get_running_loop().call_later(0.3, held.release.set)
    await draining.server.stop(0)
    with pytest.raises(aio.AioRpcError) as cancelled:
        await call
    assert cancelled.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
    await draining.app.close()

    await held.until(
        lambda: held.landed == held.held
    )  # the put the cancelled call had started is in the store by now, if not deleted
    assert await harness.objects(tenant) == []
    assert await tenant_outbox(harness, tenant) == []
    assert (await harness.rows(tenant))["samples"] == 0


async def test_an_upload_that_outlasts_its_lease_is_not_kept(
    harness: Harness, make_harness: MakeHarness, hold_puts: Callable[[str], HeldStore], tenant: str
) -> None:
    """Past its lease the sweeper may be deleting a create's objects, so the create must not commit them."""
    held = hold_puts("normalized")
    clock = FakeClock()
    slow = await make_harness(store=held, clock=clock)
    profile = await new_profile(slow, tenant)
    call = sample_call(slow, tenant, profile.id, clip())()
    await held.until(lambda: held.held == 1)
    clock.advance(timedelta(hours=1, seconds=1))  # PROFILES_UPLOAD_LEASE_SECONDS: 1 h
    held.release.set()
    error = await expect_error(call, grpc.StatusCode.ABORTED)
    assert "longer than its lease" in error.details()
    assert await harness.objects(tenant) == []
    assert await tenant_outbox(harness, tenant) == []
    assert (await harness.rows(tenant))["samples"] == 0


# -- request ids -----------------------------------------------------------------------------------


async def test_a_retry_with_the_same_request_id_returns_the_first_sample(
    harness: Harness, tenant: str
) -> None:
    profile = await new_profile(harness, tenant)
    request_id = str(uuid.uuid4())
    first = await add(harness, tenant, profile.id, clip(), request_id)
    again = await add(harness, tenant, profile.id, clip(), request_id)
    assert again.id == first.id and again.audio_sha256 == first.audio_sha256
    assert (await harness.rows(tenant))["samples"] == 1
    assert len(await harness.objects(tenant)) == 2
    assert await tenant_outbox(harness, tenant) == []
    # Without a request id every call creates.
    assert (await add(harness, tenant, profile.id, clip())).id != first.id


async def test_the_same_request_id_with_other_content_is_refused(harness: Harness, tenant: str) -> None:
    profile = await new_profile(harness, tenant)
    await add(harness, tenant, profile.id, clip(), "upload-1")
    other_bytes = await expect_error(
        sample_call(harness, tenant, profile.id, clip(seed=7), "upload-1"),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    assert "request_id 'upload-1' was already used for a different AddSample" in other_bytes.details()
    await expect_error(
        sample_call(harness, tenant, profile.id, clip(), "upload-1", file_name="other.wav"),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    assert (await harness.rows(tenant))["samples"] == 1
    assert len(await harness.objects(tenant)) == 2


async def test_request_ids_are_scoped_by_tenant_and_operation(harness: Harness, tenant: str) -> None:
    other_tenant = f"{tenant}-b"
    mine = await new_profile(harness, tenant)
    theirs = await new_profile(harness, other_tenant)
    sample = await add(harness, tenant, mine.id, clip(), "shared-id")
    their_sample = await add(harness, other_tenant, theirs.id, clip(), "shared-id")
    assert their_sample.id != sample.id
    assert (await harness.rows(tenant))["samples"] == 1 and (await harness.rows(other_tenant))["samples"] == 1
    generation = await store_generation(harness, tenant, clip(1.0), request_id="shared-id")
    assert generation.id not in (sample.id, their_sample.id)


async def test_two_uploads_racing_with_one_request_id_make_one_sample(
    harness: Harness, make_harness: MakeHarness, hold_puts: Callable[[str], HeldStore], tenant: str
) -> None:
    """Both uploads are past the request-id lookup and writing their objects when they meet: one commits, the
    other finds the id taken, deletes its own objects and answers with the winner's sample."""
    held = hold_puts("original")
    racing = await make_harness(store=held)
    profile = await new_profile(racing, tenant)
    calls = [asyncio.ensure_future(add(racing, tenant, profile.id, clip(), "race")) for _ in range(2)]
    await held.until(lambda: held.held == 2)  # both are writing
    held.release.set()
    first, second = await asyncio.wait_for(asyncio.gather(*calls), 30)
    assert first.id == second.id
    assert (await harness.rows(tenant))["samples"] == 1
    assert held.held == 2 and held.put_calls == 2  # each wrote its original and its normalised audio ...
    assert len(await harness.objects(tenant)) == 2  # ... and the loser's are gone
    assert await tenant_outbox(harness, tenant) == []


async def test_a_retry_is_answered_even_when_the_first_attempt_filled_the_profile(
    make_harness: MakeHarness, tenant: str
) -> None:
    small = await make_harness(settings=ProfilesSettings(port=0, metrics_port=0, max_samples_per_profile=1))
    profile = await new_profile(small, tenant)
    first = await add(small, tenant, profile.id, clip(), "fills-it")
    assert (await add(small, tenant, profile.id, clip(), "fills-it")).id == first.id
    await expect_error(
        sample_call(small, tenant, profile.id, clip(), "another"), grpc.StatusCode.FAILED_PRECONDITION
    )


async def test_a_retry_after_the_sample_was_deleted_says_so(harness: Harness, tenant: str) -> None:
    profile = await new_profile(harness, tenant)
    sample = await add(harness, tenant, profile.id, clip(), "gone")
    await harness.stub.DeleteSample(pb.DeleteSampleRequest(id=sample.id), metadata=tenant_metadata(tenant))
    error = await expect_error(
        sample_call(harness, tenant, profile.id, clip(), "gone"), grpc.StatusCode.FAILED_PRECONDITION
    )
    assert sample.id in error.details() and "deleted" in error.details()
    assert await harness.objects(tenant) == []


@pytest.mark.parametrize("request_id", ["has space", "x" * 129, "tab\there", "é"])
async def test_a_malformed_request_id_is_invalid_argument(
    harness: Harness, tenant: str, request_id: str
) -> None:
    profile = await new_profile(harness, tenant)
    error = await expect_error(
        sample_call(harness, tenant, profile.id, clip(), request_id), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert "metadata.request_id" in error.details()
    assert await harness.objects(tenant) == []


async def test_generation_and_import_retries_return_the_first_result(harness: Harness, tenant: str) -> None:
    audio = clip(1.0)
    generation = await store_generation(harness, tenant, audio, request_id="tts-1")
    assert (await store_generation(harness, tenant, audio, request_id="tts-1")).id == generation.id
    await expect_error(
        store_generation(harness, tenant, audio, request_id="tts-1", text="Other words."),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    assert (await harness.rows(tenant))["generations"] == 1

    profile = await new_profile(harness, tenant, name="Exported")
    await add(harness, tenant, profile.id, clip())
    _, archive = await export(harness, tenant, profile.id)

    first = await _import(harness, tenant, archive, "imp-1")
    again = await _import(harness, tenant, archive, "imp-1")
    assert again.profile.id == first.profile.id and again.sample_count == 1
    assert (await harness.rows(tenant))["profiles"] == 2  # the exported one and one import
    assert len(await harness.objects(tenant)) == 2 + 1 + 2  # two samples, one generation


async def _import(harness: Harness, tenant: str, archive: bytes, request_id: str) -> pb.ImportProfileResponse:
    messages = [
        pb.ImportProfileRequest(metadata=pb.ImportProfileMetadata(name="Imported", request_id=request_id))
    ]
    messages += [pb.ImportProfileRequest(chunk=archive[i : i + 65536]) for i in range(0, len(archive), 65536)]
    response: pb.ImportProfileResponse = await harness.stub.ImportProfile(
        iter(messages), metadata=tenant_metadata(tenant)
    )
    return response


async def test_the_sweeper_forgets_request_ids_after_the_retention(
    harness: Harness, make_harness: MakeHarness, tenant: str
) -> None:
    profile = await new_profile(harness, tenant)
    first = await add(harness, tenant, profile.id, clip(), "kept-a-day")
    clock = FakeClock()
    clock.advance(timedelta(hours=23))
    await (await make_harness(clock=clock)).app.sweeper.sweep_once()
    assert (await add(harness, tenant, profile.id, clip(), "kept-a-day")).id == first.id

    clock.advance(timedelta(hours=2))  # past the 24 h retention
    report = await (await make_harness(clock=clock)).app.sweeper.sweep_once()
    assert report.request_ids_forgotten >= 1
    async with harness.app.database.transaction() as tx:
        rows = await tx.session.execute(select(UploadRequestRow).where(UploadRequestRow.tenant_id == tenant))
        assert rows.all() == []
    assert (await add(harness, tenant, profile.id, clip(), "kept-a-day")).id != first.id
    assert (await harness.rows(tenant))["samples"] == 2
