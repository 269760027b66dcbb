"""The mixed-load benchmark still works: its core at a tiny size (bench/mixed_load.py).

Not a speed test: residents still get through the journey while a broadcast runs against
`capacity-bot run` as a process and the emulator as another, and the figures come out.
(The pure broadcast runs the same sender; `make bench-quick` in CI runs it whole.)
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.mixed_load import Mode, busiest_second, mixed_run

pytestmark = [pytest.mark.e2e]

TINY = Mode(
    runs=1,
    interactive=2,
    recipients=40,
    warmup_s=0.5,
    window_s=2,
    pure_sizes=(20, 40),
    pure_seconds=1,
)


def test_the_busiest_second_counts_half_open_windows() -> None:
    assert busiest_second([]) == 0
    assert busiest_second([0.0, 0.5, 0.99, 1.0, 1.5]) == 3  # 0.0 is not in (0.0, 1.0]
    assert busiest_second([0.0, 1.0, 2.0]) == 1


async def test_replies_and_a_broadcast_through_the_processes(tmp_path: Path) -> None:
    mixed = await mixed_run(TINY, tmp_path)
    assert mixed["responses_429"] == 0
    assert mixed["taps"] > 0 and mixed["reply_p50_s"] > 0
    assert mixed["broadcast_per_s"] > 0
