"""Line charts of training curves (textual-plotext): loss, and dev scores, one or many series.

Long runs have hundreds of thousands of loss points; a plot is a few dozen cells wide, so each
series is reduced to bucket means before it is drawn (the shape survives, the cost does not).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from textual_plotext import PlotextPlot

MAX_POINTS = 400

Series = tuple[str, Sequence[float], Sequence[float]]  # (label, steps, values)


def reduce_points(xs: Sequence[float], ys: Sequence[float], limit: int = MAX_POINTS) -> tuple[list, list]:
    """At most `limit` points: means of equal runs of consecutive points; NaN dropped."""
    pairs = [(x, y) for x, y in zip(xs, ys) if y is not None and not math.isnan(y)]
    if len(pairs) <= limit:
        return [p[0] for p in pairs], [p[1] for p in pairs]
    size = len(pairs) / limit
    out_x, out_y = [], []
    for i in range(limit):
        bucket = pairs[int(i * size): int((i + 1) * size)] or [pairs[-1]]
        out_x.append(sum(p[0] for p in bucket) / len(bucket))
        out_y.append(sum(p[1] for p in bucket) / len(bucket))
    return out_x, out_y


class CurvePlot(PlotextPlot):
    """A titled plot; `show_series` replaces what it draws."""

    def __init__(self, title: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.title = title
        self._series: list[Series] = []
        self._empty = "no data yet"
        self._xmax: float | None = None

    def on_mount(self) -> None:
        super().on_mount()
        self._draw()

    def show_series(self, series: list[Series], empty: str = "no data yet", xmax: float | None = None) -> None:
        """Draw these series; `xmax` (e.g. the run's total steps) fixes the x axis from 0."""
        self._series = series
        self._empty = empty
        self._xmax = xmax
        self._draw()

    def _draw(self) -> None:
        plt = self.plt
        plt.clear_data()
        drawn = False
        for label, xs, ys in self._series:
            x, y = reduce_points(xs, ys)
            if not x:
                continue
            plt.plot(x, y, label=label if len(self._series) > 1 else None, marker="braille")
            drawn = True
        plt.title(self.title if drawn else f"{self.title} — {self._empty}")
        if self._xmax:
            plt.xlim(0, self._xmax)
        self.refresh()
