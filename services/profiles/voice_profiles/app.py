"""Wires the profile service together: adapters in, domain objects out. Tests build it the same way."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from grpc import aio

from voice.auth.v1 import api_key_service_pb2 as api_key_pb
from voice.auth.v1 import api_key_service_pb2_grpc as api_key_pb_grpc
from voice.auth.v1 import key_verification_service_pb2 as verification_pb
from voice.auth.v1 import key_verification_service_pb2_grpc as verification_pb_grpc
from voice.profiles.v1 import generation_ingest_service_pb2 as ingest_pb
from voice.profiles.v1 import generation_ingest_service_pb2_grpc as ingest_pb_grpc
from voice.profiles.v1 import profiles_service_pb2 as pb
from voice.profiles.v1 import profiles_service_pb2_grpc as pb_grpc
from voice_common.config import CommonSettings
from voice_common.db import create_engine, utc_now
from voice_common.errors import Unavailable
from voice_common.internal_channel import internal_channel
from voice_common.object_store import ObjectStore, ObjectStoreError, create_object_store
from voice_common.server.bootstrap import ServiceRegistration
from voice_common.server.database_errors import database_unavailable
from voice_profiles.api_key_servicer import ApiKeyServicer, KeyVerificationServicer
from voice_profiles.asr_client import AsrTranscriber
from voice_profiles.domain.api_keys import ApiKeys
from voice_profiles.domain.archive import ProfileArchiver
from voice_profiles.domain.doctor import ConsistencyDoctor
from voice_profiles.domain.generations import GenerationHistory
from voice_profiles.domain.limits import Limits
from voice_profiles.domain.object_cleanup import ObjectCleanup
from voice_profiles.domain.profile_cache import ProfileCache
from voice_profiles.domain.profiles import ProfileManager
from voice_profiles.domain.samples import SampleManager
from voice_profiles.domain.storage import Storage
from voice_profiles.domain.sweeper import ExpirySweeper
from voice_profiles.domain.transcripts import SpeechTranscriber, TranscriptFiller
from voice_profiles.repositories.api_key_repository import ApiKeyDatabase
from voice_profiles.repositories.schema import pending_revisions, upgrade_to_head_async
from voice_profiles.repositories.unit_of_work import Database
from voice_profiles.servicer import GenerationIngestServicer, ProfileServicer
from voice_profiles.settings import ProfilesSettings

# How long closing waits for creates still finishing; the sweeper deletes what one leaves after its upload lease.
SETTLE_SECONDS = 30.0
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["ProfileService"].full_name
# Internal: for the services only (TTS stores its generations there); never behind the gateway.
INGEST_SERVICE_NAME = ingest_pb.DESCRIPTOR.services_by_name["GenerationIngestService"].full_name
# Public (through the gateway, with an admin key): a tenant's API keys.
API_KEY_SERVICE_NAME = api_key_pb.DESCRIPTOR.services_by_name["ApiKeyService"].full_name
# Internal: the gateway checks a client's key here; never behind the gateway.
KEY_VERIFICATION_SERVICE_NAME = verification_pb.DESCRIPTOR.services_by_name[
    "KeyVerificationService"
].full_name


@dataclass
class ProfilesApp:
    database_url: str
    database: Database
    store: ObjectStore
    cleanup: ObjectCleanup
    profiles: ProfileManager
    samples: SampleManager
    generations: GenerationHistory
    archiver: ProfileArchiver
    sweeper: ExpirySweeper
    doctor: ConsistencyDoctor
    limits: Limits
    clock: Callable[[], datetime]
    api_keys: ApiKeys
    # Started by start_background (after the server listens), stopped by stop_background / close.
    transcripts: TranscriptFiller | None = None
    _asr_channel: aio.Channel | None = None
    # Set by open: the channel to ASR carries the internal credential of these shared settings.
    _common: CommonSettings | None = None
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @classmethod
    async def open(
        cls,
        common: CommonSettings,
        settings: ProfilesSettings,
        *,
        store: ObjectStore | None = None,
        clock: Callable[[], datetime] = utc_now,
        migrate: bool | None = None,
    ) -> ProfilesApp:
        """Connect the adapters; ``store`` replaces the configured object store (tests wrap it to inject faults)."""
        url = common.resolved_database_url
        if common.database_url is None:
            common.data_dir.mkdir(parents=True, exist_ok=True)
        should_migrate = migrate if migrate is not None else settings.migrate_on_start
        if should_migrate is None:
            should_migrate = url.startswith("sqlite")
        if should_migrate:
            await upgrade_to_head_async(url)
        store = store or await create_object_store(common)
        app = cls.build(url, Database(create_engine(url)), store, settings.limits(), clock)
        app._common = common
        return app

    @classmethod
    def build(
        cls, url: str, database: Database, store: ObjectStore, limits: Limits, clock: Callable[[], datetime]
    ) -> ProfilesApp:
        # The domain types its database as domain.database_ports' protocols; handing the SQLAlchemy one in here is
        # where mypy checks that it fits them.
        cleanup = ObjectCleanup(database, store, clock, limits.upload_lease)
        cache = ProfileCache(limits.read_cache_seconds, limits.read_cache_entries)
        storage = Storage(database, store, cleanup, limits, clock, cache)
        profiles = ProfileManager(storage)
        return cls(
            database_url=url,
            database=database,
            store=store,
            cleanup=cleanup,
            profiles=profiles,
            samples=SampleManager(storage),
            generations=GenerationHistory(storage),
            archiver=ProfileArchiver(storage),
            sweeper=ExpirySweeper(database, profiles, cleanup, clock, limits.request_id_retention),
            doctor=ConsistencyDoctor(database, store),
            limits=limits,
            clock=clock,
            api_keys=ApiKeys(ApiKeyDatabase(database.engine), clock),
        )

    def registrations(self) -> list[ServiceRegistration]:
        """The public ProfileService and ApiKeyService, and the internal GenerationIngestService (only the TTS
        service calls it) and KeyVerificationService (only the gateway calls it); the gateway exposes the public
        ones alone. All share the domain objects, the readiness check and so the health status."""
        profile_servicer = ProfileServicer(
            self.profiles,
            self.samples,
            self.generations,
            self.archiver,
            on_transcript_needed=self.wake_transcripts,
        )
        ingest_servicer = GenerationIngestServicer(self.generations)
        api_key_servicer = ApiKeyServicer(self.api_keys)
        verification_servicer = KeyVerificationServicer(self.api_keys)

        def add_profiles(server: aio.Server) -> None:
            pb_grpc.add_ProfileServiceServicer_to_server(profile_servicer, server)

        def add_ingest(server: aio.Server) -> None:
            ingest_pb_grpc.add_GenerationIngestServiceServicer_to_server(ingest_servicer, server)

        def add_api_keys(server: aio.Server) -> None:
            api_key_pb_grpc.add_ApiKeyServiceServicer_to_server(api_key_servicer, server)

        def add_verification(server: aio.Server) -> None:
            verification_pb_grpc.add_KeyVerificationServiceServicer_to_server(verification_servicer, server)

        return [
            ServiceRegistration(SERVICE_NAME, add_profiles, error_mappers=(database_unavailable,)),
            ServiceRegistration(INGEST_SERVICE_NAME, add_ingest, error_mappers=(database_unavailable,)),
            ServiceRegistration(API_KEY_SERVICE_NAME, add_api_keys, error_mappers=(database_unavailable,)),
            ServiceRegistration(
                KEY_VERIFICATION_SERVICE_NAME, add_verification, error_mappers=(database_unavailable,)
            ),
        ]

    def start_background(
        self,
        settings: ProfilesSettings,
        *,
        transcriber: SpeechTranscriber | None = None,
    ) -> None:
        """Start the expiry sweeper and, when ``settings.asr_address`` is set, the transcript filler.

        Separate from ``open`` because the filler talks to ASR, which reads audio back through this service: a
        caller (a test) can start this server, then ASR, then the filler. ``transcriber`` replaces the ASR client
        (tests wrap it). Readiness never depends on ASR: samples wait for a transcript, nothing else does.
        """
        if self._tasks:
            raise RuntimeError("background tasks already started")
        self._tasks.append(
            asyncio.create_task(
                self.sweeper.run_forever(settings.sweep_interval_seconds, dependency_outage), name="sweeper"
            )
        )
        if transcriber is None and settings.asr_address:
            # Lazy: nothing connects until the first round, so an ASR that is down delays nothing here.
            # gRPC's reconnect back-off grows to 2 minutes by default; 10 s bounds how late a returning ASR is seen.
            if self._common is None:
                raise RuntimeError("the channel to ASR needs an app made by ProfilesApp.open")
            self._asr_channel = internal_channel(
                settings.asr_address, self._common, options=[("grpc.max_reconnect_backoff_ms", 10_000)]
            )
            transcriber = AsrTranscriber(self._asr_channel, settings.transcribe_timeout_seconds)
        if transcriber is not None:
            self.transcripts = TranscriptFiller(
                self.database, transcriber, self.limits, self.clock, settings.transcript_policy()
            )
            self._tasks.append(
                asyncio.create_task(
                    self.transcripts.run_forever(settings.transcribe_interval_seconds, dependency_outage),
                    name="transcripts",
                )
            )

    def wake_transcripts(self) -> None:
        if self.transcripts is not None:
            self.transcripts.wake()

    async def stop_background(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.transcripts = None
        if self._asr_channel is not None:
            await self._asr_channel.close(None)
            self._asr_channel = None

    async def readiness(self) -> None:
        """Ready when the database answers with the current schema and the object store answers."""
        await self.database.check()
        pending = await asyncio.to_thread(pending_revisions, self.database_url)
        if pending:
            raise Unavailable(
                f"database schema is behind by {len(pending)} migration(s); run `voice-admin migrate`"
            )
        await self.store.check()

    async def close(self) -> None:
        # First the creates that outlived their calls (a commit under way, the undo of a cancelled upload): the
        # store and the database must still be open for them, or their objects would stay behind.
        await self.cleanup.settle(SETTLE_SECONDS)
        await self.stop_background()
        await self.store.close()
        await self.database.close()


def dependency_outage(error: BaseException) -> str | None:
    """Why a background round failed, when the cause is the database or the object store not answering (an outage
    the background work waits out quietly: voice_common.periodic.repeat); None for anything else."""
    answer = database_unavailable(error)
    if answer is not None:
        return answer[1]
    if isinstance(error, ObjectStoreError):
        return f"the object store failed ({error})"
    return None
