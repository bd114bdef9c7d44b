"""What every route of the OpenAI-compatible face is given (``OpenAIContext``) and how it acts for the caller.

Each HTTP request is served by calling the gateway's own gRPC port with the caller's key: ``context.caller(request)``
is a view of the one ``AsyncVoiceClient`` (one channel for the process) that sends the request's
``Authorization: Bearer <key>``, so keys, tenants, scopes and rate limits are exactly the gRPC ones. The views never
retry (``RetryPolicy.none()``): a 429 or 503 goes back to the HTTP caller with ``retry-after``, and the official
``openai`` client's own retries act on it.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request

from voice_client import AsyncVoiceClient
from voice_gateway.openai_http.openai_errors import OpenAIHTTPError


@dataclass(frozen=True)
class OpenAIContext:
    """``client``: the gateway's loopback client (no key of its own, no retries). ``max_upload_bytes``: the largest
    request body (an uploaded file) the face accepts; beyond → 413. ``max_json_bytes``: the largest JSON body.
    ``max_message_bytes``: the gRPC message limit (``VOICE_GRPC_MAX_MESSAGE_BYTES``), which bounds what a unary call
    such as Transcribe can carry inline."""

    client: AsyncVoiceClient
    max_upload_bytes: int = 25 * 1024 * 1024
    max_json_bytes: int = 1024 * 1024
    max_message_bytes: int = 8 * 1024 * 1024

    def caller(self, request: Request) -> AsyncVoiceClient:
        """The client acting for this request's key; 401 in OpenAI's shape without one."""
        return self.client.with_options(api_key=bearer_key(request))


def bearer_key(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key:
        raise OpenAIHTTPError(
            401,
            "You didn't provide an API key: send it as 'Authorization: Bearer <key>' (an API key of the voice "
            "platform, docs/gateway.md).",
            code="missing_api_key",
        )
    return key
