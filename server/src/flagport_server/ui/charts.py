"""Time charts drawn on the server as SVG (no script, no library): the geometry is computed
here, the markup is the template ``_chart.html`` (so every label is escaped like the rest of
the page). A chart is one line per variant over dense time buckets, with the flag's changes
marked on the time axis."""

from __future__ import annotations

import datetime
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

__all__ = ["Chart", "ChartLine", "ChartMark", "Tick", "dense_buckets", "time_chart"]

#: The SVG's own coordinates (it scales to the width of its box: a phone shows it whole).
WIDTH: Final = 640
HEIGHT: Final = 220
_LEFT, _RIGHT, _TOP, _BOTTOM = 64, 12, 12, 30
#: Line colours (``ui.css``: ``.tone-0`` ...); variants past them reuse them in turn.
TONES: Final = 6


@dataclass(frozen=True)
class ChartLine:
    variant: str
    points: str  # "x,y x,y ..." for <polyline points>
    tone: int
    total: int


@dataclass(frozen=True)
class ChartMark:
    """A change of the flag at ``x``: ``label`` says when, who and what."""

    x: float
    label: str


@dataclass(frozen=True)
class Tick:
    at: float  # x for the time axis, y for the value axis
    label: str


@dataclass(frozen=True)
class Chart:
    title: str
    caption: str
    lines: list[ChartLine]
    marks: list[ChartMark]
    x_ticks: list[Tick]
    y_ticks: list[Tick]
    width: int = WIDTH
    height: int = HEIGHT
    left: int = _LEFT
    right: int = WIDTH - _RIGHT
    top: int = _TOP
    bottom: int = HEIGHT - _BOTTOM

    @property
    def empty(self) -> bool:
        return not any(line.total for line in self.lines)


def dense_buckets(
    series: Sequence[tuple[float, Mapping[str, int]]], start: int, end: int, step: int
) -> list[tuple[int, dict[str, int]]]:
    """``series`` (time, counts per variant) summed into every ``step``-second bucket of
    ``[start, end)``, empty buckets included (a line drops to zero where nothing was
    counted, rather than joining two distant points)."""
    buckets: list[tuple[int, dict[str, int]]] = [(t, {}) for t in range(start, end, step)]
    for at, counts in series:
        index = int((at - start) // step)
        if 0 <= index < len(buckets):
            bucket = buckets[index][1]
            for variant, count in counts.items():
                bucket[variant] = bucket.get(variant, 0) + count
    return buckets


def _nice_ceiling(value: float) -> int:
    """The smallest of 1, 2, 5 x 10^k at least ``value`` (at least 1)."""
    if value <= 1:
        return 1
    power = 10 ** math.floor(math.log10(value))
    for factor in (1, 2, 5, 10):
        if factor * power >= value:
            return int(factor * power)
    return int(10 * power)  # pragma: no cover - the loop always returns


def _time_label(moment: int, span: int) -> str:
    when = datetime.datetime.fromtimestamp(moment, datetime.UTC)
    return when.strftime("%H:%M") if span <= 2 * 86400 else when.strftime("%a %d")


def time_chart(
    title: str,
    caption: str,
    buckets: Sequence[tuple[int, Mapping[str, int]]],
    step: int,
    variants: Sequence[str],
    changes: Sequence[tuple[float, str]],
) -> Chart:
    """One line per variant (in ``variants``' order, then any other counted) over
    ``buckets`` (dense, ``step`` seconds each, each point at its bucket's middle), the
    ``changes`` (time, label) inside the span as marks on the time axis."""
    start = buckets[0][0] if buckets else 0
    end = buckets[-1][0] + step if buckets else 1
    span = max(end - start, 1)
    plot_width = WIDTH - _LEFT - _RIGHT
    plot_height = HEIGHT - _TOP - _BOTTOM
    counted = list(variants) + sorted({v for _, counts in buckets for v in counts} - set(variants))
    top = _nice_ceiling(max((c for _, counts in buckets for c in counts.values()), default=0))

    def x_of(moment: float) -> float:
        return round(_LEFT + (moment - start) / span * plot_width, 1)

    def y_of(value: float) -> float:
        return round(_TOP + plot_height - value / top * plot_height, 1)

    lines = [
        ChartLine(
            variant=variant,
            points=" ".join(
                f"{x_of(t + step / 2)},{y_of(counts.get(variant, 0))}" for t, counts in buckets
            ),
            tone=index % TONES,
            total=sum(counts.get(variant, 0) for _, counts in buckets),
        )
        for index, variant in enumerate(counted)
    ]
    marks = [ChartMark(x_of(at), label) for at, label in changes if start <= at <= end]
    x_ticks = [
        Tick(x_of(start + span * i / 4), _time_label(int(start + span * i / 4), span))
        for i in range(5)
    ]
    y_ticks = [Tick(y_of(top * i / 2), f"{top * i / 2:g}") for i in range(3)]
    return Chart(title, caption, lines, marks, x_ticks, y_ticks)
