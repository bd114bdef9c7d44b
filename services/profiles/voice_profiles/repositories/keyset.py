"""Keyset paging over (created_at, id), newest first: the one ordering every list of the service uses."""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Select, and_, or_
from sqlalchemy.orm import InstrumentedAttribute

from voice_profiles.domain.paging import Cursor

Query = TypeVar("Query", bound=Select[Any])


def newest_first(
    query: Query,
    created_at: InstrumentedAttribute[datetime],
    row_id: InstrumentedAttribute[str],
    cursor: Cursor | None,
) -> Query:
    """Order newest first and, with a cursor, continue strictly after it (the id breaks ties in time)."""
    if cursor is not None:
        query = query.where(
            or_(created_at < cursor.created_at, and_(created_at == cursor.created_at, row_id < cursor.id))
        )
    return query.order_by(created_at.desc(), row_id.desc())
