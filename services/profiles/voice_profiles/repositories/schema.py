"""Schema migrations (Alembic) for the profile service's tables."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, pool

from voice_common.db import sync_url

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
VERSION_TABLE = "alembic_version_profiles"


class _DialectAnnouncements(logging.Filter):
    """Alembic opens every run with "Context impl SQLiteImpl." and "Will assume non-transactional DDL.": nothing an
    operator acts on at a first start. Its "Running upgrade 0001 -> 0002, ..." lines stay."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(("Context impl ", "Will assume "))


logging.getLogger("alembic.runtime.migration").addFilter(_DialectAnnouncements())


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", sync_url(database_url).replace("%", "%%"))
    return config


def upgrade_to_head(database_url: str) -> None:
    command.upgrade(alembic_config(database_url), "head")


async def upgrade_to_head_async(database_url: str) -> None:
    # Alembic is blocking; keep it off the event loop.
    await asyncio.to_thread(upgrade_to_head, database_url)


def pending_revisions(database_url: str) -> list[str]:
    """Revisions not yet applied; empty when the schema is current (checked by every readiness probe)."""
    logging.getLogger("alembic.runtime.migration").setLevel(logging.WARNING)  # no INFO line per probe
    script = ScriptDirectory.from_config(alembic_config(database_url))
    engine = create_engine(sync_url(database_url), poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            current = MigrationContext.configure(
                connection, opts={"version_table": VERSION_TABLE}
            ).get_current_heads()
    finally:
        engine.dispose()
    head = script.get_current_head()
    if head in current:
        return []
    return [
        rev.revision
        for rev in script.walk_revisions(base="base", head="heads")
        if rev.revision not in current
    ]
