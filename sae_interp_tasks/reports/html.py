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

from sae_interp_tasks.reports.board import Board, Cell, Column, Group, columns
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


def img_tag(name: str, png: bytes) -> str:
    """A PNG embedded in the page (self-contained: nothing fetched at view time)."""
    data = base64.b64encode(png).decode()
    return (
        f"<div><img class='plot' alt='{html.escape(name)}' src='data:image/png;base64,{data}'>"
        "</div>"
    )


def _sort_value(entry) -> str:
    if entry is None:
        return ""
    if isinstance(entry, Cell):
        return "" if not math.isfinite(entry.value) else repr(float(entry.value))
    if isinstance(entry, tuple):  # latents scored (skipped): sorts by scored
        return str(entry[0])
    return str(entry)


def _shown_columns(group: Group) -> list[tuple[Column, list[Column]]]:
    """The table's columns, each with the columns it carries under its number: a score's chance
    level, and a task's latents scored (skipped) under its first score, so the table fits a laptop
    screen without a column for each."""
    shown: list[tuple[Column, list[Column]]] = []
    first_of: dict[str, int] = {}
    for c in columns(group):
        if c.task is not None and c.task in first_of:
            prev, under = shown[-1]
            chance = group.report(c.task).chance.get(prev.metric)
            if c.kind == "cell" and prev.task == c.task and chance == c.metric:
                under.append(c)
                continue
            if c.kind == "count":
                shown[first_of[c.task]][1].append(c)
                continue
        if c.task is not None and c.kind == "cell":
            first_of.setdefault(c.task, len(shown))
        shown.append((c, []))
    return shown


def _cell(row, c: Column) -> tuple[str, str]:
    """(the cell's text, its sort value)."""
    entry = value(row, c) if (c.task is None or c.task in row.tasks) else None
    return fmt_entry(row, c, entry), _sort_value(entry)


def _under(row, c: Column) -> str:
    text = _cell(row, c)[0]
    if not text:
        return ""
    return f"chance {text}" if c.kind == "cell" else f"latents {text}"


def _table(group: Group) -> list[str]:
    """The group's table: sortable (click a header), each column hideable (the checkboxes above
    it), chance levels and latent counts under the scores they go with."""
    e = html.escape
    shown = _shown_columns(group)
    name = f"board{group.number}"
    boxes = "".join(
        f"<label><input type='checkbox' checked data-table='{name}' data-col='{i}'> "
        f"{e(c.header)}</label>"
        for i, (c, _) in enumerate(shown)
    )
    parts = [
        f"<details class='columns'><summary>columns shown</summary>{boxes}</details>",
        f"<table class='board' id='{name}'><thead><tr>",
    ]
    for c, under in shown:
        kinds = sorted({"chance" if u.kind == "cell" else "latents" for u in under})
        small = f"<span class=chance> / {', '.join(kinds)}</span>" if kinds else ""
        parts.append(
            f"<th class='{'text' if c.kind == 'text' else 'num'}' data-key='{e(c.key)}'>"
            f"{e(c.header)}{small}</th>"
        )
    parts.append("</tr></thead><tbody>")
    for row in group.rows:
        parts.append(f"<tr class='{'control' if row.is_control else 'sae'}'>")
        for c, under in shown:
            text, sort = _cell(row, c)
            lines = "".join(
                f"<br><span class=chance>{e(u)}</span>"
                for u in map(lambda x: _under(row, x), under)
                if u
            )
            parts.append(
                f"<td class='{'text' if c.kind == 'text' else 'num'}' data-value='{e(sort)}'>"
                f"{e(text)}{lines}</td>"
            )
        parts.append("</tr>")
    parts.append("</tbody></table>")
    return parts


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
        parts += _table(group)
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
                parts.append(img_tag(name, png))
        parts.append("</section>")
    parts.append(extra)
    page = Template(_static("leaderboard.html"))
    return page.substitute(
        style=_static("leaderboard.css"), body="\n".join(parts), script=_static("leaderboard.js")
    )
