"""A VoiceError (a gRPC status) becomes the HTTP answer the official openai client expects: status, OpenAI's error
shape, ``param`` from the first field violation, ``retry-after`` from RetryInfo, no internals in a 500."""

from __future__ import annotations

import grpc
import pytest

from voice_client.errors import ERROR_CLASSES, FieldViolation, VoiceError
from voice_gateway.openai_http.openai_errors import from_voice_error


def failure(
    code: grpc.StatusCode,
    message: str = "what went wrong",
    *,
    field_violations: tuple[FieldViolation, ...] = (),
    retry_after: float | None = None,
    request_id: str = "",
) -> VoiceError:
    return ERROR_CLASSES[code](
        message, field_violations=field_violations, retry_after=retry_after, request_id=request_id
    )


@pytest.mark.parametrize(
    ("code", "status", "kind"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, 400, "invalid_request_error"),
        (grpc.StatusCode.FAILED_PRECONDITION, 400, "invalid_request_error"),
        (grpc.StatusCode.UNAUTHENTICATED, 401, "authentication_error"),
        (grpc.StatusCode.PERMISSION_DENIED, 403, "permission_error"),
        (grpc.StatusCode.NOT_FOUND, 404, "invalid_request_error"),
        (grpc.StatusCode.ALREADY_EXISTS, 409, "invalid_request_error"),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, 413, "invalid_request_error"),
        (grpc.StatusCode.UNAVAILABLE, 503, "server_error"),
        (grpc.StatusCode.DEADLINE_EXCEEDED, 504, "server_error"),
    ],
)
def test_each_code_has_its_status(code: grpc.StatusCode, status: int, kind: str) -> None:
    answer = from_voice_error(failure(code))
    assert (answer.status, answer.type) == (status, kind)
    assert set(answer.body()["error"]) == {"message", "type", "param", "code"}


def test_field_violations_name_the_param() -> None:
    answer = from_voice_error(
        failure(
            grpc.StatusCode.INVALID_ARGUMENT,
            "bad request",
            field_violations=(FieldViolation("text", "empty"), FieldViolation("config.seed", "negative")),
        )
    )
    assert answer.param == "text"
    assert "text: empty" in answer.message and "config.seed: negative" in answer.message


def test_a_rate_limit_says_when_to_come_back() -> None:
    answer = from_voice_error(failure(grpc.StatusCode.RESOURCE_EXHAUSTED, retry_after=2.3))
    assert answer.status == 429 and answer.code == "rate_limit_exceeded"
    assert answer.headers == {"retry-after": "3", "retry-after-ms": "2300"}
    brief = from_voice_error(failure(grpc.StatusCode.RESOURCE_EXHAUSTED, retry_after=0.05))
    assert brief.headers["retry-after"] == "1"


def test_internal_failures_hide_their_words() -> None:
    for code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DATA_LOSS):
        answer = from_voice_error(failure(code, "Traceback: secret path /srv/x", request_id="r-1"))
        assert answer.status == 500 and "secret" not in answer.message and "r-1" in answer.message
