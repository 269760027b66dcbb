"""The migrations build exactly the schema the models describe, on both backends."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Connection

from storage.db import Database
from storage.migrate import is_at_head
from storage.models import Base

pytestmark = pytest.mark.storage


async def test_migrations_match_models(db: Database) -> None:
    def diff(connection: Connection) -> list:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return compare_metadata(context, Base.metadata)

    async with db.engine.connect() as conn:
        differences = await conn.run_sync(diff)
    assert differences == []
    assert await is_at_head(db.engine)


async def test_upgrade_with_data_then_downgrade_to_nothing(empty_database_url: str) -> None:
    """Existing rows survive each migration (workshops get check-in codes), and every
    migration can be undone."""
    from alembic import command
    from sqlalchemy import inspect, text

    from storage.migrate import alembic_config

    database = Database(empty_database_url)

    async def migrate(action, target: str) -> None:
        def run(connection: Connection) -> None:
            config = alembic_config()
            config.attributes["connection"] = connection
            action(config, target)

        async with database.engine.begin() as conn:
            await conn.run_sync(run)

    try:
        await migrate(command.upgrade, "0001")
        async with database.engine.begin() as conn:
            await conn.execute(text("INSERT INTO territories (id, key, name) VALUES (1, 't', 'T')"))
            await conn.execute(
                text(
                    "INSERT INTO venues (id, key, territory_id, name, address, latitude,"
                    " longitude, opening_notes, accessibility_notes)"
                    " VALUES (1, 'v', 1, 'V', 'A', 45.4, 4.4, '{}', '{}')"
                )
            )
            await conn.execute(
                text("INSERT INTO themes (id, key, name) VALUES (1, 'th', '{\"fr\": \"T\"}')")
            )
            await conn.execute(
                text(
                    "INSERT INTO workshops (id, key, title, description, theme_id, venue_id,"
                    " starts_at, ends_at, capacity, created_at, updated_at) VALUES"
                    " (1, 'w', '{}', '{}', 1, 1, '2026-12-01 13:00:00+00', '2026-12-01 15:00:00+00',"
                    " 5, '2026-11-01 00:00:00+00', '2026-11-01 00:00:00+00')"
                )
            )
        await migrate(command.upgrade, "head")
        async with database.engine.connect() as conn:
            code = await conn.scalar(text("SELECT checkin_code FROM workshops WHERE id = 1"))
        assert code is not None and len(code) == 5
        assert await is_at_head(database.engine)
        await migrate(command.downgrade, "base")
        async with database.engine.connect() as conn:
            tables = await conn.run_sync(lambda sync: inspect(sync).get_table_names())
        assert set(tables) <= {"alembic_version"}
    finally:
        await database.dispose()


def test_the_head_revision_known_to_the_bot_is_alembics() -> None:
    from alembic.script import ScriptDirectory

    from storage.migrate import HEAD_REVISION, alembic_config

    assert ScriptDirectory.from_config(alembic_config()).get_heads() == [HEAD_REVISION]


async def test_a_database_at_head_is_checked_without_alembic(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The start of the bot on an up-to-date database: one query, no migration scripts."""
    from storage import migrate

    def no_alembic() -> None:
        raise AssertionError("Alembic was loaded for a database already at head")

    monkeypatch.setattr(migrate, "alembic_config", no_alembic)
    await migrate.upgrade_to_head(db.engine)
    assert await migrate._recorded_revision(db.engine) == migrate.HEAD_REVISION
