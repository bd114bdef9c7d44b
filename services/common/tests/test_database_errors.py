"""A database's failures become UNAVAILABLE only on a server whose service plugs in ``database_unavailable``: the
mapping is the profile service's (through its ServiceRegistration), so that voice_common itself needs no SQLAlchemy."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import grpc
import pytest
from grpc import aio
from sqlalchemy.exc import IntegrityError, OperationalError

from voice_common.config import CommonSettings
from voice_common.server.bootstrap import ServiceRegistration, build_server
from voice_common.server.database_errors import database_unavailable
from voice_common.server.status_mapping import ErrorMapper

SERVICE = "test.v1.DatabaseService"
RAISES: dict[str, Exception] = {
    "down": OperationalError("SELECT 1", {}, Exception("connection refused")),
    "duplicate": IntegrityError("INSERT", {}, Exception("duplicate key value")),
}


async def _raise(request: bytes, context: Any) -> bytes:
    raise RAISES[request.decode()]


def _registration(error_mappers: Sequence[ErrorMapper]) -> ServiceRegistration:
    handler = grpc.method_handlers_generic_handler(
        SERVICE,
        {"Raise": grpc.unary_unary_rpc_method_handler(_raise, lambda data: data, lambda data: data)},
    )

    def add(server: aio.Server) -> None:
        server.add_generic_rpc_handlers((handler,))

    return ServiceRegistration(SERVICE, add, error_mappers=error_mappers)


@asynccontextmanager
async def _calling(error_mappers: Sequence[ErrorMapper]) -> AsyncIterator[Any]:
    server = build_server(
        settings=CommonSettings(), services=[_registration(error_mappers)], host="127.0.0.1", port=0
    )
    await server.start()
    channel = aio.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        yield channel.unary_unary(f"/{SERVICE}/Raise", lambda data: data, lambda data: data)
    finally:
        await channel.close(None)
        await server.stop(0)


async def _code_and_message(call: Any, what: str) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(aio.AioRpcError) as failed:
        await call(what.encode(), timeout=5)
    return failed.value.code(), failed.value.details() or ""


async def test_a_database_that_does_not_answer_is_unavailable_where_the_service_says_so() -> None:
    async with _calling([database_unavailable]) as call:
        code, message = await _code_and_message(call, "down")
    assert code is grpc.StatusCode.UNAVAILABLE
    assert message == "the database is not answering; retry later"


async def test_other_database_errors_stay_internal_and_unquoted() -> None:
    async with _calling([database_unavailable]) as call:
        code, message = await _code_and_message(call, "duplicate")
    assert code is grpc.StatusCode.INTERNAL
    assert "duplicate" not in message


async def test_without_the_mapper_a_database_error_is_internal() -> None:
    async with _calling([]) as call:
        code, _ = await _code_and_message(call, "down")
    assert code is grpc.StatusCode.INTERNAL
