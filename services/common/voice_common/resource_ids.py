"""What an id of a platform resource is: one rule for every RPC of every service that takes one.

Profiles, samples and generations are named by UUIDs the profile service makes. A value that is not a UUID cannot
name anything, so it is a bad request: ``INVALID_ARGUMENT`` naming the field, checked before any lookup and before
any call to another service (TTS and ASR check the ids they pass on to the profile service, so a client hears the
same answer through them). A well-formed id that names nothing of the caller's tenant is ``NOT_FOUND``.

Messages quote the value bounded (:func:`voice_common.errors.quoted`): an id of 10 000 characters gets a short
answer, not one too large for gRPC's metadata limit.
"""

from __future__ import annotations

import re
import uuid

from voice_common.errors import InvalidArgument, quoted

MAX_CLIENT_TOKEN_CHARS = 128
# Visible ASCII, no spaces: a UUID, a hash, an order number.
_CLIENT_TOKEN = re.compile(rf"[!-~]{{1,{MAX_CLIENT_TOKEN_CHARS}}}")
# The longest spelling of a UUID that uuid.UUID accepts ("urn:uuid:" + 36); anything longer is not one.
_MAX_ID_CHARS = 45


def check_id(kind: str, value: str, field: str) -> str:
    """The id in its canonical form (lower-case, hyphenated); InvalidArgument naming ``field`` when ``value`` is
    empty or not a UUID. ``kind`` names the resource in the message ("profile", "sample", "generation")."""
    if not value.strip():
        raise InvalidArgument(f"{field} is required: the {kind}'s id", field=field)
    try:
        if len(value) > _MAX_ID_CHARS:
            raise ValueError(value)
        return str(uuid.UUID(value))
    except ValueError:
        raise InvalidArgument(
            f"{field} {quoted(value)} is not a {kind} id: ids are UUIDs, as the server returned them",
            field=field,
        ) from None


def is_client_token(value: str) -> bool:
    """Whether ``value`` is a token a client may choose for itself (its ``x-request-id``, an upload's
    ``request_id``): 1-128 visible ASCII characters, no spaces. One shape for both, so a client may use one value
    for both, and short enough to echo in logs, metadata and messages."""
    return _CLIENT_TOKEN.fullmatch(value) is not None
