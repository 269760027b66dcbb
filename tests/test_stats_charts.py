"""Charts: real PNG pictures drawn by matplotlib, safe to draw in several threads at once."""

from __future__ import annotations

import asyncio
import io
from datetime import date, timedelta

import numpy as np
from matplotlib.image import imread

from bot.services.stats import charts

WORDS = charts.ChartText("Présence", "Atelier", "Personnes", "< 5", ("Places", "Présents"))


def picture(png: bytes) -> np.ndarray:
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    pixels = imread(io.BytesIO(png), format="png")
    assert pixels.shape[:2] == (450, 800)
    return pixels


def colours(pixels: np.ndarray) -> int:
    return np.unique(pixels.reshape(-1, pixels.shape[2]), axis=0).shape[0]


def test_each_chart_is_a_non_trivial_png() -> None:
    drawn = [
        charts.grouped_bars(
            ["Atelier A", "Atelier B", "ورشة"], [[10, None, 7], [8, None, 6]], WORDS
        ),
        charts.stacked_bars(
            ["Côte-Chaude", "Tarentaize"], {"📧 E-mail": [6, None], "Santé": [5, 0]}, WORDS
        ),
        charts.distribution((0, 0, None, None, 6), WORDS),
        charts.timeline(
            [date(2026, 11, 2) + timedelta(days=i) for i in range(30)],
            [i % 7 for i in range(30)],
            WORDS,
        ),
    ]
    for png in drawn:
        assert colours(picture(png)) > 20


def test_empty_data_still_gives_a_picture() -> None:
    blank = picture(charts.grouped_bars([], [[], []], WORDS))
    full = picture(charts.grouped_bars(["A"], [[9], [7]], WORDS))
    assert colours(blank) < colours(full)


async def test_charts_render_in_parallel_threads() -> None:
    pngs = await asyncio.gather(
        *(asyncio.to_thread(charts.distribution, (i, 5, 6, 7, 8), WORDS) for i in range(6))
    )
    assert len({png for png in pngs}) == 6  # different data, different pictures


def test_a_chart_of_hidden_figures_only_counts_from_zero(monkeypatch) -> None:
    """Only "< 5" bars: the count axis goes 0 to 1, not -0.04 to 0.04 around nothing."""
    drawn: list = []
    monkeypatch.setattr(charts, "_png", lambda figure: drawn.append(figure) or b"")
    charts.grouped_bars(["Atelier A", "Atelier B"], [[None, None], [None, 0]], WORDS)
    charts.timeline([date(2026, 11, 2), date(2026, 11, 3)], [None, None], WORDS)
    charts.stacked_bars(["Tarentaize"], {"Santé": [None]}, WORDS)
    vertical, by_day, horizontal = (figure.axes[0] for figure in drawn)
    assert vertical.get_ylim() == by_day.get_ylim() == (0.0, 1.0)
    assert horizontal.get_xlim() == (0.0, 1.0)
    # Some figure shown: matplotlib's own scale, from zero up.
    charts.grouped_bars(["Atelier A"], [[None], [7]], WORDS)
    assert drawn[-1].axes[0].get_ylim()[0] == 0
