"""The internal credential (docs/gateway.md): servers built by ``build_server`` with a token or mutual TLS, and
clients built by ``voice_common.internal_channel``, through real grpc.aio servers on loopback.

A protoless echo service (bytes in, bytes out, all four call shapes) stands for any service; the end-to-end tests
serve the real profile service and reach it through the TTS and ASR apps' own channels.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from pydantic import SecretStr, ValidationError

from voice_common.config import CommonSettings
from voice_common.errors import NotFound, Unavailable
from voice_common.internal_channel import INTERNAL_TOKEN_KEY, internal_channel
from voice_common.server.bootstrap import ServiceRegistration, VoiceServer, build_server
from voice_common.tenancy import TENANT_METADATA_KEY, current_tenant
from voice_testing.certificates import CertificateFiles, write_certificates
from voice_testing.ports import free_port

SERVICE = "test.v1.EchoService"
TOKEN = "internal-" + uuid.uuid4().hex
SERVING = health_pb2.HealthCheckResponse.SERVING
# A refused TLS handshake, or plaintext spoken to a TLS port, fails the call at once; the limit only keeps a broken
# run from hanging.
CALL_SECONDS = 10.0


# -- the echo service --------------------------------------------------------------------------------


def _identity(data: bytes) -> bytes:
    return data


async def _unary(request: bytes, context: Any) -> bytes:
    # "tenant" answers the tenant the call acts for: the tenant header passes along with the credential.
    return current_tenant().encode() if request == b"tenant" else request


async def _server_stream(request: bytes, context: Any) -> AsyncIterator[bytes]:
    yield request
    yield request


async def _client_stream(requests: AsyncIterator[bytes], context: Any) -> bytes:
    return b"".join([request async for request in requests])


async def _bidi(requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
    async for request in requests:
        yield request


def _registration() -> ServiceRegistration:
    codec: dict[str, Any] = {"request_deserializer": _identity, "response_serializer": _identity}
    handler = grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Unary": grpc.unary_unary_rpc_method_handler(_unary, **codec),
            "ServerStream": grpc.unary_stream_rpc_method_handler(_server_stream, **codec),
            "ClientStream": grpc.stream_unary_rpc_method_handler(_client_stream, **codec),
            "Bidi": grpc.stream_stream_rpc_method_handler(_bidi, **codec),
        },
    )

    def add(server: aio.Server) -> None:
        server.add_generic_rpc_handlers((handler,))

    return ServiceRegistration(SERVICE, add)


@asynccontextmanager
async def serving(settings: CommonSettings) -> AsyncIterator[VoiceServer]:
    server = build_server(
        settings=settings,
        services=[_registration()],
        host="127.0.0.1",
        port=0,
        readiness_recheck_seconds=0.05,
    )
    await server.start()
    try:
        yield server
    finally:
        await server.stop(0)


@asynccontextmanager
async def opened(channel: aio.Channel) -> AsyncIterator[aio.Channel]:
    try:
        yield channel
    finally:
        await channel.close(None)


async def call_every_shape(channel: aio.Channel, metadata: tuple[tuple[str, str], ...] = ()) -> list[bytes]:
    """One call of each shape; their answers, in order (unary, server stream, client stream, bidi)."""
    answers = [
        await channel.unary_unary(f"/{SERVICE}/Unary", _identity, _identity)(
            b"one", metadata=metadata, timeout=CALL_SECONDS
        )
    ]
    server_stream = channel.unary_stream(f"/{SERVICE}/ServerStream", _identity, _identity)(
        b"two", metadata=metadata, timeout=CALL_SECONDS
    )
    answers.append(b"".join([message async for message in server_stream]))
    answers.append(
        await channel.stream_unary(f"/{SERVICE}/ClientStream", _identity, _identity)(
            iter([b"th", b"ree"]), metadata=metadata, timeout=CALL_SECONDS
        )
    )
    bidi = channel.stream_stream(f"/{SERVICE}/Bidi", _identity, _identity)(
        iter([b"fo", b"ur"]), metadata=metadata, timeout=CALL_SECONDS
    )
    answers.append(b"".join([message async for message in bidi]))
    return answers


EVERY_SHAPE_ANSWERS = [b"one", b"twotwo", b"three", b"four"]


async def unary_code(channel: aio.Channel, metadata: tuple[tuple[str, str], ...] = ()) -> tuple[Any, str]:
    """The status code and message of one unary call that is expected to fail."""
    with pytest.raises(aio.AioRpcError) as info:
        await channel.unary_unary(f"/{SERVICE}/Unary", _identity, _identity)(
            b"one", metadata=metadata, timeout=CALL_SECONDS
        )
    return info.value.code(), info.value.details() or ""


async def health_of(channel: aio.Channel) -> int:
    response = await health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service=""), timeout=CALL_SECONDS
    )
    status: int = response.status
    return status


async def wait_for_serving(channel: aio.Channel) -> None:
    for _ in range(200):
        if await health_of(channel) == SERVING:
            return
    raise AssertionError("the server never reported SERVING")


def with_token(token: str, **settings: Any) -> CommonSettings:
    return CommonSettings(internal_token=SecretStr(token), **settings)


# -- the shared secret -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def token_server() -> AsyncIterator[VoiceServer]:
    async with serving(with_token(TOKEN)) as server:
        yield server


def address(server: VoiceServer) -> str:
    return f"127.0.0.1:{server.port}"


async def test_a_call_without_the_token_is_unauthenticated_and_says_to_use_the_gateway(
    token_server: VoiceServer,
) -> None:
    async with opened(aio.insecure_channel(address(token_server))) as channel:
        code, message = await unary_code(channel, ((TENANT_METADATA_KEY, "acme"),))
        assert code == grpc.StatusCode.UNAUTHENTICATED
        assert "call through the gateway" in message
        assert TOKEN not in message
        # Every shape is refused, not only unary calls.
        with pytest.raises(aio.AioRpcError) as refused:
            await call_every_shape(channel)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_a_wrong_token_is_unauthenticated(token_server: VoiceServer) -> None:
    async with opened(internal_channel(address(token_server), with_token(TOKEN + "x"))) as channel:
        code, _ = await unary_code(channel)
    assert code == grpc.StatusCode.UNAUTHENTICATED
    async with opened(aio.insecure_channel(address(token_server))) as channel:
        code, _ = await unary_code(channel, ((INTERNAL_TOKEN_KEY, TOKEN[:-1]),))
    assert code == grpc.StatusCode.UNAUTHENTICATED


async def test_internal_channel_carries_the_token_on_every_call_shape_and_the_tenant_passes(
    token_server: VoiceServer,
) -> None:
    async with opened(internal_channel(address(token_server), with_token(TOKEN))) as channel:
        assert await call_every_shape(channel) == EVERY_SHAPE_ANSWERS
        tenant = await channel.unary_unary(f"/{SERVICE}/Unary", _identity, _identity)(
            b"tenant", metadata=((TENANT_METADATA_KEY, "acme"),), timeout=CALL_SECONDS
        )
        assert tenant == b"acme"


async def test_internal_channel_replaces_a_token_the_caller_passed_instead_of_adding_one(
    token_server: VoiceServer,
) -> None:
    # The gateway forwards a client's metadata; a client's own x-voice-internal-token must not travel along. The
    # server takes exactly one value, so a second one would be refused.
    async with opened(internal_channel(address(token_server), with_token(TOKEN))) as channel:
        answers = await call_every_shape(channel, ((INTERNAL_TOKEN_KEY, "a client's guess"),))
    assert answers == EVERY_SHAPE_ANSWERS
    async with opened(aio.insecure_channel(address(token_server))) as channel:
        code, _ = await unary_code(channel, ((INTERNAL_TOKEN_KEY, TOKEN), (INTERNAL_TOKEN_KEY, "another")))
    assert code == grpc.StatusCode.UNAUTHENTICATED


async def test_health_answers_without_the_token(token_server: VoiceServer) -> None:
    async with opened(aio.insecure_channel(address(token_server))) as channel:
        await wait_for_serving(channel)


async def test_reflection_needs_the_token(token_server: VoiceServer) -> None:
    request = reflection_pb2.ServerReflectionRequest(list_services="")

    async def services(channel: aio.Channel) -> list[str]:
        call = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
            iter([request]), timeout=CALL_SECONDS
        )
        return [service.name async for answer in call for service in answer.list_services_response.service]

    async with opened(aio.insecure_channel(address(token_server))) as channel:
        with pytest.raises(aio.AioRpcError) as refused:
            await services(channel)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    async with opened(internal_channel(address(token_server), with_token(TOKEN))) as channel:
        assert SERVICE in await services(channel)


async def test_the_token_never_reaches_the_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with serving(with_token(TOKEN)) as server:
        async with opened(internal_channel(address(server), with_token(TOKEN))) as channel:
            await call_every_shape(channel)
        async with opened(internal_channel(address(server), with_token(TOKEN + "-wrong"))) as channel:
            await unary_code(channel)
    assert caplog.records, "nothing was logged, so the check below proves nothing"
    assert any(getattr(record, "code", None) == "UNAUTHENTICATED" for record in caplog.records)
    for record in caplog.records:
        assert TOKEN not in repr(record.__dict__)


async def test_a_service_without_a_credential_warns_once_that_it_accepts_anyone(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="voice_common.server.bootstrap")
    async with serving(CommonSettings()) as server, opened(aio.insecure_channel(address(server))) as channel:
        assert await call_every_shape(channel) == EVERY_SHAPE_ANSWERS
    warnings = [record for record in caplog.records if "from anyone" in record.getMessage()]
    assert len(warnings) == 1
    caplog.clear()
    async with serving(with_token(TOKEN)):
        pass
    assert not [record for record in caplog.records if "from anyone" in record.getMessage()]


# -- mutual TLS --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> CertificateFiles:
    return write_certificates(tmp_path_factory.mktemp("certificates"))


def server_tls(files: CertificateFiles, **settings: Any) -> CommonSettings:
    return CommonSettings(
        internal_tls_cert_file=files.server_cert,
        internal_tls_key_file=files.server_key,
        internal_tls_ca_file=files.ca,
        **settings,
    )


def client_tls(files: CertificateFiles, **settings: Any) -> CommonSettings:
    return CommonSettings(
        internal_tls_cert_file=files.client_cert,
        internal_tls_key_file=files.client_key,
        internal_tls_ca_file=files.ca,
        **settings,
    )


@pytest.fixture(scope="module")
async def tls_server(certificates: CertificateFiles) -> AsyncIterator[VoiceServer]:
    async with serving(server_tls(certificates)) as server:
        yield server


async def test_mutual_tls_with_the_client_certificate_works_on_every_call_shape(
    tls_server: VoiceServer, certificates: CertificateFiles
) -> None:
    for target in (address(tls_server), f"localhost:{tls_server.port}"):
        async with opened(internal_channel(target, client_tls(certificates))) as channel:
            assert await call_every_shape(channel) == EVERY_SHAPE_ANSWERS


async def test_a_tls_client_without_a_certificate_is_refused(
    tls_server: VoiceServer, certificates: CertificateFiles
) -> None:
    credentials = grpc.ssl_channel_credentials(root_certificates=certificates.ca.read_bytes())
    async with opened(aio.secure_channel(address(tls_server), credentials)) as channel:
        code, _ = await unary_code(channel)
    assert code == grpc.StatusCode.UNAVAILABLE


async def test_a_client_certificate_from_another_ca_is_refused(
    tls_server: VoiceServer, certificates: CertificateFiles, tmp_path: Path
) -> None:
    stranger = write_certificates(tmp_path, ca_common_name="another CA")
    # The stranger trusts the platform's CA (so its side of the handshake is fine) but presents its own certificate.
    settings = CommonSettings(
        internal_tls_cert_file=stranger.client_cert,
        internal_tls_key_file=stranger.client_key,
        internal_tls_ca_file=certificates.ca,
    )
    async with opened(internal_channel(address(tls_server), settings)) as channel:
        code, _ = await unary_code(channel)
    assert code == grpc.StatusCode.UNAVAILABLE


async def test_a_plaintext_client_is_refused_even_for_health(tls_server: VoiceServer) -> None:
    async with opened(aio.insecure_channel(address(tls_server))) as channel:
        code, _ = await unary_code(channel)
        assert code == grpc.StatusCode.UNAVAILABLE
        with pytest.raises(aio.AioRpcError) as refused:
            await health_of(channel)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_the_health_port_answers_probes_in_plaintext_and_serves_nothing_else(
    certificates: CertificateFiles,
) -> None:
    # What a kubelet's gRPC probe needs under mutual TLS: it speaks plaintext and has no certificate.
    server = build_server(
        settings=server_tls(certificates, health_port=free_port()),
        services=[_registration()],
        host="127.0.0.1",
        port=0,
        readiness_recheck_seconds=0.05,
    )
    assert server.health_port != server.port
    await server.start()
    try:
        async with opened(aio.insecure_channel(f"127.0.0.1:{server.health_port}")) as probe:
            await wait_for_serving(probe)
            # The health port serves health only: the service's methods (and reflection) are not there.
            code, _ = await unary_code(probe)
            assert code == grpc.StatusCode.UNIMPLEMENTED
            # The service port still refuses plaintext.
            async with opened(aio.insecure_channel(address(server))) as plain:
                code, _ = await unary_code(plain)
            assert code == grpc.StatusCode.UNAVAILABLE
    finally:
        await server.stop(0)
    async with opened(aio.insecure_channel(f"127.0.0.1:{server.health_port}")) as probe:
        with pytest.raises(aio.AioRpcError) as closed:
            await health_of(probe)
    assert closed.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_the_server_name_setting_checks_the_name_in_the_certificate_instead_of_the_address(
    tmp_path: Path,
) -> None:
    files = write_certificates(tmp_path, server_names=("voice-profiles",))
    async with serving(server_tls(files)) as server:
        async with opened(internal_channel(address(server), client_tls(files))) as channel:
            code, _ = await unary_code(channel)
        assert code == grpc.StatusCode.UNAVAILABLE  # the certificate does not name 127.0.0.1
        named = client_tls(files, internal_tls_server_name="voice-profiles")
        async with opened(internal_channel(address(server), named)) as channel:
            assert await call_every_shape(channel) == EVERY_SHAPE_ANSWERS


async def test_token_and_mutual_tls_together_need_both(certificates: CertificateFiles) -> None:
    async with serving(server_tls(certificates, internal_token=SecretStr(TOKEN))) as server:
        async with opened(internal_channel(address(server), client_tls(certificates))) as channel:
            code, _ = await unary_code(channel)
        assert code == grpc.StatusCode.UNAUTHENTICATED
        both = client_tls(certificates, internal_token=SecretStr(TOKEN))
        async with opened(internal_channel(address(server), both)) as channel:
            assert await call_every_shape(channel) == EVERY_SHAPE_ANSWERS


# -- settings ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "missing", ["internal_tls_cert_file", "internal_tls_key_file", "internal_tls_ca_file"]
)
def test_the_tls_files_go_together(certificates: CertificateFiles, missing: str) -> None:
    files = {
        "internal_tls_cert_file": certificates.server_cert,
        "internal_tls_key_file": certificates.server_key,
        "internal_tls_ca_file": certificates.ca,
    }
    del files[missing]
    with pytest.raises(ValidationError) as info:
        CommonSettings(**files)  # type: ignore[arg-type]
    assert f"set VOICE_{missing.upper()} too, or none of them" in str(info.value)


def test_a_tls_file_that_is_not_there_is_refused_at_start(tmp_path: Path) -> None:
    with pytest.raises(ValidationError) as info:
        CommonSettings(internal_tls_cert_file=tmp_path / "missing.pem")
    assert "internal_tls_cert_file" in str(info.value)


# -- the services' own channels ----------------------------------------------------------------------


@pytest.fixture
async def profiles_with_token(tmp_path: Path) -> AsyncIterator[tuple[str, CommonSettings]]:
    """The real profile service, served with the token; its address and the shared settings."""
    from voice_profiles.app import ProfilesApp
    from voice_profiles.settings import ProfilesSettings

    common = with_token(TOKEN, data_dir=tmp_path, log_format="text")
    app = await ProfilesApp.open(common, ProfilesSettings(port=0, metrics_port=0), migrate=True)
    server = build_server(
        settings=common, services=app.registrations(), host="127.0.0.1", port=0, readiness=app.readiness
    )
    await server.start()
    try:
        yield address(server), common
    finally:
        await server.stop(0)
        await app.close()


async def _expect_not_found_with_and_refused_without(
    call_with: Callable[[CommonSettings], Any], common: CommonSettings
) -> None:
    """``call_with(settings)`` reads a missing resource through a service's own channel: with the token the profile
    service answers NOT_FOUND; without it, the refusal reaches the caller."""
    with pytest.raises(NotFound):
        await call_with(common)
    with pytest.raises(Unavailable, match="UNAUTHENTICATED"):
        await call_with(common.model_copy(update={"internal_token": SecretStr("")}))


async def test_the_tts_service_reaches_the_profile_service_with_the_token(
    profiles_with_token: tuple[str, CommonSettings], tmp_path: Path
) -> None:
    from voice_common.object_store import FilesystemObjectStore
    from voice_tts.app import TtsApp
    from voice_tts.settings import TtsSettings

    profiles_address, common = profiles_with_token

    async def read_missing_profile(settings: CommonSettings) -> None:
        store = FilesystemObjectStore(tmp_path / "tts-objects")
        tts_settings = TtsSettings(port=0, metrics_port=0, profiles_address=profiles_address)
        app = await TtsApp.open(settings, tts_settings, store=store)
        try:
            await app.profiles.voice_samples("acme", str(uuid.uuid4()))
        finally:
            await app.close()

    await _expect_not_found_with_and_refused_without(read_missing_profile, common)


async def test_the_asr_service_reaches_the_profile_service_with_the_token(
    profiles_with_token: tuple[str, CommonSettings],
) -> None:
    from voice_asr.app import AsrApp
    from voice_asr.settings import AsrSettings

    profiles_address, common = profiles_with_token

    async def read_missing_sample(settings: CommonSettings) -> None:
        asr_settings = AsrSettings(port=0, metrics_port=0, profiles_address=profiles_address, device="cpu")
        app = AsrApp.open(settings, asr_settings)
        try:
            await app.stored_audio.audio("acme", "sample", str(uuid.uuid4()))
        finally:
            await app.close()

    await _expect_not_found_with_and_refused_without(read_missing_sample, common)
