"""The bare baseline: a grpc.aio server with no interceptor, no health check, no database, in its own process.

``python -m bench.echo_server --port N`` serves two methods through a generic handler:

* ``/bench.Echo/Echo`` (unary, bytes in / bytes out, identity serializers): answers its request;
* ``/bench.Echo/Drain`` (client streaming): receives ``AddSampleRequest`` messages, joins their chunks the way the
  profile service's ``read_upload`` does, and answers the total length as 8 big-endian bytes. It is the floor for
  a streamed upload: gRPC transfer plus protobuf parsing, nothing else.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import AsyncIterator
from typing import Any

import grpc
from grpc import aio

from voice.profiles.v1 import profiles_service_pb2 as pb

SERVICE = "bench.Echo"
ECHO_METHOD = f"/{SERVICE}/Echo"
DRAIN_METHOD = f"/{SERVICE}/Drain"
MAX_MESSAGE_BYTES = 64 * 1024 * 1024


async def echo(request: bytes, context: Any) -> bytes:
    return request


async def drain(requests: AsyncIterator[pb.AddSampleRequest], context: Any) -> bytes:
    parts: list[bytes] = []
    async for message in requests:
        if message.WhichOneof("payload") == "chunk":
            parts.append(message.chunk)
    data = b"".join(parts)
    return len(data).to_bytes(8, "big")


def build_handler() -> grpc.GenericRpcHandler:
    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Echo": grpc.unary_unary_rpc_method_handler(echo),
            "Drain": grpc.stream_unary_rpc_method_handler(
                drain, request_deserializer=pb.AddSampleRequest.FromString
            ),
        },
    )


async def serve(host: str, port: int) -> None:
    server = aio.server(
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 0),
        ]
    )
    server.add_generic_rpc_handlers((build_handler(),))
    if server.add_insecure_port(f"{host}:{port}") == 0:
        raise SystemExit(f"echo server: could not listen on {host}:{port}")
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
