"""Charts of the statistics as PNG images (matplotlib, Agg backend, no display needed).

Figures are built with matplotlib's object API (Figure + Agg canvas), never pyplot's global
state, so several charts can render in worker threads at once (callers use
asyncio.to_thread: a chart takes tens of milliseconds of CPU). Hidden figures (fewer than
MIN_GROUP_SIZE people) are drawn as empty bars marked "< 5".

Arabic: matplotlib neither joins Arabic letters nor lays text out right to left, so Arabic
labels look disconnected; labels are kept to a word or two.
"""

from __future__ import annotations

import io
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date

import matplotlib

matplotlib.use("Agg")  # before anything imports pyplot: no display on a server

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

SIZE_INCHES = (8.0, 4.5)
DPI = 100
COLOURS = ("#1f6f8b", "#e07a5f", "#81b29a", "#f2cc8f", "#3d405b", "#9c6644", "#6d597a")
MAX_BARS = 25


@dataclass(frozen=True)
class ChartText:
    """The words of a chart, in the reader's language."""

    title: str
    x_label: str
    y_label: str
    hidden: str  # "< 5"
    series: tuple[str, ...] = ()  # legend entries, when there are several series


def shorten(text: str, limit: int = 22) -> str:
    """A short label without emoji (the chart font has none)."""
    text = "".join(c for c in text if unicodedata.category(c) != "So").strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _png(figure: Figure) -> bytes:
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def _mark_hidden(
    axes: Axes, positions: Sequence[float], values: Sequence[int | None], text: str
) -> None:
    for position, value in zip(positions, values, strict=True):
        if value is None:
            axes.text(position, 0, text, ha="center", va="bottom", fontsize=8, color="#555555")


def _nothing_to_plot(axes: Axes, values: Iterable[int | None], *, horizontal: bool = False) -> None:
    """When every figure is hidden or zero, a 0-to-1 count axis instead of matplotlib's
    -0.04 to 0.04 around an empty bar (a negative count of people reads as a bug)."""
    if not any(values):
        if horizontal:
            axes.set_xlim(0, 1)
            axes.set_xticks([0, 1])
        else:
            axes.set_ylim(0, 1)
            axes.set_yticks([0, 1])


def _empty(figure: Figure, words: ChartText) -> bytes:
    axes = figure.add_subplot()
    axes.set_title(words.title)
    axes.text(0.5, 0.5, "—", ha="center", va="center", fontsize=24, transform=axes.transAxes)
    axes.set_axis_off()
    return _png(figure)


def grouped_bars(
    labels: Sequence[str], series: Sequence[Sequence[int | None]], words: ChartText
) -> bytes:
    """Bars per label, one colour per series (attendance: seats and people present)."""
    figure = Figure(figsize=SIZE_INCHES, layout="constrained")
    labels = [shorten(label) for label in labels[:MAX_BARS]]
    if not labels:
        return _empty(figure, words)
    axes = figure.add_subplot()
    width = 0.8 / max(1, len(series))
    for index, values in enumerate(series):
        values = values[:MAX_BARS]
        positions = [i + (index - (len(series) - 1) / 2) * width for i in range(len(labels))]
        axes.bar(
            positions,
            [value or 0 for value in values],
            width,
            color=COLOURS[index % len(COLOURS)],
            label=words.series[index] if index < len(words.series) else None,
        )
        _mark_hidden(axes, positions, values, words.hidden)
    _nothing_to_plot(axes, (value for values in series for value in values[:MAX_BARS]))
    axes.set_xticks(range(len(labels)), labels, rotation=45, ha="right", fontsize=8)
    axes.set_title(words.title)
    axes.set_xlabel(words.x_label)
    axes.set_ylabel(words.y_label)
    if words.series:
        axes.legend(fontsize=8)
    return _png(figure)


def stacked_bars(
    labels: Sequence[str], parts: dict[str, Sequence[int | None]], words: ChartText
) -> bytes:
    """Horizontal bars split into parts (needs by neighbourhood, one colour per need)."""
    figure = Figure(figsize=SIZE_INCHES, layout="constrained")
    labels = [shorten(label) for label in labels[:MAX_BARS]]
    if not labels or not parts:
        return _empty(figure, words)
    axes = figure.add_subplot()
    left = [0] * len(labels)
    for index, (name, values) in enumerate(parts.items()):
        counts = [value or 0 for value in values[: len(labels)]]
        axes.barh(
            range(len(labels)),
            counts,
            left=left,
            color=COLOURS[index % len(COLOURS)],
            label=shorten(name, 28),
        )
        left = [a + b for a, b in zip(left, counts, strict=True)]
    _nothing_to_plot(axes, left, horizontal=True)
    axes.set_yticks(range(len(labels)), labels, fontsize=8)
    axes.invert_yaxis()
    axes.set_title(words.title)
    axes.set_xlabel(words.x_label)
    axes.set_ylabel(words.y_label)
    axes.legend(fontsize=7, loc="lower right")
    return _png(figure)


def distribution(values: Sequence[int | None], words: ChartText) -> bytes:
    """Counts of the answers 1 to 5 of a scale question."""
    figure = Figure(figsize=SIZE_INCHES, layout="constrained")
    if not any(values):
        return _empty(figure, words)
    axes = figure.add_subplot()
    positions = list(range(1, len(values) + 1))
    axes.bar(positions, [value or 0 for value in values], color=COLOURS[0])
    _mark_hidden(axes, positions, values, words.hidden)
    axes.set_xticks(positions, [str(p) for p in positions])
    axes.set_title(words.title)
    axes.set_xlabel(words.x_label)
    axes.set_ylabel(words.y_label)
    return _png(figure)


def timeline(days: Sequence[date], values: Sequence[int | None], words: ChartText) -> bytes:
    """Registrations per day, week or month."""
    figure = Figure(figsize=SIZE_INCHES, layout="constrained")
    if not days:
        return _empty(figure, words)
    axes = figure.add_subplot()
    positions = list(range(len(days)))
    axes.bar(positions, [value or 0 for value in values], color=COLOURS[0])
    _mark_hidden(axes, positions, values, words.hidden)
    _nothing_to_plot(axes, values)
    step = max(1, len(days) // 12)
    axes.set_xticks(
        positions[::step],
        [day.strftime("%d/%m") for day in days[::step]],
        rotation=45,
        ha="right",
        fontsize=8,
    )
    axes.set_title(words.title)
    axes.set_xlabel(words.x_label)
    axes.set_ylabel(words.y_label)
    return _png(figure)
