"""The journey benchmark still works: its core at a tiny size (bench/journey.py).

Not a speed test: it checks that simulated residents still get through the sign-up journey
(the buttons they look for still exist) against `capacity-bot run` as a process, and that
the figures come out.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.common import Spread, percentile
from bench.journey import (
    CAPACITY_STEPS,
    IN_STEP_LABEL,
    OPEN_LABEL,
    Mode,
    Resident,
    align,
    run_target,
)

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
    assert [phase.label for phase in phases] == ["N=1", "N=3", OPEN_LABEL, IN_STEP_LABEL]
    for phase in phases:
        figures = phase.figures()
        assert phase.taps > 0 and len(phase.latencies) == phase.taps
        assert figures["bot_cpu_ms_per_update"] >= 0
        assert 0 < figures["p50_ms"] <= figures["p99_ms"]


class CountingResident(Resident):
    """A resident whose tap only moves to the next step (the alignment's logic alone)."""

    async def tap(self, since: float | None = None) -> float:
        self.step += 1
        return 0.0


async def test_align_staggers_the_steps_or_puts_everyone_in_step() -> None:
    people = [
        CountingResident(i, CAPACITY_STEPS, None, "", None, step=start)  # type: ignore[arg-type]
        for i, start in enumerate([0, 3, 7, 2, 9, 4, 11, 5])
    ]
    length = len(CAPACITY_STEPS)
    await align(people, staggered=True)
    assert [p.step % length for p in people] == [i % length for i in range(len(people))]
    before = [p.step for p in people]
    await align(people, staggered=False)
    assert {p.step % length for p in people} == {0}
    # Only forward, and never a whole journey more than needed.
    assert all(0 <= p.step - b < length for p, b in zip(people, before, strict=True))
