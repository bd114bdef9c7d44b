"""The forwarding table: every method of every public service is forwarded with a scope, nothing internal is."""

from __future__ import annotations

from voice.asr.v1 import asr_service_pb2
from voice.auth.v1 import api_key_service_pb2
from voice.profiles.v1 import profiles_service_pb2
from voice.tts.v1 import tts_service_pb2
from voice_common.api_keys import SCOPES
from voice_gateway.routes import public_routes


def test_every_public_method_is_routed_with_a_known_scope_and_its_shape() -> None:
    routes = public_routes()
    expected = {
        f"/{service.full_name}/{method.name}": (method.client_streaming, method.server_streaming)
        for module, name in (
            (profiles_service_pb2, "ProfileService"),
            (tts_service_pb2, "TtsService"),
            (asr_service_pb2, "AsrService"),
            (api_key_service_pb2, "ApiKeyService"),
        )
        for service in [module.DESCRIPTOR.services_by_name[name]]
        for method in service.methods
    }
    assert set(routes) == set(expected)
    for path, route in routes.items():
        assert route.scope in SCOPES, path
        assert (route.request_streaming, route.response_streaming) == expected[path]
    assert routes["/voice.tts.v1.TtsService/SynthesizeDuplex"].streaming
    assert routes["/voice.profiles.v1.ProfileService/GetProfile"].scope == "profiles:read"
    assert routes["/voice.profiles.v1.ProfileService/DeleteProfile"].scope == "profiles:write"
    assert routes["/voice.asr.v1.AsrService/LoadModel"].scope == "admin"


def test_internal_services_are_not_routed() -> None:
    services = {route.service for route in public_routes().values()}
    assert "voice.profiles.v1.GenerationIngestService" not in services
    assert "voice.auth.v1.KeyVerificationService" not in services
