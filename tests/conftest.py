"""Shared fixtures: every storage test runs on SQLite and on PostgreSQL.

PostgreSQL is reached at TEST_POSTGRES_URL (default: the local server, trust auth). Locally a
missing server skips its half of the suite with a reason; in CI (CI=true) it is a failure, so a
green CI always means both backends passed.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from bench.common import admin_execute
from storage.db import Database
from storage.migrate import upgrade_to_head
from storage.models import Base

POSTGRES_ADMIN_URL = os.environ.get(
    "TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
BACKENDS = ("sqlite", "postgresql")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _new_postgres_database(prefix: str) -> str:
    """Create a database and return its URL; skip (locally) or fail (in CI) when unreachable."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    try:
        asyncio.run(admin_execute(f'CREATE DATABASE "{name}"', POSTGRES_ADMIN_URL))
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        message = f"PostgreSQL unreachable at {POSTGRES_ADMIN_URL}: {exc}"
        if IN_CI:
            pytest.fail(message + " (CI requires PostgreSQL)", pytrace=False)
        pytest.skip(message)
    return make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)


def _drop_postgres_database(url: str) -> None:
    name = make_url(url).database
    asyncio.run(admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', POSTGRES_ADMIN_URL))


async def _migrate(url: str) -> None:
    database = Database(url)
    try:
        await upgrade_to_head(database.engine)
    finally:
        await database.dispose()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A PostgreSQL database of this test session, migrated to head, dropped at the end."""
    url = _new_postgres_database("capacity_test")
    asyncio.run(_migrate(url))
    yield url
    _drop_postgres_database(url)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An SQLite file migrated once; each test gets a copy, which is much faster than migrating."""
    path = tmp_path_factory.mktemp("sqlite-template") / "template.sqlite3"
    asyncio.run(_migrate(f"sqlite+aiosqlite:///{path}"))
    return path


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def database_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated, empty database of the current backend."""
    if backend == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        path = tmp_path / "bot.sqlite3"
        shutil.copyfile(template, path)
        return f"sqlite+aiosqlite:///{path}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
async def db(database_url: str, backend: str) -> AsyncIterator[Database]:
    database = Database(database_url)
    if backend == "postgresql":
        tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
        async with database.engine.begin() as conn:
            await conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    yield database
    await database.dispose()


@pytest.fixture
def empty_database_url(backend: str, tmp_path: Path) -> Iterator[str]:
    """A database with no schema at all, for migration tests."""
    if backend == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path}/empty.sqlite3"
        return
    url = _new_postgres_database("capacity_empty")
    yield url
    _drop_postgres_database(url)
