"""The statistics benchmark's core still works (bench/stats_bench.py), at a tiny size, on
both backends: views timed, statements counted and explained, an export streamed. Not a
timing test: nothing here is about speed.

PostgreSQL is not analysed after seeding (analyze=False): planner statistics left on the
session's shared database changed the plans, and so the row order, of later tests."""

from __future__ import annotations

import pytest

from bench import stats_bench
from bench.seed_stats import SeedSizes, seed_stats
from bot.services.stats.scope import StatsScope, parse_period
from storage.db import Database

pytestmark = pytest.mark.storage


async def test_views_are_timed_counted_and_explained(db: Database) -> None:
    await seed_stats(db, stats_bench.NOW, SeedSizes.scaled(0.002), analyze=False)
    scope = StatsScope(parse_period("90d", stats_bench.NOW.astimezone(stats_bench.PARIS).date()))
    views = await stats_bench.measure_views(db, scope, runs=1, explain_plans=True)
    assert set(stats_bench.VIEWS) <= set(views)
    for view in stats_bench.VIEWS:
        entry = views[view]
        assert 1 <= entry["queries"] <= 4, view
        assert len(entry["plans"]) == entry["queries"], view
        assert entry["ms"]["min"] <= entry["ms"]["median"] <= entry["ms"]["max"]
    if db.is_sqlite:  # PostgreSQL rightly scans tables this small
        # New residents are counted through their index, not a full scan (migration 0005).
        assert "ix_residents_created_at" in views["overview"]["indexes"]


async def test_export_is_measured(db: Database) -> None:
    report = await seed_stats(db, stats_bench.NOW, SeedSizes.scaled(0.002), analyze=False)
    export = await stats_bench.measure_export(db)
    assert export["rows"]["registrations.csv"] == report.registrations
    assert export["peak_kib"] > 0
