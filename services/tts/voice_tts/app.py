"""Wires the TTS service together: model manager, synthesis engine, voices, the synthesis service, the servicer and the
profile-service client.

Readiness (the gRPC health status of the service, ``voice.tts.v1.TtsService`` and ``""``): SERVING when the
object store (which holds the voice prompts) answers and the model can serve. NOT_SERVING, with the reason, when:

* ``TTS_PRELOAD=true`` and the preload has not finished, so a load balancer sends no traffic to a replica that
  would make the first client wait for the load;
* the configured model is a hub id missing from the local cache and is being downloaded (at start, when
  ``TTS_ALLOW_DOWNLOAD`` is true: the reason shows the progress), then loaded;
* the configured model cannot load at all (:func:`~voice_tts.model_manager.check_available`: no such directory,
  or a hub id missing from the local cache with ``TTS_ALLOW_DOWNLOAD=false``; a few file lookups, nothing is
  loaded), so a replica without a model gets no traffic; the reason says how to set ``TTS_MODEL``;
* the last load FAILED (a damaged checkpoint, a missing GPU), for the same reason. A ``LoadModel`` that fails while
  a model is READY does not count: that model serves on (:mod:`voice_common.model_manager`).

NOT_SERVING is not "stopped": the process keeps running (``make run`` keeps the other services up), the RPCs still
answer (synthesis with UNAVAILABLE and the same message), ``GetModelStatus`` tells an operator why, and a
``LoadModel`` with a usable model brings the service back to SERVING at the next readiness re-check, without a
restart. A model that is simply not loaded yet (lazy loading, or unloaded when idle) is SERVING: the first request
loads it.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from grpc import aio

from voice.tts.v1 import tts_service_pb2 as pb
from voice.tts.v1 import tts_service_pb2_grpc as pb_grpc
from voice_common.config import CommonSettings
from voice_common.errors import Unavailable
from voice_common.internal_channel import internal_channel
from voice_common.object_store import ObjectStore, create_object_store
from voice_common.server.bootstrap import ServiceRegistration
from voice_tts import metrics
from voice_tts.model_manager import (
    AvailabilityCheck,
    Loader,
    ModelManager,
    check_available,
    load_qwen3_tts,
)
from voice_tts.profile_client import ProfileClient
from voice_tts.prompt_expiry import PromptExpiry
from voice_tts.servicer import TtsServicer
from voice_tts.settings import TtsSettings
from voice_tts.synthesis_engine import SynthesisEngine
from voice_tts.synthesis_service import SynthesisService
from voice_tts.voices import VoiceResolver

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["TtsService"].full_name


@dataclass
class TtsApp:
    settings: TtsSettings
    store: ObjectStore
    models: ModelManager
    engine: SynthesisEngine
    channel: aio.Channel
    profiles: ProfileClient
    voices: VoiceResolver
    synthesis: SynthesisService
    prompt_expiry: PromptExpiry
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @classmethod
    async def open(
        cls,
        common: CommonSettings,
        settings: TtsSettings,
        *,
        store: ObjectStore | None = None,
        loader: Loader = load_qwen3_tts,
        check: AvailabilityCheck = check_available,
    ) -> TtsApp:
        store = store or await create_object_store(common)
        channel = internal_channel(
            settings.profiles_address,
            common,
            options=[
                ("grpc.max_receive_message_length", common.grpc_max_message_bytes),
                ("grpc.max_send_message_length", common.grpc_max_message_bytes),
            ],
        )
        return cls.build(settings, store, channel, loader=loader, check=check)

    @classmethod
    def build(
        cls,
        settings: TtsSettings,
        store: ObjectStore,
        channel: aio.Channel,
        *,
        loader: Loader = load_qwen3_tts,
        check: AvailabilityCheck = check_available,
    ) -> TtsApp:
        """Every part of the service, each handed what it uses (nothing reaches into the app)."""
        models = ModelManager(
            settings.spec(), idle_unload_seconds=settings.idle_unload_seconds, loader=loader, check=check
        )
        models.plan_preload(settings.preload, "TTS_PRELOAD")
        problem = models.problem()
        if problem is not None:
            # Once, at start: readiness repeats it only in the health status and when the reason changes.
            log.warning("the TTS model is not available; NOT_SERVING until it is", extra={"reason": problem})
        engine = SynthesisEngine(models, settings.limits(), on_step=metrics.BATCH_SIZE.observe)
        metrics.track_queue_depth(engine)
        profiles = ProfileClient(channel)
        prompt_expiry = PromptExpiry(store, settings.prompt_ttl_seconds)
        voices = VoiceResolver(
            store,
            models,
            profiles,
            settings.reference_limits(),
            cache_entries=settings.prompt_cache_entries,
            refresh_seconds=prompt_expiry.refresh_seconds,
        )
        return cls(
            settings=settings,
            store=store,
            models=models,
            engine=engine,
            channel=channel,
            profiles=profiles,
            voices=voices,
            synthesis=SynthesisService(engine, models, voices, profiles),
            prompt_expiry=prompt_expiry,
        )

    def start_background(self) -> None:
        """Start the voice-prompt expiry sweep (``TTS_PROMPT_TTL_SECONDS``); ``close`` stops it."""
        if self.prompt_expiry.enabled and not self._tasks:
            self._tasks.append(asyncio.create_task(self.prompt_expiry.run_forever(), name="prompt-expiry"))

    async def preload(self) -> None:
        """Load the model at start; readiness waits for this."""
        await self.models.preload()

    def registration(self) -> ServiceRegistration:
        servicer = TtsServicer(self.synthesis, self.models, self.settings.spec())

        def add(server: aio.Server) -> None:
            pb_grpc.add_TtsServiceServicer_to_server(servicer, server)

        return ServiceRegistration(SERVICE_NAME, add)

    async def readiness(self) -> None:
        """Ready when any preload has finished, the model can serve and the object store answers (module docstring)."""
        problem = self.models.readiness_problem()
        if problem is not None:
            raise Unavailable(problem)
        await self.store.check()

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.voices.close()
        # The engine thread fails what is still inside (a drain has already let running RPCs finish).
        await asyncio.to_thread(self.engine.close)
        await self.channel.close(None)
        await self.store.close()
