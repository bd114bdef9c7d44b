"""Alembic environment: the URL comes from the caller (``voice_profiles.repositories.schema``), never from a file."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

from voice_profiles.repositories.models import Base

config = context.config
target_metadata = Base.metadata


def run_migrations_online() -> None:
    url = config.get_main_option("sqlalchemy.url")
    assert url, "sqlalchemy.url must be set by the caller"
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            # SQLite cannot ALTER most things in place; batch mode rebuilds tables when a migration needs it.
            render_as_batch=connection.dialect.name == "sqlite",
            version_table="alembic_version_profiles",
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


run_migrations_online()
