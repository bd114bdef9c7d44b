"""The models the OpenAI-compatible face serves: the TTS and ASR models the platform runs (their
``GetModelStatus``), each also under OpenAI's common names so that code written for OpenAI runs unchanged.

``require_model(client, model, kind)`` is what a route calls with the request's ``model``: an alias of that kind is
taken as is (no call), the served model's own name is checked against the service (one call), anything else is
404 ``model_not_found`` as OpenAI answers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from voice_client import AsyncVoiceClient
from voice_client.errors import PermissionDenied, Unavailable
from voice_gateway.openai_http.openai_errors import OpenAIHTTPError

ModelKind = Literal["tts", "asr"]
TTS: ModelKind = "tts"
ASR: ModelKind = "asr"
# OpenAI's model names accepted for ours: every request under one of them runs on the platform's model of its kind.
ALIASES: dict[str, ModelKind] = {
    "tts-1": TTS,
    "tts-1-hd": TTS,
    "gpt-4o-mini-tts": TTS,
    "whisper-1": ASR,
    "gpt-4o-transcribe": ASR,
    "gpt-4o-mini-transcribe": ASR,
}
_KIND_WORDS = {TTS: "speech", ASR: "transcription"}


@dataclass(frozen=True)
class ServedModel:
    """One entry of ``GET /v1/models``: ``alias_of`` is the served model an OpenAI name stands for."""

    id: str
    kind: ModelKind
    alias_of: str | None = None


async def served_model(client: AsyncVoiceClient, kind: ModelKind) -> str:
    """The model the service of ``kind`` runs (or is loading; empty when none is configured)."""
    status = await (client.tts.model_status() if kind == TTS else client.asr.model_status())
    return status.model


async def served_models(client: AsyncVoiceClient) -> list[ServedModel]:
    """The models the caller may use (a key without the ``asr`` scope sees no ASR model) and their aliases; a
    service that does not answer is left out. 403 when the key may use neither."""
    listed: list[ServedModel] = []
    denied: list[PermissionDenied] = []
    for kind in (TTS, ASR):
        try:
            model = await served_model(client, kind)
        except PermissionDenied as error:
            denied.append(error)
            continue
        except Unavailable:
            model = ""
        if model:
            listed.append(ServedModel(model, kind))
        listed += [ServedModel(alias, kind, model or None) for alias, of in ALIASES.items() if of == kind]
    if len(denied) == 2:
        raise denied[0]
    return listed


async def require_model(client: AsyncVoiceClient, model: str, kind: ModelKind) -> str:
    """``model`` if it names a served model of ``kind`` (itself or an alias); else 404 ``model_not_found``."""
    if not model:
        raise OpenAIHTTPError(400, "you must provide a model parameter", param="model", code="missing_model")
    if ALIASES.get(model) == kind:
        return model
    if model not in ALIASES and model == await served_model(client, kind):
        return model
    aliases = ", ".join(alias for alias, of in ALIASES.items() if of == kind)
    raise OpenAIHTTPError(
        404,
        f"The model '{model}' does not exist or is not a {_KIND_WORDS[kind]} model here: use {aliases} or the "
        f"served model's own name (GET /v1/models lists them).",
        param="model",
        code="model_not_found",
    )
