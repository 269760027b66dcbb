"""The journey benchmark still works: its core at a tiny size (bench/journey.py).

Not a speed test: it checks that simulated residents still get through the sign-up journey
(the buttons they look for still exist) against `capacity-bot run` as a process, and that
the figures come out.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.common import Spread, percentile
from bench.journey import OPEN_LOOP_RATE, Mode, run_target

pytestmark = [pytest.mark.e2e]

TINY = Mode(runs=1, sizes=(1, 3), seconds=0.4, warmup=0.0, open_loop_seconds=0.3)


def test_percentiles_and_spreads() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == pytest.approx(50.5)
    assert percentile(values, 99) == pytest.approx(99.01)
    assert percentile([], 50) != percentile([], 50)  # nan
    spread = Spread([3.0, 1.0, 2.0])
    assert (spread.min, spread.median, spread.max) == (1.0, 2.0, 3.0)
    assert spread.fmt(0) == "2 (1–3)"


async def test_residents_loop_over_the_journey_against_the_bot_process(tmp_path: Path) -> None:
    phases = await run_target("sqlite", TINY, tmp_path)
    assert [phase.label for phase in phases] == ["N=1", "N=3", f"open {OPEN_LOOP_RATE:.0f}/s"]
    for phase in phases:
        figures = phase.figures()
        assert phase.taps > 0 and len(phase.latencies) == phase.taps
        assert figures["bot_cpu_ms_per_update"] >= 0
        assert 0 < figures["p50_ms"] <= figures["p99_ms"]
