"""``internal_channel``: the one way a service (or the gateway) builds its channel to another of the platform's
services, carrying the internal credential (docs/gateway.md).

With ``VOICE_INTERNAL_TLS_*`` set, the channel speaks TLS, presents this service's certificate and trusts only the
platform's CA; with ``VOICE_INTERNAL_TOKEN`` set, every call carries the token in ``x-voice-internal-token``. Either,
both or neither, as the server side (``build_server``) expects.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterable, Callable, Iterable, Sequence
from typing import Any

import grpc
from grpc import aio

from voice_common.config import CommonSettings

INTERNAL_TOKEN_KEY = "x-voice-internal-token"
# Calls spread over every address the target resolves to: on Kubernetes the internal Services are headless, so the
# name resolves to one address per pod, and gRPC's default (pick_first) would send every call to the first of them.
ROUND_ROBIN = json.dumps({"loadBalancingConfig": [{"round_robin": {}}]})
# How soon a channel tries again after its peer went away. gRPC's default back-off grows to two minutes, and a call
# on a channel waiting out its back-off fails at once with the last connection error: after a service restarts
# (a deploy, a crash), its callers would keep failing for seconds to minutes while it already serves.
RECONNECT_BACKOFF = (("grpc.initial_reconnect_backoff_ms", 250), ("grpc.max_reconnect_backoff_ms", 3000))


def internal_metadata(common: CommonSettings) -> tuple[tuple[str, str], ...]:
    """The token as call metadata, for a caller that sends it itself (see ``internal_channel``'s ``add_token``)."""
    token = common.internal_token.get_secret_value()
    return ((INTERNAL_TOKEN_KEY, token),) if token else ()


def internal_channel(
    target: str, common: CommonSettings, options: Sequence[tuple[str, Any]] = (), *, add_token: bool = True
) -> aio.Channel:
    """A channel to ``target`` (host:port) with the internal credential of ``common``; ``options`` are the call
    site's own channel options (message sizes, back-off), kept as given. Calls are balanced round robin over the
    target's addresses unless ``options`` name another ``grpc.service_config``, and a lost connection is tried again
    within 3 s (:data:`RECONNECT_BACKOFF`) unless ``options`` set the back-off.

    ``add_token=False``: the channel carries the TLS part only, and the caller puts ``internal_metadata(common)`` in
    each call's metadata itself. The gateway does so: grpc.aio runs a client interceptor as an extra task per call
    and per streamed message (about 50 µs a call, 100 µs a message measured), a cost the busiest caller avoids."""
    token = common.internal_token.get_secret_value() if add_token else ""
    interceptors: list[Any] = []  # grpc-stubs leaves aio.ClientInterceptor a placeholder type
    if token:
        # grpc.aio files each interceptor under the first of the four call shapes it is an instance of, so one
        # object per shape: a single class deriving from all four would add the token to unary calls only.
        interceptors = [
            _UnaryUnaryToken(token),
            _UnaryStreamToken(token),
            _StreamUnaryToken(token),
            _StreamStreamToken(token),
        ]
    channel_options = list(options)
    given = {name for name, _ in channel_options}
    if "grpc.service_config" not in given:
        channel_options.append(("grpc.service_config", ROUND_ROBIN))
    channel_options.extend((name, value) for name, value in RECONNECT_BACKOFF if name not in given)
    if not common.internal_tls:
        return aio.insecure_channel(target, options=channel_options, interceptors=interceptors)
    assert common.internal_tls_cert_file and common.internal_tls_key_file and common.internal_tls_ca_file
    credentials = grpc.ssl_channel_credentials(
        root_certificates=common.internal_tls_ca_file.read_bytes(),
        private_key=common.internal_tls_key_file.read_bytes(),
        certificate_chain=common.internal_tls_cert_file.read_bytes(),
    )
    if common.internal_tls_server_name:
        channel_options.append(("grpc.ssl_target_name_override", common.internal_tls_server_name))
    return aio.secure_channel(target, credentials, options=channel_options, interceptors=interceptors)


def _with_token(details: aio.ClientCallDetails, token: str) -> aio.ClientCallDetails:
    # Set, not added: a value the caller passed along (a forwarded client's) must not travel next to ours.
    metadata = aio.Metadata(
        *((key, value) for key, value in (details.metadata or ()) if key != INTERNAL_TOKEN_KEY),
        (INTERNAL_TOKEN_KEY, token),
    )
    return aio.ClientCallDetails(
        details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
    )


class _UnaryUnaryToken(aio.UnaryUnaryClientInterceptor):
    def __init__(self, token: str) -> None:
        self._token = token

    async def intercept_unary_unary(
        self,
        continuation: Callable[[aio.ClientCallDetails, Any], Any],
        client_call_details: aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        return await continuation(_with_token(client_call_details, self._token), request)


class _UnaryStreamToken(aio.UnaryStreamClientInterceptor):
    def __init__(self, token: str) -> None:
        self._token = token

    async def intercept_unary_stream(
        self,
        continuation: Callable[[aio.ClientCallDetails, Any], Any],
        client_call_details: aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        return await continuation(_with_token(client_call_details, self._token), request)


class _StreamUnaryToken(aio.StreamUnaryClientInterceptor):
    def __init__(self, token: str) -> None:
        self._token = token

    async def intercept_stream_unary(
        self,
        continuation: Callable[[aio.ClientCallDetails, Any], Any],
        client_call_details: aio.ClientCallDetails,
        request_iterator: Iterable[Any] | AsyncIterable[Any] | None,
    ) -> Any:
        return await continuation(_with_token(client_call_details, self._token), request_iterator)


class _StreamStreamToken(aio.StreamStreamClientInterceptor):
    def __init__(self, token: str) -> None:
        self._token = token

    async def intercept_stream_stream(
        self,
        continuation: Callable[[aio.ClientCallDetails, Any], Any],
        client_call_details: aio.ClientCallDetails,
        request_iterator: Iterable[Any] | AsyncIterable[Any] | None,
    ) -> Any:
        return await continuation(_with_token(client_call_details, self._token), request_iterator)
