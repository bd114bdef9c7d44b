"""Wires the ASR service together: model manager, transcriber and the profile-service client for stored audio.

Readiness (the gRPC health status): NOT_SERVING while a preload runs, while a hub model missing from the local cache
is downloaded (at start, when ``ASR_ALLOW_DOWNLOAD`` is true; the reason shows the progress), or while the model
cannot serve (its directory is missing or incomplete, a name is not in the local cache and downloads are off, or a
load failed with no model READY: a LoadModel that fails beside one leaves that one serving), with the reason and the
``ASR_MODEL`` fix in the log; SERVING otherwise. The service keeps answering ``GetModelStatus`` and ``LoadModel``
meanwhile, so an operator can see why and fix it without a restart. ASR has no database or store of its own (stored
audio is read through the profile service), so nothing else gates it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from grpc import aio

from voice.asr.v1 import asr_service_pb2 as pb
from voice.asr.v1 import asr_service_pb2_grpc as pb_grpc
from voice_asr import metrics
from voice_asr.engine import (
    AsrModelManager,
    AvailabilityCheck,
    Loader,
    check_available,
    load_whisper,
    new_model_manager,
)
from voice_asr.live_session import LiveStreams, LiveTranscriber
from voice_asr.servicer import AsrServicer
from voice_asr.settings import AsrSettings
from voice_asr.stored_audio import StoredAudioClient
from voice_asr.transcriber import Transcriber
from voice_common.config import CommonSettings
from voice_common.errors import Unavailable
from voice_common.internal_channel import internal_channel
from voice_common.server.bootstrap import ServiceRegistration

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["AsrService"].full_name


@dataclass
class AsrApp:
    settings: AsrSettings
    models: AsrModelManager
    transcriber: Transcriber
    channel: aio.Channel
    stored_audio: StoredAudioClient
    live_streams: LiveStreams
    live: LiveTranscriber

    @classmethod
    def open(
        cls,
        common: CommonSettings,
        settings: AsrSettings,
        *,
        loader: Loader = load_whisper,
        check: AvailabilityCheck = check_available,
    ) -> AsrApp:
        models = new_model_manager(
            settings.spec(), idle_unload_seconds=settings.idle_unload_seconds, loader=loader, check=check
        )
        models.plan_preload(settings.preload, "ASR_PRELOAD")
        problem = models.problem()
        if problem is not None:
            # Once, at start: readiness repeats it only in the health status and when the reason changes.
            log.warning("the ASR model is not available; NOT_SERVING until it is", extra={"reason": problem})
        channel = internal_channel(
            settings.profiles_address,
            common,
            options=[
                ("grpc.max_receive_message_length", common.grpc_max_message_bytes),
                ("grpc.max_send_message_length", common.grpc_max_message_bytes),
            ],
        )
        return cls.build(settings, models, channel)

    @classmethod
    def build(cls, settings: AsrSettings, models: AsrModelManager, channel: aio.Channel) -> AsrApp:
        """The domain objects over the model manager and the channel to the profile service."""
        transcriber = Transcriber(models, settings.limits(), observe=metrics.observe)
        metrics.track_queue_depth(transcriber)
        live_streams = LiveStreams(settings.max_streams)
        return cls(
            settings=settings,
            models=models,
            transcriber=transcriber,
            channel=channel,
            stored_audio=StoredAudioClient(channel),
            live_streams=live_streams,
            live=LiveTranscriber(
                transcriber,
                live_streams,
                lambda interim_results: settings.live_settings(interim_results=interim_results),
            ),
        )

    async def preload(self) -> None:
        """Load the model at start; readiness waits for this."""
        await self.models.preload()

    def registration(self) -> ServiceRegistration:
        servicer = AsrServicer(
            self.transcriber, self.live, self.stored_audio, self.models, configured_spec=self.settings.spec
        )

        def add(server: aio.Server) -> None:
            pb_grpc.add_AsrServiceServicer_to_server(servicer, server)

        return ServiceRegistration(SERVICE_NAME, add)

    async def readiness(self) -> None:
        problem = self.models.readiness_problem()
        if problem is not None:
            raise Unavailable(problem)

    async def close(self) -> None:
        await self.channel.close(None)
