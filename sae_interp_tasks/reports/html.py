"""`sae-interp leaderboard --format html`: one self-contained page with a sortable table per group
and the plots embedded. The page, its style and its script (click a header: sort that column's rows,
numbers by value, empty cells last) are package data files in `static/`."""

from __future__ import annotations

import base64
import html
import json
import math
from importlib import resources
from string import Template

from sae_interp_tasks.reports.board import Board, Cell, columns
from sae_interp_tasks.reports.cells import (
    check_notes,
    fmt_entry,
    interval_note,
    settings_lines,
    value,
)
from sae_interp_tasks.reports.plots import plots


def _static(name: str) -> str:
    return (
        resources.files("sae_interp_tasks.reports")
        .joinpath("static", name)
        .read_text(encoding="utf-8")
    )


def _sort_value(entry) -> str:
    if entry is None:
        return ""
    if isinstance(entry, Cell):
        return "" if not math.isfinite(entry.value) else repr(float(entry.value))
    if isinstance(entry, tuple):  # latents scored (skipped): sorts by scored
        return str(entry[0])
    return str(entry)


def html_page(board: Board, images: dict[str, bytes] | None = None, extra: str = "") -> str:
    """The page; `extra`: HTML after the groups (the overlap matrix of similarity runs)."""
    images = plots(board) if images is None else images
    e = html.escape
    parts = [
        "<h1>SAE leaderboard</h1>",
        f"<p class='note'>{e(interval_note(board))} Click a column header to sort.</p>",
    ]
    several = len(board.groups) > 1
    if several:
        parts.append(
            f"<p class='differs'>The rows fall in {len(board.groups)} groups scored under "
            "different "
            "instrument settings; compare numbers within a group only.</p>"
        )
    for group in board.groups:
        parts.append(f"<section id='group{group.number}'>")
        if several:
            parts.append(f"<h2>Group {group.number}</h2>")
            for line in settings_lines(group):
                parts.append(f"<p class='differs'>{e(line)}</p>")
        cols = columns(group)
        parts.append(f"<table class='board' id='board{group.number}'><thead><tr>")
        parts += [
            f"<th class='{'text' if c.kind == 'text' else 'num'}' "
            f"data-key='{e(c.key)}'>{e(c.header)}</th>"
            for c in cols
        ]
        parts.append("</tr></thead><tbody>")
        for row in group.rows:
            parts.append(f"<tr class='{'control' if row.is_control else 'sae'}'>")
            for c in cols:
                entry = value(row, c) if (c.task is None or c.task in row.tasks) else None
                parts.append(
                    f"<td class='{'text' if c.kind == 'text' else 'num'}' "
                    f"data-value='{e(_sort_value(entry))}'>{e(fmt_entry(row, c, entry))}</td>"
                )
            parts.append("</tr>")
        parts.append("</tbody></table>")
        parts += [
            f"<p class='note failed'>{e(note)}</p>" for note in check_notes(group, board.confidence)
        ]
        parts.append(
            "<details><summary>settings of this group</summary><pre>"
            f"{e(json.dumps(group.settings, indent=1, sort_keys=True, default=str))}"
            "</pre></details>"
        )
        for name, png in images.items():
            if name.startswith(f"group{group.number}_"):
                data = base64.b64encode(png).decode()
                parts.append(
                    f"<div><img class='plot' alt='{e(name)}' "
                    f"src='data:image/png;base64,{data}'></div>"
                )
        parts.append("</section>")
    parts.append(extra)
    page = Template(_static("leaderboard.html"))
    return page.substitute(
        style=_static("leaderboard.css"), body="\n".join(parts), script=_static("leaderboard.js")
    )
