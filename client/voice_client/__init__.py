"""``voice_client``: the Python client of the voice platform, over the gateway (docs/client.md).

from voice_client import VoiceClient

with VoiceClient() as client:  # VOICE_TARGET / VOICE_API_KEY, else 127.0.0.1:50051 and make run's saved key
    profile = client.profiles.create("Narrator", language="en")
    client.samples.upload(profile.id, "me.wav", reference_text="What the recording says.")
    audio = client.tts.synthesize("Hello from a cloned voice.", voice=profile.id)
"""

from voice_client.async_client import AsyncLiveTranscription, AsyncSynthesisStream, AsyncVoiceClient
from voice_client.client import LiveTranscription, SynthesisStream, VoiceClient
from voice_client.connection import Connection, find_api_key, local_key_path, resolve_connection
from voice_client.errors import (
    Aborted,
    AlreadyExists,
    Cancelled,
    DataLoss,
    DeadlineExceeded,
    FailedPrecondition,
    FieldViolation,
    Internal,
    InvalidArgument,
    NotFound,
    OutOfRange,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    Unimplemented,
    Unknown,
    VoiceError,
)
from voice_client.messages import DownloadedAudio, Progress, ReferenceVoice, SynthesisResult
from voice_client.retrying import RetryEvent, RetryPolicy

__all__ = [
    "Aborted",
    "AlreadyExists",
    "AsyncLiveTranscription",
    "AsyncSynthesisStream",
    "AsyncVoiceClient",
    "Cancelled",
    "Connection",
    "DataLoss",
    "DeadlineExceeded",
    "DownloadedAudio",
    "FailedPrecondition",
    "FieldViolation",
    "Internal",
    "InvalidArgument",
    "LiveTranscription",
    "NotFound",
    "OutOfRange",
    "PermissionDenied",
    "Progress",
    "ReferenceVoice",
    "ResourceExhausted",
    "RetryEvent",
    "RetryPolicy",
    "SynthesisResult",
    "SynthesisStream",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "Unknown",
    "VoiceClient",
    "VoiceError",
    "find_api_key",
    "local_key_path",
    "resolve_connection",
]
