"""TLS on the gateway's public port, and mutual TLS between the gateway and the services, in one run."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from gateway_harness import bearer, start_stack
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from voice.profiles.v1 import profiles_service_pb2 as pb
from voice.profiles.v1 import profiles_service_pb2_grpc as pb_grpc
from voice_common.config import CommonSettings
from voice_testing.certificates import write_certificates
from voice_testing.ports import free_port


async def test_tls_outside_and_mutual_tls_inside(gateway_common: CommonSettings, tmp_path: Path) -> None:
    public = write_certificates(tmp_path / "public")
    internal = write_certificates(tmp_path / "internal", ca_common_name="voice internal CA")
    service = gateway_common.model_copy(
        update={
            "internal_tls_cert_file": internal.server_cert,
            "internal_tls_key_file": internal.server_key,
            "internal_tls_ca_file": internal.ca,
        }
    )
    gateway = gateway_common.model_copy(
        update={
            "internal_tls_cert_file": internal.client_cert,
            "internal_tls_key_file": internal.client_key,
            "internal_tls_ca_file": internal.ca,
            # Probes (a kubelet's) speak neither TLS nor mTLS: they get a plaintext port with health only.
            "health_port": free_port(),
        }
    )
    stack = await start_stack(
        gateway,
        {"tls_cert_file": public.server_cert, "tls_key_file": public.server_key},
        service_common=service,
    )
    try:
        key = await stack.key("tls")
        secure = aio.secure_channel(
            f"127.0.0.1:{stack.gateway.port}",
            grpc.ssl_channel_credentials(root_certificates=public.ca.read_bytes()),
        )
        profiles = pb_grpc.ProfileServiceStub(secure)
        created = await profiles.CreateProfile(pb.CreateProfileRequest(name="over TLS"), metadata=bearer(key))
        assert (
            created.profile.name == "over TLS"
        )  # the key was checked and the call forwarded, both over mTLS
        await secure.close(None)

        # The health port answers a plaintext probe, and serves nothing else.
        probe = aio.insecure_channel(f"127.0.0.1:{stack.gateway.server.health_port}")
        answer = await health_pb2_grpc.HealthStub(probe).Check(health_pb2.HealthCheckRequest(), timeout=3)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(aio.AioRpcError) as caught:
            await pb_grpc.ProfileServiceStub(probe).ListProfiles(
                pb.ListProfilesRequest(), metadata=bearer(key), timeout=3
            )
        assert caught.value.code() is grpc.StatusCode.UNIMPLEMENTED
        await probe.close(None)

        # Plaintext to the public port fails; so does a client that trusts another CA.
        plain = pb_grpc.ProfileServiceStub(stack.channel)
        with pytest.raises(aio.AioRpcError) as caught:
            await plain.ListProfiles(pb.ListProfilesRequest(), metadata=bearer(key), timeout=3)
        assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
        stranger = aio.secure_channel(
            f"127.0.0.1:{stack.gateway.port}",
            grpc.ssl_channel_credentials(root_certificates=internal.ca.read_bytes()),
        )
        with pytest.raises(aio.AioRpcError) as caught:
            await pb_grpc.ProfileServiceStub(stranger).ListProfiles(
                pb.ListProfilesRequest(), metadata=bearer(key), timeout=3
            )
        assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
        await stranger.close(None)

        # The profile service speaks mutual TLS only: a plaintext call straight to it gets nowhere.
        direct = aio.insecure_channel(f"127.0.0.1:{stack.profile_server.port}")
        with pytest.raises(aio.AioRpcError) as caught:
            await pb_grpc.ProfileServiceStub(direct).ListProfiles(pb.ListProfilesRequest(), timeout=3)
        assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
        await direct.close(None)
    finally:
        await stack.close()
