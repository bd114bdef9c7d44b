"""Reading a whole server-streamed audio response back (shared by several tests)."""

from __future__ import annotations

from profiles_harness import Harness, tenant_metadata

from voice.profiles.v1 import profiles_service_pb2 as pb


async def fetch_all(harness: Harness, tenant: str, sample_id: str) -> bytes:
    data = bytearray()
    async for message in harness.stub.GetSampleAudio(
        pb.GetSampleAudioRequest(id=sample_id), metadata=tenant_metadata(tenant)
    ):
        if message.WhichOneof("payload") == "chunk":
            data += message.chunk.data
    return bytes(data)
