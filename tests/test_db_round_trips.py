"""The database layer's round trips: what each unit of work costs, and that the shortcuts taken
for speed (one trip per SQLite statement, no needless rollback, single-statement snapshots)
change no result, on both backends."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime

import aiosqlite.core
import pytest
from sqlalchemy import func, insert, select, text, update
from sqlalchemy.exc import IntegrityError

from storage.db import Database
from storage.models import Resident

pytestmark = pytest.mark.storage

NOW = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)


@pytest.fixture
def trips(monkeypatch: pytest.MonkeyPatch) -> Iterator[Counter[str]]:
    """Counts the calls made on aiosqlite's connection thread, by function name."""
    counts: Counter[str] = Counter()
    original = aiosqlite.core.Connection._execute

    async def counting(self, fn, *args, **kwargs):  # type: ignore[no-untyped-def]
        counts[getattr(fn, "__name__", repr(fn))] += 1
        return await original(self, fn, *args, **kwargs)

    monkeypatch.setattr(aiosqlite.core.Connection, "_execute", counting)
    yield counts


async def _add_resident(db: Database, telegram_id: int) -> int:
    async with db.write() as session:
        resident = Resident(telegram_id=telegram_id, language="fr", created_at=NOW)
        session.add(resident)
        await session.flush()
        return resident.id


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)  # aiosqlite's thread only
async def test_sqlite_statement_is_one_trip_and_units_do_not_roll_back_twice(
    db: Database, trips: Counter[str]
) -> None:
    await _add_resident(db, 1)  # the pool's first connection is made here
    trips.clear()

    async with db.read() as session:
        await session.scalar(select(func.count()).select_from(Resident))
    assert trips == {"_run_statement": 2, "rollback": 1}  # BEGIN, SELECT; ROLLBACK once

    trips.clear()
    async with db.write() as session:
        await session.execute(update(Resident).values(language="en"))
    assert trips == {"_run_statement": 2, "commit": 1}  # BEGIN IMMEDIATE, UPDATE; COMMIT

    trips.clear()
    async with db.snapshot() as session:
        await session.scalar(select(func.count()).select_from(Resident))
    assert trips == {"_run_statement": 1}  # no BEGIN, nothing to roll back


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
