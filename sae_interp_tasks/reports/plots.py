"""`sae-interp leaderboard`'s plots (PNG bytes, matplotlib's Agg canvas, no pyplot state): per
group, each plotted metric against the metric that describes the SAE (e.g. L0), and bars with
intervals; controls as reference lines, chance levels as crosses."""

from __future__ import annotations

import io
import math

import numpy as np

from sae_interp_tasks.reports.board import Board, Group
from sae_interp_tasks.reports.results_io import percent


def short_name(label: str) -> str:
    """Paths shortened to their last folder (labels of release/sae_id stay whole)."""
    base, plus, control = label.partition("+control=")
    if base.startswith(("/", ".", "~")):
        base = base.rstrip("/").rsplit("/", 1)[-1]
    return base + (f"+control={control}" if plus else "")


def _plot_metrics(group: Group) -> list[tuple[str, str]]:
    """(task, metric) of every metric the group's tasks ask to plot."""
    return [(task, metric) for task in group.tasks for metric in group.report(task).plotted]


def _reference_line(ax, y: float, label: str, color, vertical: bool = False) -> None:
    (ax.axvline if vertical else ax.axhline)(
        y, color=color, linestyle="--", linewidth=1.2, label=label
    )


def _figure(n: int, width: float = 4.2, height: float = 3.4):
    # Agg through the figure's own canvas: no pyplot state, no display
    from matplotlib.figure import (
        Figure,
    )

    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(width * cols, height * rows), dpi=100, layout="constrained")
    axes = [fig.add_subplot(rows, cols, i + 1) for i in range(n)]
    return fig, axes


def _legend(fig, axes) -> None:
    """One legend for the figure, below the panels (inside a panel it hid the bars it labels)."""
    found: dict = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            found.setdefault(label, handle)
    if found:
        fig.legend(
            list(found.values()),
            list(found),
            loc="outside lower center",
            ncol=min(len(found), 3),
            fontsize=8,
            frameon=False,
        )


def _readable_limits(ax, axis: str, min_span: float = 0.02) -> None:
    """No offset notation, and at least `min_span` shown: equal numbers read as equal, not as 1e-8
    apart."""
    ax.ticklabel_format(axis=axis, useOffset=False, style="plain")
    lo, hi = ax.get_ylim() if axis == "y" else ax.get_xlim()
    if hi - lo < min_span:
        mid = (lo + hi) / 2
        (ax.set_ylim if axis == "y" else ax.set_xlim)(mid - min_span / 2, mid + min_span / 2)


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _colors(n: int):
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return [cmap(i % 10) for i in range(n)]


def plot_vs_axis(group: Group, confidence: float) -> bytes | None:
    """Each plotted metric against the metric that describes the SAE (e.g. L0: SAEBench's view);
    controls as horizontal reference lines. None where no task of the group declares such an
    axis."""
    metrics = _plot_metrics(group)
    if group.axis is None:
        return None
    axis_task, axis_metric = group.axis
    axis_label = group.report(axis_task).labels.get(axis_metric, axis_metric)
    saes = [r for r in group.rows if not r.is_control and math.isfinite(group.axis_value(r))]
    if not saes or not metrics:
        return None
    fig, axes = _figure(len(metrics))
    controls = [r for r in group.rows if r.is_control]
    colors = _colors(len(group.rows))
    color_of = {id(r): colors[i] for i, r in enumerate(group.rows)}
    for ax, (task, metric) in zip(axes, metrics, strict=True):
        for row in saes:
            c = row.cell(task, metric)
            if c is None or not math.isfinite(c.value):
                continue
            err = [[c.value - c.lo], [c.hi - c.value]] if c.has_interval else None
            ax.errorbar(
                [group.axis_value(row)],
                [c.value],
                yerr=err,
                fmt="o",
                capsize=3,
                color=color_of[id(row)],
                label=short_name(row.sae),
            )
        for row in controls:
            c = row.cell(task, metric)
            if c is not None and math.isfinite(c.value):
                _reference_line(ax, c.value, short_name(row.sae), color_of[id(row)])
        _readable_limits(ax, "y")
        ax.set_xscale("log")
        ax.set_xlabel(f"{axis_label} ({axis_task})")
        ax.set_ylabel(metric)
        ax.set_title(f"{task}: {metric}", fontsize=10)
        ax.grid(alpha=0.3)
    _legend(fig, axes)
    fig.suptitle(
        f"score against {axis_label} (group {group.number})\n{_interval_words(confidence)}",
        fontsize=10,
    )
    return _png(fig)


def _interval_words(confidence: float) -> str:
    return f"error bars: the table's {percent(confidence)} intervals"


def plot_bars(group: Group, confidence: float) -> bytes | None:
    """Per task, each SAE's headline with its interval; controls as vertical reference lines,
    chance as x."""
    metrics = _plot_metrics(group)
    saes = [r for r in group.rows if not r.is_control]
    if not metrics:
        return None
    fig, axes = _figure(len(metrics), height=max(2.6, 1.0 + 0.45 * max(len(saes), 1)))
    colors = _colors(len(group.rows))
    color_of = {id(r): colors[i] for i, r in enumerate(group.rows)}
    for ax, (task, metric) in zip(axes, metrics, strict=True):
        names, vals, errs, cols, chance = [], [], [[], []], [], []
        for row in saes:
            c = row.cell(task, metric)
            if c is None:
                continue
            names.append(short_name(row.sae))
            vals.append(c.value)
            errs[0].append(c.value - c.lo if c.has_interval else 0.0)
            errs[1].append(c.hi - c.value if c.has_interval else 0.0)
            cols.append(color_of[id(row)])
            chance_name = group.report(task).chance.get(metric)
            ch = row.cell(task, chance_name) if chance_name else None
            chance.append(ch.value if ch else math.nan)
        y = np.arange(len(names))
        ax.barh(y, vals, xerr=errs, color=cols, alpha=0.8, capsize=3)
        if any(math.isfinite(v) for v in chance):
            ax.plot(chance, y, "kx", label="chance (shuffled)")
        ax.set_yticks(y, names, fontsize=8)
        ax.invert_yaxis()
        for row in group.rows:
            c = row.cell(task, metric)
            if row.is_control and c is not None and math.isfinite(c.value):
                _reference_line(ax, c.value, short_name(row.sae), color_of[id(row)], vertical=True)
        _readable_limits(ax, "x")
        ax.set_xlabel(metric)
        ax.set_title(f"{task}: {metric}", fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    _legend(fig, axes)
    fig.suptitle(
        f"headline metrics (group {group.number})\n{_interval_words(confidence)}", fontsize=10
    )
    return _png(fig)


def plots(board: Board) -> dict[str, bytes]:
    """File name -> PNG bytes: per group, the score-vs-axis view (where a task declares an axis,
    e.g. L0) and the bars."""
    out = {}
    for group in board.groups:
        axis = f"vs_{group.axis[1]}" if group.axis else None
        for name, render in ((axis, plot_vs_axis), ("bars", plot_bars)):
            png = render(group, board.confidence)
            if png is not None:
                out[f"group{group.number}_{name}.png"] = png
    return out
