"""The database layer's round trips: what each unit of work costs, and that the shortcuts taken
for speed (no needless rollback on SQLite, single-statement snapshots) change no result, on both
backends."""

from __future__ import annotations

import functools
import logging
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import Connection, func, insert, select, text, update
from sqlalchemy.exc import IntegrityError

from storage.db import Database
from storage.models import Resident

pytestmark = pytest.mark.storage

NOW = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)


class Trips(logging.Handler):
    """The calls made on aiosqlite's connection thread, as aiosqlite logs them (at DEBUG, one
    record per call, its argument the functools.partial it runs): sqlite3 methods by name, and
    the first word of each statement executed."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.calls: Counter[str] = Counter()
        self.statements: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        call = record.args[0] if isinstance(record.args, tuple) and record.args else None
        if not isinstance(call, functools.partial) or not record.getMessage().startswith(
            "executing"
        ):
            return
        name = getattr(call.func, "__name__", repr(call.func))
        self.calls[name] += 1
        if name in ("execute", "executemany") and call.args:
            self.statements.append(str(call.args[0]).split()[0].upper())

    def clear(self) -> None:
        self.calls.clear()
        self.statements.clear()

    def ends(self) -> dict[str, int]:
        """How the units of work ended: COMMIT and ROLLBACK calls."""
        return {name: self.calls[name] for name in ("commit", "rollback") if self.calls[name]}


@pytest.fixture
def trips() -> Iterator[Trips]:
    handler = Trips()
    logger = logging.getLogger("aiosqlite")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


async def _add_resident(db: Database, telegram_id: int) -> int:
    async with db.write() as session:
        resident = Resident(telegram_id=telegram_id, language="fr", created_at=NOW)
        session.add(resident)
        await session.flush()
        return resident.id


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)  # aiosqlite's thread only
async def test_sqlite_units_of_work_end_once(db: Database, trips: Trips) -> None:
    await _add_resident(db, 1)  # the pool's first connection is made here
    trips.clear()

    async with db.read() as session:
        await session.scalar(select(func.count()).select_from(Resident))
    assert trips.statements == ["BEGIN", "SELECT"]
    assert trips.ends() == {"rollback": 1}  # the session's; the pool adds none

    trips.clear()
    async with db.write() as session:
        await session.execute(update(Resident).values(language="en"))
    assert trips.statements == ["BEGIN", "UPDATE"]  # BEGIN IMMEDIATE
    assert trips.ends() == {"commit": 1}  # no rollback on return to the pool

    trips.clear()
    async with db.snapshot() as session:
        await session.scalar(select(func.count()).select_from(Resident))
    assert trips.statements == ["SELECT"]  # no BEGIN
    assert trips.ends() == {"rollback": 1}  # SQLAlchemy's end of the session, nothing to undo


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_sqlite_connection_returned_mid_transaction_is_rolled_back(
    db: Database, trips: Trips
) -> None:
    """The pool's reset still rolls back a transaction SQLAlchemy did not end itself."""
    await _add_resident(db, 2)  # one connection in the pool, reused below

    def begin_behind_sqlalchemy(connection: Connection) -> None:
        cursor = connection.connection.cursor()
        cursor.execute("BEGIN IMMEDIATE")
        cursor.close()

    trips.clear()
    async with db.engine.connect() as connection:
        await connection.run_sync(begin_behind_sqlalchemy)
    assert trips.ends() == {"rollback": 1}  # by the pool, on return

    async with db.write() as session:  # the same connection: a BEGIN in a transaction would fail
        await session.execute(update(Resident).values(language="ar"))
    async with db.snapshot() as session:
        assert await session.scalar(select(Resident.language)) == "ar"


async def test_results_row_counts_and_ids_are_those_of_the_driver(db: Database) -> None:
    first = await _add_resident(db, 11)
    second = await _add_resident(db, 12)
    assert second == first + 1  # inserted primary keys come back

    async with db.write() as session:
        changed = await session.execute(
            update(Resident).where(Resident.telegram_id.in_([11, 12])).values(language="ar")
        )
        assert changed.rowcount == 2
        unchanged = await session.execute(
            update(Resident).where(Resident.telegram_id == 999).values(language="ar")
        )
        assert unchanged.rowcount == 0
        await session.execute(
            insert(Resident),
            [{"telegram_id": 20 + n, "language": "en", "created_at": NOW} for n in range(3)],
        )

    async with db.read() as session:
        rows = (
            await session.execute(
                select(Resident.telegram_id, Resident.language).order_by(Resident.telegram_id)
            )
        ).all()
        streamed = [
            row.telegram_id
            async for row in await session.stream(
                select(Resident.telegram_id)
                .order_by(Resident.telegram_id)
                .execution_options(yield_per=2)
            )
        ]
    assert rows == [(11, "ar"), (12, "ar"), (20, "en"), (21, "en"), (22, "en")]
    assert streamed == [11, 12, 20, 21, 22]


async def test_a_refused_write_rolls_back_and_the_connection_stays_usable(db: Database) -> None:
    await _add_resident(db, 31)
    with pytest.raises(IntegrityError):
        async with db.write() as session:
            await session.execute(update(Resident).values(language="en"))
            session.add(Resident(telegram_id=31, language="fr", created_at=NOW))  # duplicate
            await session.flush()
    async with db.snapshot() as session:
        language = await session.scalar(select(Resident.language))
    assert language == "fr"  # the update before the refusal was rolled back too
    async with db.write() as session:
        await session.execute(update(Resident).values(language="ar"))
    async with db.read() as session:
        assert await session.scalar(select(Resident.language)) == "ar"


async def test_snapshot_sees_what_was_committed_and_holds_no_transaction(
    db: Database, backend: str
) -> None:
    await _add_resident(db, 41)
    async with db.snapshot() as session:
        assert await session.scalar(select(Resident.telegram_id)) == 41
    if backend == "postgresql":
        # Outside a transaction, each statement is its own transaction with its own id.
        transaction_id = text("SELECT txid_current()")
        for unit_of_work, separate in ((db.snapshot, True), (db.read, False)):
            async with unit_of_work() as session:
                first = await session.scalar(transaction_id)
                second = await session.scalar(transaction_id)
            assert (first != second) is separate
    async with db.write() as session:
        await session.execute(update(Resident).values(telegram_id=42))
    async with db.snapshot() as session:
        assert await session.scalar(select(Resident.telegram_id)) == 42
