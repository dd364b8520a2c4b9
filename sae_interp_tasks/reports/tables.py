"""`sae-interp leaderboard`'s text renderers: markdown, CSV (a cell gives value, lo, hi) and JSON.

Renderers return text and write nothing: the CLI writes once everything is computed.
"""

from __future__ import annotations

import csv
import io
import json
import math

from sae_interp_tasks.errors import SaeInterpError
from sae_interp_tasks.records import USAGE_METRICS
from sae_interp_tasks.reports.board import Board, Column, columns
from sae_interp_tasks.reports.cells import (
    check_notes,
    fmt_entry,
    interval_note,
    settings_lines,
    value,
)


def markdown(board: Board) -> str:
    lines = ["# SAE leaderboard", "", interval_note(board), ""]
    several = len(board.groups) > 1
    if several:
        lines += [
            f"The rows fall in {len(board.groups)} groups scored under different instrument "
            "settings; "
            "compare numbers within a group only.",
            "",
        ]
    for group in board.groups:
        if several:
            lines += [f"## Group {group.number}", ""]
            lines += [*settings_lines(group), ""]
        cols = columns(group)
        lines.append("| " + " | ".join(c.header for c in cols) + " |")
        lines.append("|" + "|".join("---" if c.kind == "text" else "---:" for c in cols) + "|")
        for row in group.rows:
            cells = [fmt_entry(row, c, value(row, c)).replace("|", "\\|") for c in cols]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
        notes = check_notes(group, board.confidence)
        lines += [*notes, ""] if notes else []
    return "\n".join(lines)


def csv_text(board: Board) -> str:
    """One line per row; a cell gives three columns (value, lo, hi)."""
    all_cols: list[Column] = []
    for group in board.groups:
        for c in columns(group):
            if c.key not in {x.key for x in all_cols}:
                all_cols.append(c)
    header = ["group", "control", "fingerprint"]
    priced = _tasks_with_usage(board)
    for c in all_cols:
        header += (
            [c.key, f"{c.key}_lo", f"{c.key}_hi", *([f"{c.key}_scorer_check"] if c.checked else [])]
            if c.kind == "cell"
            else [f"{c.task}/latents_scored", f"{c.task}/skipped"]
            if c.kind == "count"
            else [c.key]
        )
    header += [f"{task}/{m}" for task in priced for m in USAGE_METRICS]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for group in board.groups:
        for row in group.rows:
            line = [group.number, row.control or "", row.fingerprint or ""]
            for c in all_cols:
                entry = value(row, c) if (c.task is None or c.task in row.tasks) else None
                if c.kind == "cell":
                    line += (
                        [_csv_num(entry.value), _csv_num(entry.lo), _csv_num(entry.hi)]
                        if entry
                        else ["", "", ""]
                    )
                    if c.checked:
                        line.append(
                            _check_word(row.tasks[c.task].check_passed(c.metric)) if entry else ""
                        )
                elif c.kind == "count":
                    line += ["" if x is None else x for x in entry] if entry else ["", ""]
                else:
                    line.append("" if entry is None else entry)
            for task in priced:
                usage = llm_usage(row.tasks.get(task))
                line += [_csv_num(usage[m]) if usage else "" for m in USAGE_METRICS]
            writer.writerow(line)
    return out.getvalue()


def llm_usage(result) -> dict[str, float] | None:
    """What the task's LLM calls cost (harness.costs): totals over its docs, or None for a task
    without them."""
    if result is None or not all(m in result.metrics for m in USAGE_METRICS):
        return None
    return {m: result.metrics[m].value for m in USAGE_METRICS}


def _tasks_with_usage(board: Board) -> list[str]:
    found = []
    for group in board.groups:
        for row in group.rows:
            found += [
                t
                for t, result in row.tasks.items()
                if t not in found and llm_usage(result) is not None
            ]
    return found


def _check_word(passed: bool | None) -> str:
    return {True: "passed", False: "failed", None: ""}[passed]


def _csv_num(x: float) -> str:
    return "" if not math.isfinite(x) else repr(float(x))


def _json_num(x):
    return None if x is None or not math.isfinite(x) else float(x)


def json_data(board: Board) -> dict:
    groups = []
    for group in board.groups:
        rows = []
        for row in group.rows:
            tasks = {}
            for task, result in row.tasks.items():
                tasks[task] = {
                    "results_file": row.sources[task],
                    "samples": result.samples is not None,
                    "latents_scored": result.latents_scored
                    if result.report.doc_id == "latent"
                    else None,
                    "latents_scored_exact": result.samples is not None,
                    "skipped": result.skipped,
                    "llm_usage": llm_usage(result),
                    "metrics": {
                        m: {
                            "value": _json_num(c.value),
                            "lo": _json_num(c.lo),
                            "hi": _json_num(c.hi),
                            "interval": c.how or None,
                            "stderr": _json_num(result.metrics[m].stderr),
                            "higher_is_better": result.metrics[m].higher_is_better,
                            **_check_json(result, m, board.confidence),
                        }
                        for (t, m), c in row.cells.items()
                        if t == task
                    },
                }
            rows.append(
                {
                    "sae": row.sae,
                    "fingerprint": row.fingerprint,
                    "d_sae": row.d_sae,
                    "control": row.control,
                    "subject_model": row.subject_model,
                    "tasks": tasks,
                }
            )
        groups.append(
            {
                "group": group.number,
                "settings": group.settings,
                "differs": group.differs,
                "rows": rows,
            }
        )
    return {
        "confidence": board.confidence,
        "interval": interval_note(board),
        "files": list(board.files),
        "groups": groups,
    }


def _check_json(result, metric: str, confidence: float) -> dict:
    """A checked metric's verdict (and, when it failed, the check in words); nothing for unchecked
    metrics."""
    if metric not in result.report.checks:
        return {}
    passed = result.check_passed(metric)
    out = {"scorer_check": _check_word(passed) or None}
    if passed is False:
        out["scorer_check_detail"] = result.check_summary(metric, confidence)
    return out


def json_text(board: Board) -> str:
    return json.dumps(json_data(board), indent=2, default=str) + "\n"


def render(board: Board, fmt_name: str) -> str:
    """The board as text in one of the text formats (HTML: html.html_page)."""
    if fmt_name == "markdown":
        return markdown(board)
    if fmt_name == "csv":
        return csv_text(board)
    if fmt_name == "json":
        return json_text(board)
    raise SaeInterpError(f"unknown format {fmt_name!r}; valid: markdown, csv, json, html")
