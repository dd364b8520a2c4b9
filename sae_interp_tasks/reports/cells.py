"""How the leaderboard's cells and notes read, shared by every renderer: a row's entry in a
column, its text (mean [lo, hi], a † where the scorer failed its known-answer check, latents
scored (skipped)), and the notes under a table: how the intervals were made, the footnotes of
failed checks, and the settings that set a group apart."""

from __future__ import annotations

import json
import math

from sae_interp_tasks.reports.board import (
    BOOTSTRAP_RESAMPLES,
    Board,
    Cell,
    Column,
    Group,
    Row,
    columns,
)
from sae_interp_tasks.reports.results_io import percent


def value(row: Row, col: Column):
    """The row's entry in the column: str, int, Cell, (scored, skipped), or None where the row
    lacks the task."""
    if col.key == "sae":
        return row.sae
    if col.key == "d_sae":
        return row.d_sae
    result = row.tasks.get(col.task)
    if result is None:
        return None
    if col.kind == "count":
        return result.latents_scored, None if result.skipped is None else int(result.skipped)
    return row.cell(col.task, col.metric)


def exact_count(row: Row, col: Column) -> bool:
    """Latents scored is exact only with samples (they show slots that found no live latent)."""
    return row.tasks[col.task].samples is not None


def fmt(x: float) -> str:
    if x is None or not math.isfinite(x):
        return "n/a"
    return f"{x:.1f}" if abs(x) >= 10 else f"{x:.3f}"


FAILED_MARK = "†"


def fmt_entry(row: Row, col: Column, entry) -> str:
    if entry is None:
        return ""
    if isinstance(entry, Cell):
        text = (
            f"{fmt(entry.value)} [{fmt(entry.lo)}, {fmt(entry.hi)}]"
            if entry.has_interval
            else fmt(entry.value)
        )
        return text + (f" {FAILED_MARK}" if check_failed(row, col) else "")
    if col.kind == "count":
        scored, skipped = entry
        return (f"{scored}" if exact_count(row, col) else f"≤{scored}") + (
            "" if skipped is None else f" ({skipped})"
        )
    return str(entry)


def check_failed(row: Row, col: Column) -> bool:
    """The cell's number comes from a scorer that failed its known-answer check."""
    result = row.tasks.get(col.task) if col.task else None
    return (
        result is not None and col.metric is not None and result.check_passed(col.metric) is False
    )


def check_notes(group: Group, confidence: float) -> list[str]:
    """One footnote per task whose marked cells come from a scorer that failed its check, naming
    each row it marks with that row's check statistic."""
    # task -> the check's statistic -> the rows it marks (rows sharing one check, e.g. an SAE and
    # its controls scored in one run, are named together)
    failed: dict[str, dict[str, list[str]]] = {}
    for row in group.rows:
        for col in columns(group):
            if col.kind == "cell" and check_failed(row, col):
                summary = row.tasks[col.task].check_summary(col.metric, confidence)
                rows = failed.setdefault(col.task, {}).setdefault(summary, [])
                if row.sae not in rows:
                    rows.append(row.sae)
    return [
        f"{FAILED_MARK} {task}: the scorer failed its known-answer check "
        + "; ".join(f"({summary}) in {', '.join(saes)}" for summary, saes in by_check.items())
        + ". The marked numbers say nothing about the SAE: this scorer cannot score its own "
        "known answers. Score with a capable scorer."
        for task, by_check in failed.items()
    ]


def interval_note(board: Board) -> str:
    pct = percent(board.confidence)
    pooled = _pooled_note(board)
    return (
        f"Cells: mean [{pct} interval]. Means over docs: mean ± {board.z:.2f}·stderr as lm-eval "
        "reports it; "
        f"{pooled}"
        "Chance: the same scorer with shuffled explanations (top1_chance: one over the latents "
        "compared). "
        "Rows named +control=... are calibration SAEs (random directions, neuron basis). "
        "≤n: latents scored without samples to tell unfilled slots apart."
    )


def _pooled_note(board: Board) -> str:
    """How pooled metrics get their intervals, naming each task's that the board shows."""
    parts = []
    for group in board.groups:
        for task in group.tasks:
            report = group.report(task)
            shown = [
                m for m in dict.fromkeys([*report.columns, *report.plotted]) if report.pooled.get(m)
            ]
            if shown:
                names = " and ".join(report.labels.get(m, m) for m in shown)
                parts.append((f"{task}'s {names}", report.doc_id))
    parts = list(dict.fromkeys(parts))
    return "".join(
        f"{what}: percentile bootstrap over {doc}s ({BOOTSTRAP_RESAMPLES} resamples) when the "
        "samples carry "
        f"{doc} statistics, else no interval. "
        for what, doc in parts
    )


def settings_lines(group: Group) -> list[str]:
    if not group.differs:
        return []
    return [
        "Settings of this group that differ from other groups: "
        + "; ".join(
            f"{task}: " + ", ".join(f"{k}={_show(v)}" for k, v in keys.items())
            for task, keys in group.differs.items()
        )
    ]


def _show(value) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)
