"""The profile service's adapter to the ASR service: the text spoken in a stored sample.

ASR reads the sample's audio back through this service (with the tenant passed along), so the request carries
only the id. ASR's errors become domain errors with :func:`voice_common.remote_errors.translate_error`: NOT_FOUND
(deleted meanwhile), INVALID_ARGUMENT / FAILED_PRECONDITION (it refuses this audio) and Unavailable for everything
else (down, overloaded, past the deadline), which the transcript filler treats differently.
"""

from __future__ import annotations

from typing import Any

from grpc import aio

from voice.asr.v1 import asr_service_pb2 as pb
from voice.asr.v1 import asr_service_pb2_grpc as pb_grpc
from voice_common.remote_errors import translate_error
from voice_common.tenancy import TENANT_METADATA_KEY


class AsrTranscriber:
    """A ``domain.transcripts.SpeechTranscriber`` over an injected channel to the ASR service."""

    def __init__(self, channel: aio.Channel, timeout_seconds: float = 120.0) -> None:
        if timeout_seconds <= 0:
            raise ValueError(f"timeout_seconds must be positive, got {timeout_seconds}")
        self._stub: Any = pb_grpc.AsrServiceStub(channel)
        self._timeout = timeout_seconds

    async def transcribe_sample(self, tenant_id: str, sample_id: str) -> str:
        # VAD on: music or noise around the speech then yields no words instead of Whisper's hallucinations.
        request = pb.TranscribeRequest(sample_id=sample_id, options=pb.RecognitionOptions(vad_filter=True))
        try:
            response = await self._stub.Transcribe(
                request, metadata=((TENANT_METADATA_KEY, tenant_id),), timeout=self._timeout
            )
        except (aio.AioRpcError, aio.UsageError) as error:
            raise translate_error(
                error,
                action="transcribe the sample",
                kind="sample",
                resource_id=sample_id,
                service="the ASR service",
            ) from None
        text: str = response.text
        return text.strip()
