"""The SQLAlchemy models and the Alembic migrations describe the same schema (migration 0004 added api_keys to
both), on SQLite and on PostgreSQL: a column or index added to one and forgotten in the other fails here."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from profiles_harness import Harness
from sqlalchemy import create_engine, inspect, pool

from voice_common.db import sync_url
from voice_profiles.repositories.models import Base
from voice_profiles.repositories.schema import VERSION_TABLE, pending_revisions


def _differences(url: str) -> list[Any]:
    engine = create_engine(sync_url(url), poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(
                connection,
                opts={
                    "compare_type": True,
                    # Alembic's own bookkeeping table is no model's.
                    "include_name": lambda name, kind, _parent: (
                        not (kind == "table" and name == VERSION_TABLE)
                    ),
                },
            )
            return list(compare_metadata(context, Base.metadata))
    finally:
        engine.dispose()


def _api_key_columns(url: str) -> set[str]:
    engine = create_engine(sync_url(url), poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            return {column["name"] for column in inspect(connection).get_columns("api_keys")}
    finally:
        engine.dispose()


def test_models_and_migrations_agree(harness: Harness) -> None:
    url = harness.app.database_url
    assert pending_revisions(url) == []  # the harness migrated to head, 0004 included
    assert _differences(url) == []
    assert {"prefix", "key_sha256", "tenant_id", "scopes", "last_used_at", "revoked_at", "expires_at"} <= (
        _api_key_columns(url)
    )
