"""Big catalogues: a bound on the file's size, and lookups within the databases' variable limits."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from bot.clock import ManualClock
from bot.services.workshops.catalogue_entries import CatalogueError
from bot.services.workshops.catalogue_file import MAX_FILE_MB
from bot.services.workshops.importer import import_catalogue
from storage.db import Database
from storage.models import Territory
from tests.test_catalogue_import import NOW, load

# Above PostgreSQL's 32,767 parameters per statement and SQLite's default limit of 32,766
# variables, in a file of under 1 MB.
MANY = 33_000
UPSTREAM_SQLITE_LIMIT = 32_766


@pytest.fixture
def sqlite_built_upstream(monkeypatch: pytest.MonkeyPatch) -> None:
    """SQLite connections with the variable limit of SQLite as built upstream (this system's
    build allows 250,000): the limit that hosts and Docker images commonly have."""
    connect = sqlite3.connect

    def connect_with_upstream_limit(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        connection = connect(*args, **kwargs)
        connection.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, UPSTREAM_SQLITE_LIMIT)
        return connection

    monkeypatch.setattr(sqlite3, "connect", connect_with_upstream_limit)


def test_a_file_over_the_bound_is_one_line_and_not_parsed(tmp_path: Path) -> None:
    path = tmp_path / "catalogue.yaml"
    path.write_text("# " + "x" * (MAX_FILE_MB * 1_000_000) + "\n", encoding="utf-8")
    with pytest.raises(CatalogueError) as caught:
        load(path)
    assert caught.value.lines == [
        f"{path}: the file is larger than 5 MB, the most a catalogue may weigh; split it into "
        "several files (a file may refer to entries already imported)"
    ]


@pytest.mark.storage
@pytest.mark.usefixtures("sqlite_built_upstream")
async def test_a_catalogue_of_more_entries_than_a_statement_may_hold_imports(
    db: Database, tmp_path: Path
) -> None:
    path = tmp_path / "catalogue.yaml"
    path.write_text(
        "territories:\n" + "".join(f"  - {{key: t{n}, name: N{n}}}\n" for n in range(MANY)),
        encoding="utf-8",
    )
    assert path.stat().st_size < MAX_FILE_MB * 1_000_000
    catalogue = load(path)
    clock = ManualClock(NOW)

    first = await import_catalogue(db, catalogue, clock=clock, source_name="c")
    again = await import_catalogue(db, catalogue, clock=clock, source_name="c")

    assert first.created["territories"] == again.unchanged["territories"] == MANY
    async with db.read() as session:
        assert await session.scalar(select(func.count()).select_from(Territory)) == MANY
