"""Statistics and exports on a large data set (issue 6, section 3), on SQLite and PostgreSQL.

    .venv/bin/python -m bench.stats_bench [--quick]

Everything runs in this one process (no bot, no emulator: the views and exports are called
through their services, as handlers/stats.py calls them). For each backend:

- the data set of bench/seed_stats.py (full: 20,000 residents, 500 workshops, 100,000
  registrations, 50,000 survey answers; --quick: a tenth), seeded around a fixed moment so
  that the figures are the same from run to run. SQLite files are kept in data/bench/ and
  reused when they have the right size; PostgreSQL gets a database of its own, seeded each
  run and dropped at the end;
- each of the 8 /stats views (StatsService) timed over several runs (min / median / max),
  for the default period (the last 90 days) and for a year, its statements counted (an
  event listener on the engine's before_cursor_execute) and each statement EXPLAINed
  (SQLite: EXPLAIN QUERY PLAN; PostgreSQL: EXPLAIN (FORMAT JSON)): a full scan of a big table
  (registrations, residents, survey answers and sets) is reported;
- the data of the charts (the timeline query) and the rendering of the four charts (bot/services/stats/charts.py,
  matplotlib), timed apart from the views;
- /export (ExportService) streamed to its files at two sizes: time, and peak Python memory
  (tracemalloc, a separate run, since tracing slows everything down).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import event, func, select

from bench.common import (
    drop_postgres_database,
    machine,
    machine_line,
    new_postgres_database,
)
from bench.seed_stats import SeedSizes, seed_stats
from bot.clock import ManualClock
from bot.services.stats.exports import ExportService
from bot.services.stats.figures import StatsService
from bot.services.stats.scope import StatsScope, parse_period
from storage.db import Database
from storage.migrate import upgrade_to_head
from storage.models import Registration, Resident, SurveyAnswer, Workshop

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
CACHE = ROOT / "data" / "bench"  # data/ is ignored by git
PARIS = ZoneInfo("Europe/Paris")
# The data set is seeded around this moment and the views are asked at this moment.
NOW = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
VIEWS = (
    "overview",
    "by_workshop",
    "by_venue",
    "by_territory",
    "by_theme",
    "survey_results",
    "needs",
    "autonomy",
)
TARGET_MS = {"sqlite": 500.0, "postgresql": 200.0}
BIG_TABLES = frozenset({"registrations", "residents", "survey_answers", "survey_answer_sets"})


# -- small helpers (bench/common.py may offer the same; these keep the module standalone) ---


def spread(values: list[float]) -> dict[str, float]:
    return {
        "min": min(values),
        "median": statistics.median(values),
        "max": max(values),
    }


def fmt(values: dict[str, float], unit: str = "") -> str:
    return f"{values['min']:.1f} / {values['median']:.1f} / {values['max']:.1f}{unit}"


def table(headers: list[str], rows: list[list[Any]]) -> str:
    cells = [headers, *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


# -- statements: count and explain ---------------------------------------------------------


@dataclass
class Recorder:
    """The statements sent to the database while `active`, with their parameters."""

    active: bool = False
    statements: list[tuple[str, Any]] = field(default_factory=list)

    def attach(self, db: Database) -> None:
        event.listen(db.engine.sync_engine, "before_cursor_execute", self._seen)

    def detach(self, db: Database) -> None:
        event.remove(db.engine.sync_engine, "before_cursor_execute", self._seen)

    def _seen(self, _conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if self.active:
            self.statements.append((statement, parameters))


def _pg_scans(plan: dict[str, Any]) -> list[str]:
    found = []
    relation = plan.get("Relation Name")
    if plan.get("Node Type") == "Seq Scan" and relation in BIG_TABLES:
        found.append(f"Seq Scan {relation}")
    for child in plan.get("Plans", []):
        found.extend(_pg_scans(child))
    return found


def _pg_indexes(plan: dict[str, Any]) -> list[str]:
    found = [plan["Index Name"]] if "Index Name" in plan else []
    for child in plan.get("Plans", []):
        found.extend(_pg_indexes(child))
    return found


async def explain(db: Database, statement: str, parameters: Any) -> dict[str, Any]:
    """Big-table full scans and indexes used by one statement's plan."""
    async with db.engine.connect() as conn:
        if db.is_sqlite:
            rows = (await conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters)).all()
            details = [str(row[-1]) for row in rows]
            # "SCAN t" reads every row of t; so does "SCAN t USING [COVERING] INDEX i" (every
            # entry, in the index's order): both are full reads. "SEARCH t USING INDEX" is not.
            scans = [d for d in details if d.startswith("SCAN ") and d.split()[1] in BIG_TABLES]
            indexes = [m for d in details for m in re.findall(r"\bINDEX (\w+)", d)]
            return {"plan": details, "big_table_scans": scans, "indexes": sorted(set(indexes))}
        raw = (
            await conn.exec_driver_sql("EXPLAIN (FORMAT JSON) " + statement, parameters)
        ).scalar_one()
        plan = (json.loads(raw) if isinstance(raw, str) else raw)[0]["Plan"]
        scans = _pg_scans(plan)
        return {
            "plan_cost": plan.get("Total Cost"),
            "big_table_scans": scans,
            "indexes": sorted(set(_pg_indexes(plan))),
        }


# -- databases -----------------------------------------------------------------------------


def _expected_sizes(quick: bool) -> SeedSizes:
    return SeedSizes.scaled(0.1) if quick else SeedSizes()


async def _counts(db: Database) -> tuple[int, int, int, int]:
    async with db.read() as session:
        values = [
            await session.scalar(select(func.count()).select_from(model))
            for model in (Resident, Workshop, Registration, SurveyAnswer)
        ]
    return tuple(int(v or 0) for v in values)  # type: ignore[return-value]


async def _seeded(url: str, sizes: SeedSizes, *, reuse: bool) -> tuple[Database, dict[str, Any]]:
    """A migrated database holding the data set; seeds it unless an identical one is there."""
    db = Database(url)
    await upgrade_to_head(db.engine)
    counts = await _counts(db)
    seeded, seconds = False, 0.0
    if not (reuse and counts[0] == sizes.residents and counts[1] == sizes.workshops):
        if any(counts):
            raise RuntimeError(f"{url} holds other data: delete it first")
        seeded, seconds = True, (await seed_stats(db, NOW, sizes)).seconds
    if db.is_sqlite:  # seed_stats analyses PostgreSQL; a reused file may have new indexes
        async with db.engine.connect() as conn:
            await conn.exec_driver_sql("ANALYZE")
            await conn.commit()
    return db, {"seeded": seeded, "seconds": seconds, "counts": await _counts(db)}


# -- measurements --------------------------------------------------------------------------


async def _timed(call: Callable[[], Awaitable[Any]], runs: int) -> list[float]:
    await call()  # warm-up: connections, statement caches
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        await call()
        times.append((time.perf_counter() - started) * 1000)
    return times


async def measure_views(
    db: Database, scope: StatsScope, runs: int, *, explain_plans: bool
) -> dict[str, Any]:
    stats = StatsService(db, ManualClock(NOW), PARIS, min_group_size=5)
    recorder = Recorder()
    recorder.attach(db)
    results: dict[str, Any] = {}
    calls: dict[str, Callable[[], Awaitable[Any]]] = {
        view: (lambda view=view: getattr(stats, view)(scope)) for view in VIEWS
    }
    calls["timeline (charts)"] = lambda: stats.timeline(scope)
    for view, call in calls.items():
        times = await _timed(call, runs)
        recorder.statements.clear()
        recorder.active = True
        await call()
        recorder.active = False
        statements = [
            s for s in recorder.statements if not s[0].lstrip().upper().startswith("BEGIN")
        ]
        entry: dict[str, Any] = {"ms": spread(times), "queries": len(statements)}
        if explain_plans:
            plans = [await explain(db, s, p) for s, p in statements]
            entry["plans"] = plans
            entry["big_table_scans"] = sorted(
                {x for plan in plans for x in plan["big_table_scans"]}
            )
            entry["indexes"] = sorted({x for plan in plans for x in plan["indexes"]})
        results[view] = entry
    recorder.detach(db)
    return results


def _chart_rendering(runs: int) -> dict[str, Any]:
    """The four charts of /stats with data of the data set's shape (matplotlib, Agg)."""
    started = time.perf_counter()
    from bot.services.stats import charts  # imports matplotlib: its first import is measured

    import_ms = (time.perf_counter() - started) * 1000
    names = [f"Atelier {i}" for i in range(25)]
    words = charts.ChartText("Title", "x", "y", "< 5", ("seats", "present"))
    drawings = {
        "attendance": lambda: charts.grouped_bars(
            names, [[15] * 25, [11 if i % 5 else None for i in range(25)]], words
        ),
        "needs": lambda: charts.stacked_bars(
            [f"Quartier {i}" for i in range(8)],
            {f"need {n}": [40 + n for _ in range(8)] for n in range(6)},
            charts.ChartText("Needs", "people", "", "< 5"),
        ),
        "satisfaction": lambda: charts.distribution(
            (120, 240, 480, 360, None), charts.ChartText("S", "score", "answers", "< 5")
        ),
        "timeline": lambda: charts.timeline(
            [NOW.date()] * 13, [300 + i for i in range(13)], charts.ChartText("R", "p", "n", "<5")
        ),
    }
    out: dict[str, Any] = {"matplotlib_import_ms": import_ms}
    for name, draw in drawings.items():
        draw()
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            draw()
            times.append((time.perf_counter() - started) * 1000)
        out[name] = spread(times)
    return out


async def measure_export(db: Database) -> dict[str, Any]:
    """Time of the coordinator's full export, then its peak Python memory (tracemalloc)."""
    exports = ExportService(db, PARIS, "123:bench-token", min_group_size=5)

    async def run() -> dict[str, int]:
        async with exports.export() as files:
            return {f.name: f.rows for f in files} | {
                "bytes": sum(f.path.stat().st_size for f in files)
            }

    started = time.perf_counter()
    rows = await run()
    seconds = time.perf_counter() - started
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        baseline = tracemalloc.get_traced_memory()[0]
        await run()
        peak = tracemalloc.get_traced_memory()[1] - baseline
    finally:
        tracemalloc.stop()
    return {"seconds": seconds, "peak_kib": peak / 1024, "rows": rows}


# -- the benchmark -------------------------------------------------------------------------


async def _backend(backend: str, quick: bool, runs: int) -> dict[str, Any]:
    sizes = _expected_sizes(quick)
    small = SeedSizes.scaled(0.1 if not quick else 0.01)
    label = "quick" if quick else "full"
    out: dict[str, Any] = {}
    cleanups: list[Callable[[], Awaitable[None]]] = []
    try:
        if backend == "sqlite":
            CACHE.mkdir(parents=True, exist_ok=True)
            url = f"sqlite+aiosqlite:///{CACHE / f'stats-{label}.sqlite3'}"
            small_url = f"sqlite+aiosqlite:///{CACHE / f'stats-{label}-small.sqlite3'}"
        else:
            url = await new_postgres_database(f"stats_{label}")
            cleanups.append(lambda: drop_postgres_database(url))
            small_url = await new_postgres_database(f"stats_{label}_small")
            cleanups.append(lambda: drop_postgres_database(small_url))
        db, seeding = await _seeded(url, sizes, reuse=True)
        cleanups.insert(0, db.dispose)
        out["seeding"] = seeding
        today = NOW.astimezone(PARIS).date()
        for period in ("90d", "365d"):
            scope = StatsScope(parse_period(period, today))
            out[f"views_{period}"] = await measure_views(
                db, scope, runs, explain_plans=period == "90d"
            )
        facilitator = StatsScope(parse_period("365d", today), facilitator_id=4242)
        out["views_365d_facilitator"] = await measure_views(
            db, facilitator, runs, explain_plans=False
        )
        out["export"] = await measure_export(db)
        small_db, small_seeding = await _seeded(small_url, small, reuse=True)
        cleanups.insert(0, small_db.dispose)
        out["export_small"] = await measure_export(small_db) | {"seeding": small_seeding}
    finally:
        for cleanup in cleanups:
            await cleanup()
    return out


def _print(backend: str, result: dict[str, Any], quick: bool) -> None:
    target = TARGET_MS[backend]
    seeding = result["seeding"]
    counts = seeding["counts"]
    how = f"seeded in {seeding['seconds']:.1f} s" if seeding["seeded"] else "reused the seeded file"
    print(
        f"\n== {backend}: {counts[0]} residents, {counts[1]} workshops, {counts[2]} registrations,"
        f" {counts[3]} survey answers ({how})"
    )
    rows = []
    for view, entry in result["views_90d"].items():
        year = result["views_365d"][view]
        facilitator = result["views_365d_facilitator"][view]
        worst = max(entry["ms"]["median"], year["ms"]["median"])
        scans = ", ".join(
            scan.replace("SCAN ", "").replace("Seq Scan ", "").split(" USING ")[0]
            + (" (index order)" if " USING " in scan else "")
            for scan in entry.get("big_table_scans", [])
        )
        rows.append(
            [
                view,
                fmt(entry["ms"]),
                fmt(year["ms"]),
                f"{facilitator['ms']['median']:.1f}",
                entry["queries"],
                f"{worst / target:.2f}",
                "yes" if worst <= target else "NO",
                scans or "-",
            ]
        )
    print(
        table(
            [
                "view",
                "90 days ms min/med/max",
                "365 days ms min/med/max",
                "facilitator 365d med",
                "queries",
                f"worst med / {target:.0f} ms",
                "met",
                "big tables read whole (90 days)",
            ],
            rows,
        )
    )
    big, small = result["export"], result["export_small"]
    print(
        "\n/export (all five files, coordinator): "
        + table(
            ["registrations", "rows in all files", "MB written", "seconds", "peak Python KiB"],
            [
                [
                    e["rows"]["registrations.csv"],
                    sum(v for k, v in e["rows"].items() if k != "bytes"),
                    f"{e['rows']['bytes'] / 1e6:.1f}",
                    f"{e['seconds']:.2f}",
                    f"{e['peak_kib']:.0f}",
                ]
                for e in (small, big)
            ],
        )
    )
    ratio = big["rows"]["registrations.csv"] / max(1, small["rows"]["registrations.csv"])
    print(
        f"data x{ratio:.0f}: peak memory x{big['peak_kib'] / max(1, small['peak_kib']):.2f}"
        f" (flat when close to 1), time x{big['seconds'] / max(1e-9, small['seconds']):.1f}"
    )


async def _run(quick: bool) -> dict[str, Any]:
    runs = 3 if quick else 7
    description = machine()
    print(f"machine: {machine_line(description)}")
    print(
        f"stats bench ({'quick' if quick else 'full'}): every view {runs} runs after a warm-up,"
        " in this process (services called directly, no bot, no emulator)"
    )
    result: dict[str, Any] = {"machine": description, "quick": quick, "runs": runs}
    for backend in ("sqlite", "postgresql"):
        result[backend] = await _backend(backend, quick, runs)
        _print(backend, result[backend], quick)
    result["charts"] = _chart_rendering(runs)
    charts_line = ", ".join(
        f"{k} {fmt(v)}" for k, v in result["charts"].items() if isinstance(v, dict)
    )
    print(
        f"\ncharts (matplotlib, one thread; first import {result['charts']['matplotlib_import_ms']:.0f}"
        f" ms) ms min/med/max: {charts_line}"
    )
    return result


def main(quick: bool = False) -> dict[str, Any]:
    result = asyncio.run(_run(quick))
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"stats{'-quick' if quick else ''}.json"
    path.write_text(json.dumps(result, indent=2, default=str))
    print(f"\nresults: {path.relative_to(ROOT)}")
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tenth of the data, fewer runs")
    main(parser.parse_args().quick)
