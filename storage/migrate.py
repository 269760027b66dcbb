"""Bring a database to the latest schema with Alembic, on SQLite and PostgreSQL alike."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

if TYPE_CHECKING:
    from alembic.config import Config
    from sqlalchemy.engine import Connection

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
# The newest migration's revision. Every start of the bot runs the migrations; when the
# database is already there (the usual case), one query comparing with this says so, instead
# of loading Alembic and every migration script: a tenth of the start-up (BENCHMARKS.md, §4).
# tests/test_schema.py keeps it equal to Alembic's own head.
HEAD_REVISION = "0007"


def alembic_config() -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


async def upgrade_to_head(engine: AsyncEngine) -> None:
    """Apply every pending migration in one transaction (PostgreSQL) or in order (SQLite)."""
    if await _recorded_revision(engine) == HEAD_REVISION:
        return

    def _upgrade(connection: Connection) -> None:
        from alembic import command

        config = alembic_config()
        config.attributes["connection"] = connection
        command.upgrade(config, "head")

    async with engine.begin() as connection:
        await connection.run_sync(_upgrade)


async def is_at_head(engine: AsyncEngine) -> bool:
    """True when the database needs no migration (used to report start-up state)."""

    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    def _check(connection: Connection) -> bool:
        current = MigrationContext.configure(connection).get_current_heads()
        return set(current) == set(ScriptDirectory.from_config(alembic_config()).get_heads())

    async with engine.connect() as connection:
        return await connection.run_sync(_check)


async def _recorded_revision(engine: AsyncEngine) -> str | None:
    """The revision Alembic recorded in the database; None for a new database."""
    try:
        async with engine.connect() as connection:
            rows = (await connection.execute(text("SELECT version_num FROM alembic_version"))).all()
    except DBAPIError:  # no alembic_version table yet
        return None
    return rows[0][0] if len(rows) == 1 else None
