"""Resources of the bot process (issue 6, section 4): start-up time and peak memory.

    .venv/bin/python -m bench.resources [--quick]

Three processes: this one (seeds the database, drives, samples /proc), the Bot API emulator
(`python -m emulator`, its own process) and the bot (`python -m bot.runtime.cli run`, the command
operators run, with BOT_TOKEN and TELEGRAM_BASE_URL pointing at the emulator). The database
(SQLite, the default, and PostgreSQL) holds 10,000 consenting residents known to the emulator.

- Start-up: the schema is already migrated; time from the process's start to "bot ready" in
  its log (menus set, jobs and the broadcast sender running), 3 starts (1 in --quick).
- Peak memory: a broadcast to all 10,000 residents is confirmed, then the bot starts and sends
  it (BROADCAST_RATE 500/s, allowed against the local emulator; at Telegram's 25/s the same
  sender holds the same rows, only longer). Peak RSS is the kernel's VmHWM of the bot process
  (/proc/<pid>/status) read when the broadcast is over or after 60 s of it (6 s in --quick;
  the rest is then cancelled), CPU is utime + stime from /proc/<pid>/stat. 3 runs (1 in
  --quick), each with a fresh broadcast.
Targets: peak RSS < 150 MB, start-up < 2 s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from emulator.client import EmulatorClient
from sqlalchemy import func, insert, select

from bench.common import (
    BotProcess,
    EmulatorProcess,
    bot_env,
    drop_postgres_database,
    machine,
    machine_line,
    new_postgres_database,
    rss_mb,
)
from bot.clock import ManualClock
from bot.services.broadcasts.drafts import BroadcastService
from storage.db import Database
from storage.migrate import upgrade_to_head
from storage.models import OutboxMessage, Resident, StaffMember

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
RESIDENTS = 10_000
STAFF_ID = 900
FIRST_TELEGRAM_ID = 700_000_000
TEXT = "Fête du numérique samedi à la médiathèque"
RSS_TARGET_MB = 150.0
STARTUP_TARGET_S = 2.0
BROADCAST_RATE = 500


def spread(values: list[float]) -> dict[str, float]:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


async def start_bot(bot: BotProcess) -> float:
    """Start the bot; seconds from the process's start to "bot ready" in its log (polled every
    5 ms: start-up is about a second, so the shared 50 ms wait_for_log is too coarse here)."""
    bot.log_path.unlink(missing_ok=True)
    started = time.perf_counter()
    bot.start()
    while "bot ready" not in bot.log_text():
        assert bot.popen is not None
        if bot.popen.poll() is not None or time.perf_counter() - started > 60:
            raise RuntimeError("the bot did not start:\n" + bot.log_text()[-3000:])
        await asyncio.sleep(0.005)
    return time.perf_counter() - started


# -- data -----------------------------------------------------------------------------------


async def seed(db: Database, client: EmulatorClient, residents: int) -> None:
    """Consenting residents, all known to the emulator, and a mediator."""
    now = datetime.now(UTC)
    ids = [FIRST_TELEGRAM_ID + i for i in range(residents)]
    async with db.write() as session:
        await session.execute(
            insert(Resident),
            [
                {
                    "telegram_id": t,
                    "first_name": f"P{t}",
                    "language": ("fr", "en", "ar")[t % 3],
                    "consented_at": now,
                    "created_at": now,
                    "last_seen_at": now,
                }
                for t in ids
            ],
        )
        session.add(StaffMember(telegram_id=STAFF_ID, role="mediator", granted_at=now))
    for begin in range(0, len(ids), 2_000):
        await client.register(*(client.user(t, f"P{t}", "fr") for t in ids[begin : begin + 2_000]))
    await client.user(STAFF_ID, "Médiatrice", "fr").register()


async def confirm_broadcast(db: Database) -> int:
    clock = ManualClock(datetime.now(UTC))
    service = BroadcastService(db, clock)
    await service.begin(STAFF_ID)
    await service.take_text(STAFF_ID, TEXT, len(TEXT))
    await service.skip_photo(STAFF_ID)
    await service.choose_audience(STAFF_ID, {"kind": "all"})
    broadcast_id = await service.confirm(STAFF_ID)
    assert broadcast_id is not None
    return broadcast_id


async def pending(db: Database, broadcast_id: int) -> int:
    async with db.read() as session:
        return int(
            await session.scalar(
                select(func.count()).where(
                    OutboxMessage.broadcast_id == broadcast_id, OutboxMessage.status == "pending"
                )
            )
            or 0
        )


# -- measurements -----------------------------------------------------------------------------


async def measure_startups(bot: BotProcess, starts: int) -> tuple[list[float], list[float]]:
    """Wall seconds to "bot ready", and the CPU seconds the process used to get there (the
    latter hardly depends on what else the machine runs)."""
    times, cpu = [], []
    for _ in range(starts):
        times.append(await start_bot(bot))
        cpu.append(bot.cpu_seconds())
        await bot.stop(timeout=20)
    return times, cpu


async def measure_broadcast(
    bot: BotProcess, db: Database, broadcast_id: int, limit_s: float
) -> dict[str, Any]:
    """Start the bot with the broadcast pending; sample RSS until it is sent (or limit_s)."""
    await start_bot(bot)
    started = time.perf_counter()
    total = await pending(db, broadcast_id)
    samples = []
    while time.perf_counter() - started < limit_s:
        samples.append(rss_mb(bot.pid))
        if await pending(db, broadcast_id) == 0:
            break
        await asyncio.sleep(0.25)
    left = await pending(db, broadcast_id)
    elapsed = time.perf_counter() - started
    result = {
        "peak_rss_mb": bot.peak_rss_mb(),
        "rss_at_ready_mb": samples[0] if samples else None,
        "rss_last_mb": rss_mb(bot.pid),
        "cpu_s": bot.cpu_seconds(),
        "sent": total - left,
        "seconds": elapsed,
    }
    await bot.stop(timeout=20)
    return result


async def run_backend(backend: str, quick: bool, workdir: Path) -> dict[str, Any]:
    starts = 1 if quick else 3
    limit_s = 6.0 if quick else 60.0
    if backend == "sqlite":
        url = f"sqlite+aiosqlite:///{workdir / 'resources.sqlite3'}"
    else:
        url = await new_postgres_database("resources")
    db = Database(url)
    try:
        await upgrade_to_head(db.engine)
        emulator = await EmulatorProcess(workdir).started()
        try:
            async with EmulatorClient(emulator.side_url) as client:
                await seed(db, client, RESIDENTS)
            env = bot_env(
                emulator,
                url,
                broadcast_rate=BROADCAST_RATE,
                rate_limit_per_second=0,
                quiet_hours="off",
            )
            bot = BotProcess(workdir, env)
            try:
                startups, startup_cpu = await measure_startups(bot, starts)
                runs = []
                for _ in range(starts):
                    # A fresh broadcast to all 10,000 each run; what a time-limited run left
                    # is cancelled, as a mediator would, so that runs do not pile up.
                    broadcast_id = await confirm_broadcast(db)
                    runs.append(await measure_broadcast(bot, db, broadcast_id, limit_s))
                    await BroadcastService(db, ManualClock(datetime.now(UTC))).cancel(broadcast_id)
            finally:
                await bot.stop(timeout=20)
        finally:
            await emulator.stop()
    finally:
        await db.dispose()
        if backend != "sqlite":
            await drop_postgres_database(url)
    return {"startup_s": startups, "startup_cpu_s": startup_cpu, "broadcast_runs": runs}


def _print(backend: str, result: dict[str, Any]) -> None:
    startup = spread(result["startup_s"])
    peaks = [run["peak_rss_mb"] for run in result["broadcast_runs"]]
    peak = spread(peaks)
    runs = result["broadcast_runs"]
    print(f"\n== {backend}: {RESIDENTS} residents")
    rows = [
        (
            "start-up to 'bot ready' (s)",
            f"{startup['min']:.2f} / {startup['median']:.2f} / {startup['max']:.2f}",
            f"< {STARTUP_TARGET_S:.0f} s",
            f"{startup['median'] / STARTUP_TARGET_S:.2f}",
            "yes" if startup["median"] < STARTUP_TARGET_S else "NO",
        ),
        (
            "peak RSS, broadcast in flight (MB)",
            f"{peak['min']:.1f} / {peak['median']:.1f} / {peak['max']:.1f}",
            f"< {RSS_TARGET_MB:.0f} MB",
            f"{peak['median'] / RSS_TARGET_MB:.2f}",
            "yes" if peak["median"] < RSS_TARGET_MB else "NO",
        ),
    ]
    headers = ("measure", "min / median / max", "target", "median / target", "met")
    widths = [max(len(str(r[i])) for r in (headers, *rows)) for i in range(len(headers))]
    for row in (headers, tuple("-" * w for w in widths), *rows):
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)))
    cpu = spread(result["startup_cpu_s"])
    print(
        f"  start-up CPU (user + system) to 'bot ready': {cpu['min']:.2f} / {cpu['median']:.2f}"
        f" / {cpu['max']:.2f} s; load average at the end {os.getloadavg()[0]:.1f} on"
        f" {os.cpu_count()} cores"
    )
    for run in runs:
        print(
            f"  broadcast run: {run['sent']} sent in {run['seconds']:.1f} s,"
            f" RSS at ready {run['rss_at_ready_mb']:.1f} MB, at the end {run['rss_last_mb']:.1f} MB,"
            f" peak {run['peak_rss_mb']:.1f} MB, CPU {run['cpu_s']:.1f} s"
        )


async def _run(quick: bool) -> dict[str, Any]:
    description = machine()
    print(f"machine: {machine_line(description)}")
    print(
        "processes: this one (driver), `python -m emulator`, `python -m bot.runtime.cli run`;"
        f" broadcast at {BROADCAST_RATE}/s against the emulator"
    )
    result: dict[str, Any] = {"machine": description, "quick": quick}
    for backend in ("sqlite",) if quick else ("sqlite", "postgresql"):
        with tempfile.TemporaryDirectory(prefix="capacity-bench-") as folder:
            result[backend] = await run_backend(backend, quick, Path(folder))
        _print(backend, result[backend])
    return result


def main(quick: bool = False) -> dict[str, Any]:
    result = asyncio.run(_run(quick))
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"resources{'-quick' if quick else ''}.json"
    path.write_text(json.dumps(result, indent=2, default=str))
    print(f"\nresults: {path.relative_to(ROOT)}")
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="SQLite only, one start, 6 s of broadcast"
    )
    main(parser.parse_args().quick)
