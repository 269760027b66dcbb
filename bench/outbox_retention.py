"""The outbox stays bounded: 10 broadcasts to 10,000 residents and the daily retention job.

    .venv/bin/python -m bench.outbox_retention [--quick]

Everything runs in this one process, on SQLite and on PostgreSQL (when reachable), through
the real RetentionService (as the daily job calls it) on a migrated database and a manual
clock. One broadcast a week for 10 weeks, each one row per recipient, all sent within the
hour (as the broadcast sender leaves them); then the clock moves a day at a time for 100
days and the daily run deletes what is older than OUTBOX_RETENTION (30 days). Printed: the
outbox's size after each broadcast and at the end (its peak is about the broadcasts of the
last 30 days), the rows deleted, the time of each daily run, and the longest single DELETE
(one batch of OUTBOX_BATCH rows: how long one transaction holds its locks).

--quick: 1,000 residents instead of 10,000.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import event, func, insert, select

from bench.common import (
    cli,
    drop_postgres_database,
    machine_line,
    migrated,
    new_postgres_database,
    postgres_available,
    print_table,
    verdict,
    write_results,
)
from bot.clock import ManualClock
from bot.services.privacy.retention import OUTBOX_BATCH, OUTBOX_KEPT_FOR, RetentionService
from bot.services.registration import RegistrationService
from storage.db import Database
from storage.models import Broadcast, OutboxMessage, Resident

START = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
BROADCASTS = 10
EVERY = timedelta(days=7)
DAYS = 100
INSERT_BATCH = 5_000


async def _seed_residents(db: Database, count: int) -> list[int]:
    async with db.write() as session:
        await session.execute(
            insert(Resident),
            [
                {
                    "telegram_id": 10_000_000 + n,
                    "first_name": f"R{n}",
                    "language": "fr",
                    "consented_at": START,
                    "created_at": START,
                    "last_seen_at": START + timedelta(days=DAYS),  # nobody is erased here
                }
                for n in range(count)
            ],
        )
        return list(await session.scalars(select(Resident.id).order_by(Resident.id)))


async def _broadcast(db: Database, residents: list[int], at: datetime) -> None:
    """One broadcast as the sender leaves it: closed, one sent row per recipient."""
    sent_at = at + timedelta(minutes=10)
    async with db.write() as session:
        broadcast = Broadcast(
            created_by=1,
            message_text="La fête du quartier",
            status="done",
            recipients=len(residents),
            created_at=at,
            confirmed_at=at,
            finished_at=sent_at,
        )
        session.add(broadcast)
        await session.flush()
        rows = [
            {
                "resident_id": resident,
                "kind": "broadcast",
                "broadcast_id": broadcast.id,
                "payload": {},
                "dedupe_key": f"broadcast:{broadcast.id}:{resident}",
                "status": "sent",
                "not_before": at,
                "created_at": at,
                "sent_at": sent_at,
                "attempts": 1,
            }
            for resident in residents
        ]
        for start in range(0, len(rows), INSERT_BATCH):
            await session.execute(insert(OutboxMessage), rows[start : start + INSERT_BATCH])


async def _outbox_size(db: Database) -> int:
    async with db.read() as session:
        return await session.scalar(select(func.count()).select_from(OutboxMessage)) or 0


async def measure_backend(name: str, url: str, recipients: int) -> dict[str, Any]:
    """The whole scenario on one database (migrated here, if it is not yet)."""
    await migrated(url)
    db = Database(url)
    deletes: list[float] = []  # seconds of each DELETE FROM outbox that deleted rows (a batch)

    def before(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        conn.info["started"] = time.perf_counter()

    def after(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        started = conn.info.pop("started")
        if statement.lstrip().upper().startswith("DELETE FROM OUTBOX") and cursor.rowcount > 0:
            deletes.append(time.perf_counter() - started)

    event.listen(db.engine.sync_engine, "before_cursor_execute", before)
    event.listen(db.engine.sync_engine, "after_cursor_execute", after)
    try:
        clock = ManualClock(START)
        retention = RetentionService(
            db,
            clock,
            RegistrationService(db, clock),
            retention_months=12,
            free_text_retention_months=6,
            admin_chat_id=None,
            tz=ZoneInfo("Europe/Paris"),
            outbox_retention=OUTBOX_KEPT_FOR,
        )
        residents = await _seed_residents(db, recipients)
        sizes: list[int] = []  # the outbox after each day's run
        runs: list[float] = []  # seconds of each daily run that deleted rows
        deleted = 0
        for day in range(DAYS):
            today = START + timedelta(days=day)
            clock.set(today)
            if day % EVERY.days == 0 and day // EVERY.days < BROADCASTS:
                await _broadcast(db, residents, today)
            started = time.perf_counter()
            report = await retention.run()
            if report.outbox_rows:
                runs.append(time.perf_counter() - started)
            deleted += report.outbox_rows
            sizes.append(await _outbox_size(db))
    finally:
        await db.dispose()
    weekly = [sizes[day] for day in range(0, DAYS, EVERY.days)]
    return {
        "backend": name,
        "recipients": recipients,
        "rows_queued": recipients * BROADCASTS,
        "rows_deleted": deleted,
        "peak_rows": max(sizes),
        "final_rows": sizes[-1],
        "weekly_rows": weekly,
        "deleting_runs": len(runs),
        "slowest_run_s": max(runs, default=0.0),
        "delete_batches": len(deletes),
        "slowest_batch_ms": 1000 * max(deletes, default=0.0),
        "median_batch_ms": 1000 * sorted(deletes)[len(deletes) // 2] if deletes else 0.0,
    }


async def _run(quick: bool) -> list[dict[str, Any]]:
    recipients = 1_000 if quick else 10_000
    results = []
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "outbox.sqlite3"
        results.append(await measure_backend("SQLite", f"sqlite+aiosqlite:///{path}", recipients))
    if await postgres_available():
        url = await new_postgres_database("outbox")
        try:
            results.append(await measure_backend("PostgreSQL", url, recipients))
        finally:
            await drop_postgres_database(url)
    else:
        print("PostgreSQL unreachable: SQLite only")
    return results


def main(quick: bool = False) -> int:
    print(f"Machine: {machine_line()}")
    results = asyncio.run(_run(quick))
    kept_days = OUTBOX_KEPT_FOR.days
    print_table(
        f"Outbox size, one broadcast a week, OUTBOX_RETENTION={kept_days}d "
        f"(rows at each broadcast's day, after the daily run)",
        ["backend", *(f"w{n}" for n in range(len(results[0]["weekly_rows"])))],
        [[r["backend"], *r["weekly_rows"]] for r in results],
    )
    print_table(
        f"Daily retention runs over {DAYS} days, batches of {OUTBOX_BATCH} rows (one"
        " DELETE statement each)",
        [
            "backend",
            "recipients",
            "queued",
            "deleted",
            "peak rows",
            "final rows",
            "slowest run s",
            "DELETE batches",
            "median batch ms",
            "slowest batch ms",
        ],
        [
            [
                r["backend"],
                r["recipients"],
                r["rows_queued"],
                r["rows_deleted"],
                r["peak_rows"],
                r["final_rows"],
                r["slowest_run_s"],
                r["delete_batches"],
                r["median_batch_ms"],
                r["slowest_batch_ms"],
            ]
            for r in results
        ],
    )
    # Bounded: at most the broadcasts of one retention period and a week (the rows of a
    # broadcast go on the first daily run after their 30 days), whatever the number sent.
    bound = (kept_days // EVERY.days + 1) * results[0]["recipients"]
    bounded = all(r["peak_rows"] <= bound for r in results)
    print(f"\nOutbox bounded by {bound} rows ({kept_days}d of broadcasts): {verdict(bounded)}")
    path = write_results(
        f"outbox-retention{'-quick' if quick else ''}", {"quick": quick, "results": results}
    )
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    cli(__doc__.splitlines()[0], main)
