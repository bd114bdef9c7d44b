"""The OpenAI-compatible HTTP face of the gateway (docs/openai.md), served by the gateway process beside its gRPC
port: ``POST /v1/audio/speech``, ``GET /v1/models``, ``GET /v1/audio/voices`` and whatever other route modules
``http_app.ROUTE_MODULES`` lists.

- ``context``: ``OpenAIContext`` (the loopback gRPC client, limits) and the per-request view with the caller's key.
- ``openai_errors``: ``OpenAIHTTPError`` and the mapping of a ``VoiceError`` (gRPC status) to an HTTP answer.
- ``http_app``: ``build_app(context)``, the Starlette app; ``ROUTE_MODULES``, where a module's routes are added.
- ``model_catalogue``: the served models and their OpenAI aliases (``require_model``).
- ``http_server``: uvicorn's server on the gateway's event loop, drained with the gRPC server.
"""
