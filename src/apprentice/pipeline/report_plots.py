"""The report's plots: small matplotlib figures rendered by the Agg canvas and returned as `data:image/png;base64,...`
URIs, so the HTML page carries its images inside it.

    from apprentice.pipeline.report_plots import bars
    uri = bars([("kept", 40), ("near_duplicate", 12)], "records")   # <img src="{{ uri }}">

Figures are built with the object-oriented API (`Figure` + `FigureCanvasAgg`), never pyplot, so no global backend
state is touched and nothing is shown on a screen.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from typing import Any

STUDENT, TEACHER, BASE = "#2f6db5", "#d9822b", "#7a7a7a"
WIN, TIE, LOSS = "#2f9e5b", "#b8b8b8", "#cf4a3c"
# sizes in inches at 110 dots per inch, so that a plot is shown at its own size: FULL spans the page, HALF one of
# its two columns (scaled down, the labels would shrink below legibility)
FULL, HALF, _HEIGHT, _DPI = 6.4, 4.4, 2.6, 110


def _figure(height: float = _HEIGHT, width: float = FULL) -> tuple[Any, Any]:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=_DPI, layout="constrained")
    axes = figure.add_subplot()
    axes.spines[["top", "right"]].set_visible(False)
    axes.tick_params(labelsize=8)
    return figure, axes


def _whole_numbers(axis: Any) -> None:
    """Ticks at whole numbers only (counts and steps have no 0.5)."""
    from matplotlib.ticker import MaxNLocator

    axis.set_major_locator(MaxNLocator(integer=True))


def _uri(figure: Any) -> str:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    buffer = io.BytesIO()
    FigureCanvasAgg(figure).print_png(buffer)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def bars(counts: Sequence[tuple[str, int]], xlabel: str, colors: Sequence[str] | None = None,
         width: float = FULL) -> str:
    """Horizontal bars, first item on top, each labelled with its count."""
    labels = [label for label, _ in counts]
    values = [value for _, value in counts]
    figure, axes = _figure(max(1.2, 0.28 * len(counts) + 0.7), width)
    positions = range(len(counts))
    drawn = axes.barh(positions, values, color=list(colors) if colors else STUDENT, height=0.7)
    axes.bar_label(drawn, fontsize=8, padding=2)
    axes.set_yticks(list(positions), labels, fontsize=8)
    axes.invert_yaxis()
    axes.set_xlabel(xlabel, fontsize=9)
    axes.margins(x=0.12)
    _whole_numbers(axes.xaxis)
    return _uri(figure)


def histogram(series: Sequence[tuple[str, Sequence[float], str]], xlabel: str, bins: int = 30,
              width: float = FULL) -> str:
    """Overlaid histograms on shared bins, one per (label, values, color); a legend when there are several."""
    import numpy as np

    figure, axes = _figure(width=width)
    everything = np.concatenate([np.asarray(values, dtype=float) for _, values, _ in series if len(values)])
    edges = np.histogram_bin_edges(everything, bins=min(bins, max(1, len(np.unique(everything)))))
    for label, values, color in series:
        axes.hist(values, bins=edges, color=color, alpha=0.55 if len(series) > 1 else 0.9, label=label,
                  edgecolor="white", linewidth=0.4)
    axes.set_xlabel(xlabel, fontsize=9)
    axes.set_ylabel("count", fontsize=9)
    _whole_numbers(axes.yaxis)
    if len(series) > 1:
        axes.legend(fontsize=8, frameon=False)
    return _uri(figure)


def loss_curve(steps: Sequence[float], losses: Sequence[float], lrs: Sequence[float | None]) -> str:
    """Training loss by optimizer step, with the learning rate as a thin line on its own axis when logged."""
    figure, axes = _figure(2.8)
    axes.plot(steps, losses, color=STUDENT, linewidth=1.4, marker="o" if len(steps) < 30 else None, markersize=3)
    axes.set_xlabel("optimizer step", fontsize=9)
    _whole_numbers(axes.xaxis)
    axes.set_ylabel("loss (response tokens)", fontsize=9, color=STUDENT)
    if any(lr is not None for lr in lrs):
        rate = axes.twinx()
        rate.plot(steps, [float("nan") if lr is None else lr for lr in lrs], color=BASE, linewidth=0.9,
                  linestyle="--")
        rate.set_ylabel("learning rate", fontsize=9, color=BASE)
        rate.tick_params(labelsize=8)
        rate.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
        rate.yaxis.get_offset_text().set_fontsize(8)
        rate.spines[["top"]].set_visible(False)
    return _uri(figure)


def verdict_bar(wins: int, ties: int, losses: int, failed: int) -> str:
    """One stacked bar of the student's wins, ties and losses (and failed judgments) with counts inside."""
    figure, axes = _figure(1.25)
    total = wins + ties + losses + failed
    left = 0
    parts = [("student better", wins, WIN), ("tie", ties, TIE), ("teacher better", losses, LOSS),
             ("failed", failed, "#ffffff")]
    for label, value, color in parts:
        if value:
            drawn = axes.barh([0], [value], left=left, color=color, edgecolor="#555555", linewidth=0.6,
                              label=f"{label} ({value})")
            if value >= 0.04 * total:  # a narrower segment has no room for its number (the legend has it)
                axes.bar_label(drawn, labels=[str(value)], label_type="center", fontsize=9)
            left += value
    axes.set_xlim(0, max(left, 1))
    axes.set_yticks([])
    axes.spines[["left"]].set_visible(False)
    axes.set_xlabel("judged instructions", fontsize=9)
    _whole_numbers(axes.xaxis)
    axes.legend(fontsize=8, frameon=False, ncols=4, loc="lower center", bbox_to_anchor=(0.5, 1.0))
    return _uri(figure)


def gap_closed(rows: Sequence[tuple[str, float]]) -> str:
    """One bar per measure: the share of the base model's distance to the teacher that the student closed (0 = as
    far as the base, 100% = at the teacher), both ends marked; a bar below -50% is drawn to the edge and labelled
    with its value. Green: closer than the base; red: further away."""
    figure, axes = _figure(max(1.4, 0.34 * len(rows) + 0.8))
    positions = range(len(rows))
    values = [100 * value for _, value in rows]
    shown = [max(v, -50.0) for v in values]
    colors = [WIN if v > 0 else LOSS for v in values]
    axes.barh(positions, shown, color=colors, height=0.6)
    for position, value, drawn_to in zip(positions, values, shown):  # right of the bar, or of 0 for a negative one
        axes.text(max(drawn_to, 0) + 2, position, f"{value:.0f}%", fontsize=8, va="center")
    axes.set_yticks(list(positions), [label for label, _ in rows], fontsize=8)
    axes.invert_yaxis()
    for x, name in ((0, "base"), (100, "teacher")):
        axes.axvline(x, color=BASE if x == 0 else TEACHER, linewidth=1, linestyle="--")
        axes.text(x, -0.75, name, fontsize=8, ha="center", va="bottom", color=BASE if x == 0 else TEACHER)
    axes.set_xlim(-55, 120)
    axes.set_xlabel("share of the base model's distance to the teacher the student closed (%)", fontsize=9)
    return _uri(figure)

