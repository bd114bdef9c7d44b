"""What the model-control RPCs (GetModelStatus, LoadModel, UnloadModel) of a service that holds a model share.

TTS and ASR each have their own ``ModelStatus`` message and ``ModelState`` enum (the precision field is ``dtype`` in
one and ``compute_type`` in the other, and each adds fields of its own), so nothing here imports a service's
protos: the service passes its message class and enum, and adds its own fields.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol, TypeVar

from google.protobuf.message import Message

from voice_common.model_manager import ModelState, ModelStatus
from voice_common.server.durations import duration_from_seconds

MessageT = TypeVar("MessageT", bound=Message)
SpecT = TypeVar("SpecT")


class ModelStateEnum(Protocol):
    """A generated ``ModelState`` enum (``pb.ModelState``): its numbers by name."""

    def Value(self, name: str) -> int: ...


def model_state_number(states: ModelStateEnum, state: ModelState) -> int:
    """``state`` in a service's enum: ``ModelState.READY`` is its ``MODEL_STATE_READY``."""
    return states.Value(f"MODEL_STATE_{state.name}")


def model_status_message(
    message_class: type[MessageT],
    states: ModelStateEnum,
    status: ModelStatus,
    *,
    precision_field: str,
    **service_fields: Any,
) -> MessageT:
    """A service's ``ModelStatus`` message: the fields every service has from ``status`` (its precision under the
    service's name for it, ``precision_field``), and ``service_fields`` (queue depth, cache entries, ...)."""
    return message_class(
        state=model_state_number(states, status.state),
        model=status.model,
        device=status.device,
        load_time=duration_from_seconds(status.load_seconds),
        message=status.message,
        **{precision_field: status.precision},
        **service_fields,
    )


def requested_spec(configured: SpecT, **requested: str) -> SpecT:
    """The spec a LoadModel asks for: each of ``requested`` (model, device, a precision) that the client filled in,
    over ``configured``; the rest (and every field the request cannot name) as configured."""
    chosen = {name: value.strip() for name, value in requested.items() if value.strip()}
    return dataclasses.replace(configured, **chosen)  # type: ignore[type-var]
