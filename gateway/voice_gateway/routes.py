"""Which methods the gateway forwards, to which backend, in which shape, under which scope.

The table is read from the public services' own descriptors, so a method added to a public proto is forwarded once
it has a scope here (tests/test_gateway_routes.py fails while one has none); internal services are simply absent.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from google.protobuf.descriptor import ServiceDescriptor

from voice.asr.v1 import asr_service_pb2
from voice.auth.v1 import api_key_service_pb2
from voice.profiles.v1 import profiles_service_pb2
from voice.tts.v1 import tts_service_pb2
from voice_common.api_keys import SCOPE_ADMIN, SCOPE_ASR, SCOPE_PROFILES_READ, SCOPE_PROFILES_WRITE, SCOPE_TTS

PROFILES = "profiles"
TTS = "tts"
ASR = "asr"

# Public service -> (backend, the scope of its methods, methods that need another scope).
_READ_PROFILES = {
    "GetProfile",
    "ListProfiles",
    "ListSamples",
    "GetSampleAudio",
    "GetGeneration",
    "ListGenerations",
    "GetGenerationStats",
    "GetGenerationAudio",
    "GetDownloadUrl",
    "ExportProfile",
}
_MODEL_CONTROL = {"LoadModel", "UnloadModel"}
_PUBLIC: list[tuple[ServiceDescriptor, str, str, dict[str, str]]] = [
    (
        profiles_service_pb2.DESCRIPTOR.services_by_name["ProfileService"],
        PROFILES,
        SCOPE_PROFILES_WRITE,
        dict.fromkeys(_READ_PROFILES, SCOPE_PROFILES_READ),
    ),
    (
        tts_service_pb2.DESCRIPTOR.services_by_name["TtsService"],
        TTS,
        SCOPE_TTS,
        dict.fromkeys(_MODEL_CONTROL, SCOPE_ADMIN),
    ),
    (
        asr_service_pb2.DESCRIPTOR.services_by_name["AsrService"],
        ASR,
        SCOPE_ASR,
        dict.fromkeys(_MODEL_CONTROL, SCOPE_ADMIN),
    ),
    (api_key_service_pb2.DESCRIPTOR.services_by_name["ApiKeyService"], PROFILES, SCOPE_ADMIN, {}),
]


@dataclass(frozen=True)
class Route:
    method: str  # "/voice.tts.v1.TtsService/SynthesizeStream"
    service: str  # "voice.tts.v1.TtsService"
    name: str  # "SynthesizeStream"
    backend: str
    scope: str
    request_streaming: bool
    response_streaming: bool

    @property
    def streaming(self) -> bool:
        return self.request_streaming or self.response_streaming


def public_routes() -> dict[str, Route]:
    """Every forwarded method by its full path."""
    routes: dict[str, Route] = {}
    for service, backend, scope, exceptions in _PUBLIC:
        for method in service.methods:
            routes[f"/{service.full_name}/{method.name}"] = Route(
                method=f"/{service.full_name}/{method.name}",
                service=service.full_name,
                name=method.name,
                backend=backend,
                scope=exceptions.get(method.name, scope),
                request_streaming=method.client_streaming,
                response_streaming=method.server_streaming,
            )
    return routes


def public_services() -> dict[str, str]:
    """Public service name -> its backend."""
    return {service.full_name: backend for service, backend, _, _ in _PUBLIC}


def services_of(backend: str, routes: Iterable[Route]) -> list[str]:
    return sorted({route.service for route in routes if route.backend == backend})


def backends(services: Mapping[str, str]) -> list[str]:
    return sorted(set(services.values()))
