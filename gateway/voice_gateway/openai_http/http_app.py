"""The OpenAI-compatible HTTP app (Starlette), built from explicit injected objects: ``build_app(context)``.

Routes come from modules: each has a function ``routes(context: OpenAIContext) -> list[BaseRoute]``, listed in
``ROUTE_MODULES`` below. To add endpoints, write ``voice_gateway/openai_http/<name>_routes.py`` with such a function
and add one line to ``ROUTE_MODULES``. A route handler:

- gets its gRPC client with ``context.caller(request)`` (the caller's key; voice_gateway.openai_http.context);
- raises ``OpenAIHTTPError`` (voice_gateway.openai_http.openai_errors) for what it refuses itself, and lets a
  ``VoiceError`` from the client propagate: the handlers here answer both in OpenAI's JSON error shape;
- checks ``model`` with voice_gateway.openai_http.model_catalogue (``require_model``).

Every other path answers 404, a wrong method 405, both in OpenAI's shape.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute

from voice_client.errors import VoiceError
from voice_gateway.openai_http import catalogue_routes, speech_routes, transcription_routes
from voice_gateway.openai_http.context import OpenAIContext
from voice_gateway.openai_http.openai_errors import OpenAIHTTPError, from_voice_error

log = logging.getLogger("voice_gateway.openai_http")

RouteFactory = Callable[[OpenAIContext], list[BaseRoute]]

# One line per module of routes.
ROUTE_MODULES: Sequence[RouteFactory] = (
    speech_routes.routes,
    catalogue_routes.routes,
    transcription_routes.routes,
)


def error_response(error: OpenAIHTTPError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


async def _openai_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, OpenAIHTTPError)
    return error_response(error)


async def _voice_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, VoiceError)
    answer = from_voice_error(error)
    if answer.status >= 500:
        log.warning(
            "a call behind an HTTP request failed",
            extra={"path": request.url.path, "code": error.code.name, "request_id": error.request_id},
        )
    return error_response(answer)


async def _http_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, HTTPException)
    if error.status_code == 404:
        message = f"Invalid URL ({request.method} {request.url.path})"
    elif error.status_code == 405:
        message = f"{request.method} is not allowed on {request.url.path}"
    else:
        message = str(error.detail)
    return error_response(OpenAIHTTPError(error.status_code, message, headers=error.headers))


async def _unexpected(request: Request, error: Exception) -> Response:
    log.exception("an HTTP request failed", extra={"path": request.url.path})
    return error_response(OpenAIHTTPError(500, "the server failed to handle the request"))


def build_app(context: OpenAIContext, route_modules: Sequence[RouteFactory] = ROUTE_MODULES) -> Starlette:
    routes = [route for factory in route_modules for route in factory(context)]
    return Starlette(
        routes=routes,
        exception_handlers={
            OpenAIHTTPError: _openai_error,
            VoiceError: _voice_error,
            HTTPException: _http_error,
            Exception: _unexpected,
        },
    )
