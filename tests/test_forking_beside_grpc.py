"""The test process forks while gRPC calls are in flight: the throwaway PostgreSQL clusters are started as another
user, and subprocess cannot vfork to switch user. gRPC's fork handlers, which the root conftest switches off, made
such children crash before they exec (a CI run lost test_e2e_faults' cluster this way: ``pg_ctl start`` -11)."""

from __future__ import annotations

import asyncio
import os
import subprocess

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

FORKS = 200


async def test_children_forked_during_grpc_calls_reach_exec() -> None:
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(
        health.aio.HealthServicer(),  # type: ignore[attr-defined]
        server,
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    forking = True

    async def calls() -> int:
        made = 0
        while forking:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = health_pb2_grpc.HealthStub(channel)
                for _ in range(20):
                    await stub.Check(health_pb2.HealthCheckRequest())
                    made += 1
        return made

    def fork_children() -> list[int]:
        # ``user=`` makes subprocess fork (and set the uid in the child) instead of vfork, as the clusters do.
        return [
            subprocess.run(["true"], user=os.getuid(), capture_output=True, check=False).returncode
            for _ in range(FORKS)
        ]

    traffic = asyncio.create_task(calls())
    try:
        await asyncio.sleep(0.2)
        codes = await asyncio.to_thread(fork_children)
    finally:
        forking = False
        made = await traffic
        await server.stop(None)
    assert made > 0
    assert codes == [0] * FORKS, f"{sum(code != 0 for code in codes)} of {FORKS} children died: {set(codes)}"
