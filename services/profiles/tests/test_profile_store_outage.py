"""An object store that is down for a whole upload (every put fails): the client is told UNAVAILABLE, nothing is
kept, and the service logs no stray error of its own making (tests/test_e2e_faults.py stops a real store)."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from field_helpers import new_profile
from profiles_harness import Harness, expect_error, sample_requests, tenant_metadata

from voice_testing.faulty_store import FaultyObjectStore
from voice_testing.media_files import encode_file, speechlike


async def test_a_store_down_for_the_whole_upload_leaves_no_unretrieved_error(
    harness: Harness, make_harness: Callable[..., Awaitable[Harness]], tenant: str
) -> None:
    """Both puts fail (the original's, started while the upload is decoded, and the normalised audio's). The undo
    waits for both; neither failure may be left for asyncio to report as "Future exception was never retrieved",
    an ERROR line with no request id that an operator would chase after every store outage."""
    store = FaultyObjectStore(harness.store, fail_put_key_contains="/samples/")
    broken = await make_harness(store=store)
    profile = await new_profile(broken, tenant)
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _, context: reported.append(context))
    try:
        error = await expect_error(
            broken.stub.AddSample(
                iter(sample_requests(profile.id, encode_file(speechlike(2.0), 24000, "wav"))),
                metadata=tenant_metadata(tenant),
            ),
            grpc.StatusCode.UNAVAILABLE,
        )
        gc.collect()  # a future that failed unobserved reports itself when it is collected
        await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(previous)
    assert "object store" in (error.details() or "")
    assert len(store.failed_puts) == 2, store.failed_puts
    assert [context.get("message") for context in reported] == []
    assert await harness.objects(tenant) == []
    assert (await harness.rows(tenant))["samples"] == 0
