"""What the profile service's background rounds (sweeper, transcript filler) count as an outage to wait out quietly:
the database or the object store not answering, and nothing else."""

from __future__ import annotations

from sqlalchemy.exc import IntegrityError, OperationalError

from voice_common.object_store import ObjectStoreError
from voice_profiles.app import dependency_outage


def test_a_database_or_object_store_that_does_not_answer_is_an_outage() -> None:
    refused = OperationalError("SELECT 1", {}, ConnectionRefusedError("connection refused"))
    assert dependency_outage(refused) == "the database is not answering; retry later"
    assert (
        dependency_outage(ObjectStoreError("connect timeout")) == "the object store failed (connect timeout)"
    )


def test_a_bug_is_not_an_outage() -> None:
    assert dependency_outage(IntegrityError("INSERT", {}, ValueError("duplicate key"))) is None
    assert dependency_outage(KeyError("profile_id")) is None
