"""What a database failure means to a client: UNAVAILABLE, retry later.

An :data:`~voice_common.server.status_mapping.ErrorMapper` that a service with a database hands to the server in its
``ServiceRegistration``; it lives apart from ``status_mapping`` so that a process without a database (TTS, ASR, the
gateway) never imports SQLAlchemy.
"""

from __future__ import annotations

import grpc
from sqlalchemy.exc import DBAPIError, OperationalError


def database_unavailable(error: BaseException) -> tuple[grpc.StatusCode, str] | None:
    """UNAVAILABLE for a database that does not answer (or dropped the connection); None for any other error, a
    constraint violation included: that one is a bug the service must turn into a domain error itself."""
    if isinstance(error, OperationalError) or (
        isinstance(error, DBAPIError) and error.connection_invalidated
    ):
        return grpc.StatusCode.UNAVAILABLE, "the database is not answering; retry later"
    return None
