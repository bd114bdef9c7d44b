"""Wires the TTS service together: model manager, prompt cache, synthesizer and the profile-service client.

Readiness (the gRPC health status of the service): SERVING as soon as the object store (which holds the voice
prompts) answers. The model's own state is not part of it: it is reported by ``GetModelStatus``. Two exceptions
and one deliberate non-exception:

* with ``TTS_PRELOAD=true`` the service is NOT_SERVING until the preload has finished (loaded or failed), so a
  load balancer sends no traffic to a replica that would make the first client wait for the load;
* a FAILED model does NOT make the service NOT_SERVING: the service keeps serving so that ``GetModelStatus``
  can tell an operator why (and how to set ``TTS_MODEL``), and ``LoadModel`` can fix it without a restart.
  Synthesis requests meanwhile answer UNAVAILABLE with that same message.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from grpc import aio

from voice.tts.v1 import tts_service_pb2 as pb
from voice.tts.v1 import tts_service_pb2_grpc as pb_grpc
from voice_common.config import CommonSettings
from voice_common.errors import Unavailable
from voice_common.object_store import ObjectStore, create_object_store
from voice_common.server.bootstrap import ServiceRegistration
from voice_tts.model_manager import Loader, ModelManager, load_qwen3_tts
from voice_tts.profile_client import ProfileClient
from voice_tts.prompts import PromptCache
from voice_tts.settings import TtsSettings
from voice_tts.synthesizer import Synthesizer

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["TtsService"].full_name


@dataclass
class TtsApp:
    settings: TtsSettings
    store: ObjectStore
    models: ModelManager
    synthesizer: Synthesizer
    channel: aio.Channel
    profiles: ProfileClient
    preload_done: bool = True
    _caches: dict[str, PromptCache] = field(default_factory=dict)

    @classmethod
    async def open(
        cls,
        common: CommonSettings,
        settings: TtsSettings,
        *,
        store: ObjectStore | None = None,
        loader: Loader = load_qwen3_tts,
    ) -> TtsApp:
        store = store or await create_object_store(common)
        models = ModelManager(
            settings.spec(), idle_unload_seconds=settings.idle_unload_seconds, loader=loader
        )
        channel = aio.insecure_channel(
            settings.profiles_address,
            options=[
                ("grpc.max_receive_message_length", common.grpc_max_message_bytes),
                ("grpc.max_send_message_length", common.grpc_max_message_bytes),
            ],
        )
        return cls(
            settings=settings,
            store=store,
            models=models,
            synthesizer=Synthesizer(models, settings.limits()),
            channel=channel,
            profiles=ProfileClient(channel),
            preload_done=not settings.preload,
        )

    def prompt_cache(self) -> PromptCache:
        """The prompt cache of the model now configured (one per model: prompts differ between models)."""
        model_id = self.models.spec.model
        cache = self._caches.get(model_id)
        if cache is None:
            self._caches.clear()
            cache = PromptCache(self.store, model_id, max_entries=self.settings.prompt_cache_entries)
            self._caches[model_id] = cache
        return cache

    async def preload(self) -> None:
        """Load the model at start; readiness waits for this (see the module docstring)."""
        try:
            await self.models.load()
        finally:
            self.preload_done = True

    def registration(self) -> ServiceRegistration:
        from voice_tts.servicer import TtsServicer

        servicer = TtsServicer(self)

        def add(server: aio.Server) -> None:
            pb_grpc.add_TtsServiceServicer_to_server(servicer, server)

        return ServiceRegistration(SERVICE_NAME, add)

    async def readiness(self) -> None:
        """Ready when the object store answers and any preload has finished (a FAILED model stays SERVING)."""
        if not self.preload_done:
            raise Unavailable(f"still loading the TTS model {self.models.spec.model!r} (TTS_PRELOAD)")
        await self.store.check()

    async def close(self) -> None:
        await self.channel.close(None)
        await self.store.close()
