"""One transaction over every repository of the service."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from voice_common.db import check_database, create_session_factory
from voice_profiles.repositories.generation_repository import GenerationRepository
from voice_profiles.repositories.pending_deletion_repository import PendingDeletionRepository
from voice_profiles.repositories.sample_repository import SampleRepository
from voice_profiles.repositories.upload_request_repository import UploadRequestRepository
from voice_profiles.repositories.voice_profile_repository import ProfileReads, ProfileRepository


@dataclass
class Transaction:
    session: AsyncSession
    profiles: ProfileRepository
    samples: SampleRepository
    generations: GenerationRepository
    pending_deletions: PendingDeletionRepository
    upload_requests: UploadRequestRepository


class Database:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._sessions: async_sessionmaker[AsyncSession] = create_session_factory(engine)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        """Commits when the block ends normally, rolls back when it raises."""
        async with self._sessions() as session, session.begin():
            yield Transaction(
                session=session,
                profiles=ProfileRepository(session),
                samples=SampleRepository(session),
                generations=GenerationRepository(session),
                pending_deletions=PendingDeletionRepository(session),
                upload_requests=UploadRequestRepository(session),
            )

    @asynccontextmanager
    async def read(self) -> AsyncIterator[ProfileReads]:
        """Profile reads on a bare connection: no ORM session, and on PostgreSQL no BEGIN/ROLLBACK round trips
        (a single SELECT is atomic on its own)."""
        async with self.engine.connect() as connection:
            if connection.dialect.name != "sqlite":
                await connection.execution_options(isolation_level="AUTOCOMMIT")
            yield ProfileReads(connection)

    async def check(self) -> None:
        await check_database(self.engine)

    async def close(self) -> None:
        await self.engine.dispose()
