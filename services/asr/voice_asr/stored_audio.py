"""The ASR service's adapter to the profile service: the audio of a stored sample or generation, as 16 kHz mono.

The profile service owns the audio (tenancy, object store, formats), so ASR asks it for LINEAR16 at 16 kHz and
needs neither the database nor the store. Its errors become domain errors with
:func:`voice_common.remote_errors.translate_error` (an unknown or another tenant's id is NOT_FOUND with the profile
service's message).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from grpc import aio

from voice.audio.v1 import audio_pb2
from voice.profiles.v1 import profiles_service_pb2 as pb
from voice.profiles.v1 import profiles_service_pb2_grpc as pb_grpc
from voice_asr.transcript import SAMPLE_RATE
from voice_common.audio import AudioDecodeError, decode_linear16
from voice_common.audio_messages import read_linear16_stream
from voice_common.errors import Unavailable
from voice_common.remote_errors import translate_error
from voice_common.tenancy import TENANT_METADATA_KEY

Kind = Literal["sample", "generation"]

_LINEAR16_16K = audio_pb2.AudioFormat(
    encoding=audio_pb2.AUDIO_ENCODING_LINEAR16, sample_rate_hertz=SAMPLE_RATE, channels=1
)


class StoredAudioClient:
    """Reads stored audio from the profile service over an injected channel."""

    def __init__(self, channel: aio.Channel, timeout_seconds: float = 60.0) -> None:
        if timeout_seconds <= 0:
            raise ValueError(f"timeout_seconds must be positive, got {timeout_seconds}")
        self._stub: Any = pb_grpc.ProfileServiceStub(channel)
        self._timeout = timeout_seconds

    async def audio(self, tenant: str, kind: Kind, resource_id: str) -> np.ndarray:
        """The sample's or generation's audio, float32 mono at 16 kHz."""
        metadata = ((TENANT_METADATA_KEY, tenant),)
        if kind == "sample":
            call = self._stub.GetSampleAudio(
                pb.GetSampleAudioRequest(id=resource_id, format=_LINEAR16_16K),
                metadata=metadata,
                timeout=self._timeout,
            )
        else:
            call = self._stub.GetGenerationAudio(
                pb.GetGenerationAudioRequest(id=resource_id, format=_LINEAR16_16K),
                metadata=metadata,
                timeout=self._timeout,
            )
        try:
            data = await read_linear16_stream(call, SAMPLE_RATE, f"{kind} {resource_id!r}")
        except (aio.AioRpcError, aio.UsageError) as error:
            raise translate_error(
                error, action=f"read the {kind}'s audio", kind=kind, resource_id=resource_id
            ) from None
        finally:
            call.cancel()  # no-op once the stream ended; stops it when this reader gives up early
        try:
            return decode_linear16(data, SAMPLE_RATE, target_rate=SAMPLE_RATE).samples.astype(np.float32)
        except AudioDecodeError as error:
            raise Unavailable(
                f"the profile service sent unusable audio for {kind} {resource_id!r}: {error}"
            ) from None
