"""``GET /v1/models`` (the served models and their OpenAI aliases, voice_gateway.openai_http.model_catalogue),
``GET /v1/models/{model}`` and ``GET /v1/audio/voices`` (the caller's tenant's voice profiles, in the shape of
OpenAI's ``audio.voice`` objects)."""

from __future__ import annotations

import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from voice_gateway.openai_http.context import OpenAIContext
from voice_gateway.openai_http.model_catalogue import ServedModel, served_models
from voice_gateway.openai_http.openai_errors import OpenAIHTTPError

OWNER = "voice-platform"


def routes(context: OpenAIContext) -> list[BaseRoute]:
    # OpenAI's model objects carry a creation time; ours are as old as this process's view of them.
    created = int(time.time())

    def model_object(model: ServedModel) -> dict[str, Any]:
        described: dict[str, Any] = {"id": model.id, "object": "model", "created": created, "owned_by": OWNER}
        described["kind"] = model.kind
        if model.alias_of is not None:
            described["alias_of"] = model.alias_of
        return described

    async def list_models(request: Request) -> JSONResponse:
        models = await served_models(context.caller(request))
        return JSONResponse({"object": "list", "data": [model_object(model) for model in models]})

    async def get_model(request: Request) -> JSONResponse:
        wanted = request.path_params["model"]
        for model in await served_models(context.caller(request)):
            if model.id == wanted:
                return JSONResponse(model_object(model))
        raise OpenAIHTTPError(
            404, f"The model '{wanted}' does not exist", param="model", code="model_not_found"
        )

    async def list_voices(request: Request) -> JSONResponse:
        voices = [
            {
                "id": profile.id,
                "object": "audio.voice",
                "name": profile.name,
                "created_at": profile.create_time.seconds,
                "type": "audio_sample",
                "language": profile.language,
                "description": profile.description,
                "sample_count": profile.sample_count,
            }
            async for profile in context.caller(request).profiles.list()
        ]
        return JSONResponse({"object": "list", "data": voices})

    return [
        Route("/v1/models", list_models, methods=["GET"]),
        Route("/v1/models/{model:path}", get_model, methods=["GET"]),
        Route("/v1/audio/voices", list_voices, methods=["GET"]),
    ]
