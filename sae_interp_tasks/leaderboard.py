"""`sae-interp leaderboard`: one row per SAE, grouped by instrument settings, in four formats and two plots.

Rows come from runs (results_io): an SAE's tasks from all the files given are merged into one
row; a task scored twice under different settings gives the SAE a second row. Rows are grouped
so that within a group every task was scored under the same settings (explainer, scorer,
corpus, token counts, task version, seed): numbers of different instruments never share a
column, and every renderer names the settings that differ between groups.

Cells are mean [lo, hi] at the board's confidence: mean +- z * stderr as lm-eval reports it for
means over docs; for sae_core's pooled ratios (no lm-eval stderr) a percentile bootstrap over
chunks when the samples carry the chunk statistics, else the value alone.

Renderers return text or bytes and write nothing: the CLI writes once everything is computed.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import logging
import math
from dataclasses import dataclass, field
from statistics import NormalDist

import numpy as np

from sae_interp_tasks.errors import SaeInterpError
from sae_interp_tasks.results_io import (EXTRA_METRICS, HEADLINE, POOLED, Run, TaskResult, chance_metric,
                                         percent, settings_differences)

log = logging.getLogger(__name__)

BOOTSTRAP_RESAMPLES = 2_000
NICE = {"ce_loss_recovered": "CE loss recovered", "explained_variance": "explained variance", "l0": "L0"}


@dataclass(frozen=True)
class Cell:
    """A number with its interval; `how` says where the interval came from ("" when there is none)."""

    value: float
    lo: float = math.nan
    hi: float = math.nan
    how: str = ""

    @property
    def has_interval(self) -> bool:
        return math.isfinite(self.lo) and math.isfinite(self.hi)


@dataclass(frozen=True, eq=False)
class Row:
    sae: str  # the label shown (the backend's label, with the fingerprint when a label has several)
    fingerprint: str | None
    d_sae: int | None
    control: str | None
    subject_model: str | None
    tasks: dict  # task -> TaskResult
    sources: dict  # task -> results file
    cells: dict = field(default_factory=dict)  # (task, metric) -> Cell

    @property
    def is_control(self) -> bool:
        return bool(self.control)

    def cell(self, task: str, metric: str) -> Cell | None:
        return self.cells.get((task, metric))

    @property
    def l0(self) -> float:
        c = self.cell("sae_core", "l0")
        return c.value if c else math.nan


@dataclass(frozen=True, eq=False)
class Group:
    number: int
    settings: dict  # task -> settings shared by every row of the group
    rows: tuple
    differs: dict  # task -> {key: this group's value} for keys that differ between groups

    @property
    def tasks(self) -> list[str]:
        present = {t for r in self.rows for t in r.tasks}
        return [t for t in HEADLINE if t in present]  # built-ins first, then kinds met in results files


@dataclass(frozen=True, eq=False)
class Board:
    groups: tuple
    confidence: float
    files: tuple

    @property
    def z(self) -> float:
        return NormalDist().inv_cdf(0.5 + self.confidence / 2)


# --- building the board ------------------------------------------------------------------------
def check_samples(runs: list[Run]) -> None:
    """A run with samples for some tasks but not others lost a file: say which instead of guessing."""
    for run in runs:
        have = [t for t, r in run.tasks.items() if r.samples is not None]
        missing = [t for t in run.tasks if t not in have]
        if have and missing:
            raise SaeInterpError(f"{run.path}: samples_{missing[0]}_*.jsonl is missing beside it (other tasks have "
                                 "theirs); restore it, or re-run lm_eval with --log_samples")


def _drafts(runs: list[Run]) -> list[dict]:
    """Per SAE, its tasks merged across files: [{"run": first run, "tasks": {task: (run, result)}}]."""
    drafts: list[dict] = []
    for run in runs:
        for task, result in run.tasks.items():
            mine = [d for d in drafts if d["run"].identity == run.identity]
            same = [d for d in mine if task in d["tasks"] and d["tasks"][task][1].settings == result.settings]
            if same:  # a rerun under the same settings: the newer file wins
                old_run = same[0]["tasks"][task][0]
                if run.date >= old_run.date:
                    log.warning("%s %s: %s supersedes %s", run.sae, task, run.path, old_run.path)
                    same[0]["tasks"][task] = (run, result)
                continue
            free = [d for d in mine if task not in d["tasks"]]
            if free:
                free[0]["tasks"][task] = (run, result)
            else:
                drafts.append({"run": run, "tasks": {task: (run, result)}})
    return drafts


def _label(run: Run, runs: list[Run]) -> str:
    fingerprints = {r.fingerprint for r in runs if r.sae == run.sae}
    return f"{run.sae} [{run.fingerprint}]" if len(fingerprints) > 1 and run.fingerprint else run.sae


def build_board(runs: list[Run], confidence: float = 0.95, seed: int = 0) -> Board:
    if not 0 < confidence < 1:
        raise SaeInterpError(f"--confidence must be between 0 and 1, got {confidence}")
    check_samples(runs)
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    rng = np.random.default_rng(seed)
    rows = []
    for draft in _drafts(runs):
        run = draft["run"]
        tasks = {t: res for t, (_, res) in draft["tasks"].items()}
        cells = {(task, metric): _cell(result, metric, z, confidence, rng)
                 for task, result in tasks.items() for metric in shown_metrics(task, result)}
        rows.append(Row(sae=_label(run, runs), fingerprint=run.fingerprint, d_sae=run.d_sae, control=run.control,
                        subject_model=run.subject_model, tasks=tasks,
                        sources={t: str(r.path) for t, (r, _) in draft["tasks"].items()}, cells=cells))
    rows.sort(key=lambda r: r.is_control)  # stable: SAEs in the order given, then the controls
    return Board(groups=_group(rows), confidence=confidence, files=tuple(str(r.path) for r in runs))


def shown_metrics(task: str, result: TaskResult) -> list[str]:
    names = [HEADLINE[task], *EXTRA_METRICS.get(task, ())]
    names += [chance_metric(m) for m in names if chance_metric(m) in result.metrics]
    return [m for m in names if m in result.metrics]


def _cell(result: TaskResult, metric: str, z: float, confidence: float, rng) -> Cell:
    m = result.metrics[metric]
    if m.stderr is not None and math.isfinite(m.value):
        return Cell(m.value, m.value - z * m.stderr, m.value + z * m.stderr, "z")
    chunks = result.samples.chunks if result.samples else None
    if metric in POOLED.get(result.task, ()) and chunks is not None and chunks.n_tokens.size > 1:
        from sae_interp_tasks.compare import RATIOS, percentile_interval, pooled_ratio, resample_weights

        if metric in RATIOS:
            weights = resample_weights(rng, chunks.n_tokens.size, BOOTSTRAP_RESAMPLES)
            lo, hi = percentile_interval(pooled_ratio(metric, chunks, weights), confidence)
            return Cell(m.value, lo, hi, "bootstrap")
    return Cell(m.value)


def _group(rows: list[Row]) -> tuple:
    """Greedy: each row joins the first group whose settings agree on every task both have."""
    drafts: list[tuple[dict, list]] = []
    for row in rows:
        for settings, members in drafts:
            if all(settings[t] == r.settings for t, r in row.tasks.items() if t in settings):
                members.append(row)
                settings.update({t: r.settings for t, r in row.tasks.items()})
                break
        else:
            drafts.append(({t: r.settings for t, r in row.tasks.items()}, [row]))
    groups = []
    for number, (settings, members) in enumerate(drafts, 1):
        differs = {}
        for task, mine in settings.items():
            keys = set()
            for other, _ in drafts:
                if task in other and other[task] != mine:
                    keys |= set(settings_differences(mine, other[task]))
            if keys:
                differs[task] = {k: mine.get(k) for k in sorted(keys)}
        groups.append(Group(number=number, settings=settings, rows=tuple(members), differs=differs))
    return tuple(groups)


# --- columns -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Column:
    key: str  # machine name (CSV / JSON)
    header: str  # human name (markdown / HTML)
    kind: str  # "text" | "int" | "cell" | "count" (latents scored, skipped)
    task: str | None = None
    metric: str | None = None


def columns(group: Group) -> list[Column]:
    cols = [Column("sae", "SAE", "text"), Column("d_sae", "width", "int")]
    if "sae_core" in group.tasks:
        for metric in ("l0", "explained_variance", "ce_loss_recovered"):
            cols.append(Column(f"sae_core/{metric}", NICE[metric], "cell", "sae_core", metric))
    for task in group.tasks:
        if task == "sae_core":
            continue
        present = {m for r in group.rows if task in r.tasks for m in shown_metrics(task, r.tasks[task])}
        for metric in (HEADLINE[task], *EXTRA_METRICS.get(task, ())):
            if metric not in present:
                continue
            cols.append(Column(f"{task}/{metric}", f"{task} {metric}", "cell", task, metric))
            if chance_metric(metric) in present:
                cols.append(Column(f"{task}/{chance_metric(metric)}", f"chance ({chance_metric(metric)})", "cell",
                                   task, chance_metric(metric)))
        cols.append(Column(f"{task}/latents", f"{task} latents scored (skipped)", "count", task, "latents"))
    return cols


def value(row: Row, col: Column):
    """The row's entry in the column: str, int, Cell, (scored, skipped), or None where the row lacks the task."""
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


def fmt_entry(row: Row, col: Column, entry) -> str:
    if entry is None:
        return ""
    if isinstance(entry, Cell):
        return f"{fmt(entry.value)} [{fmt(entry.lo)}, {fmt(entry.hi)}]" if entry.has_interval else fmt(entry.value)
    if col.kind == "count":
        scored, skipped = entry
        return (f"{scored}" if exact_count(row, col) else f"≤{scored}") + ("" if skipped is None else f" ({skipped})")
    return str(entry)


# --- text renderers ----------------------------------------------------------------------------
def interval_note(board: Board) -> str:
    pct = percent(board.confidence)
    return (f"Cells: mean [{pct} interval]. Means over docs: mean ± {board.z:.2f}·stderr as lm-eval reports it; "
            f"sae_core's explained variance and CE loss recovered: percentile bootstrap over chunks "
            f"({BOOTSTRAP_RESAMPLES} resamples) when the samples carry chunk statistics, else no interval. "
            "Chance: the same scorer with shuffled explanations (top1_chance: one over the latents compared). "
            "Rows named +control=... are calibration SAEs (random directions, neuron basis). "
            "≤n: latents scored without samples to tell unfilled slots apart.")


def settings_lines(group: Group) -> list[str]:
    if not group.differs:
        return []
    return ["Settings of this group that differ from other groups: "
            + "; ".join(f"{task}: " + ", ".join(f"{k}={_show(v)}" for k, v in keys.items())
                        for task, keys in group.differs.items())]


def _show(value) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


def markdown(board: Board) -> str:
    lines = ["# SAE leaderboard", "", interval_note(board), ""]
    several = len(board.groups) > 1
    if several:
        lines += [f"The rows fall in {len(board.groups)} groups scored under different instrument settings; "
                  "compare numbers within a group only.", ""]
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
    return "\n".join(lines)


def csv_text(board: Board) -> str:
    """One line per row; a cell gives three columns (value, lo, hi)."""
    all_cols: list[Column] = []
    for group in board.groups:
        for c in columns(group):
            if c.key not in {x.key for x in all_cols}:
                all_cols.append(c)
    header = ["group", "control", "fingerprint"]
    for c in all_cols:
        header += ([c.key, f"{c.key}_lo", f"{c.key}_hi"] if c.kind == "cell" else
                   [f"{c.task}/latents_scored", f"{c.task}/skipped"] if c.kind == "count" else [c.key])
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for group in board.groups:
        for row in group.rows:
            line = [group.number, row.control or "", row.fingerprint or ""]
            for c in all_cols:
                entry = value(row, c) if (c.task is None or c.task in row.tasks) else None
                if c.kind == "cell":
                    line += [_csv_num(entry.value), _csv_num(entry.lo), _csv_num(entry.hi)] if entry else ["", "", ""]
                elif c.kind == "count":
                    line += ["" if x is None else x for x in entry] if entry else ["", ""]
                else:
                    line.append("" if entry is None else entry)
            writer.writerow(line)
    return out.getvalue()


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
                    "latents_scored": result.latents_scored if task != "sae_core" else None,
                    "latents_scored_exact": result.samples is not None,
                    "skipped": result.skipped,
                    "metrics": {m: {"value": _json_num(c.value), "lo": _json_num(c.lo), "hi": _json_num(c.hi),
                                    "interval": c.how or None, "stderr": _json_num(result.metrics[m].stderr),
                                    "higher_is_better": result.metrics[m].higher_is_better}
                                for (t, m), c in row.cells.items() if t == task},
                }
            rows.append({"sae": row.sae, "fingerprint": row.fingerprint, "d_sae": row.d_sae, "control": row.control,
                         "subject_model": row.subject_model, "tasks": tasks})
        groups.append({"group": group.number, "settings": group.settings, "differs": group.differs, "rows": rows})
    return {"confidence": board.confidence, "interval": interval_note(board), "files": list(board.files),
            "groups": groups}


def json_text(board: Board) -> str:
    return json.dumps(json_data(board), indent=2, default=str) + "\n"


# --- plots -------------------------------------------------------------------------------------
def short_name(label: str) -> str:
    """Paths shortened to their last folder (labels of release/sae_id stay whole)."""
    base, plus, control = label.partition("+control=")
    if base.startswith(("/", ".", "~")):
        base = base.rstrip("/").rsplit("/", 1)[-1]
    return base + (f"+control={control}" if plus else "")


def _plot_metrics(group: Group) -> list[tuple[str, str]]:
    out = []
    for task in group.tasks:
        out.append((task, HEADLINE[task]))
        if task == "sae_core":
            out.append((task, "explained_variance"))
    return out


def _reference_line(ax, y: float, label: str, color, vertical: bool = False) -> None:
    (ax.axvline if vertical else ax.axhline)(y, color=color, linestyle="--", linewidth=1.2, label=label)


def _figure(n: int, width: float = 4.2, height: float = 3.4):
    from matplotlib.figure import Figure  # Agg through the figure's own canvas: no pyplot state, no display

    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(width * cols, height * rows), dpi=100, layout="constrained")
    axes = [fig.add_subplot(rows, cols, i + 1) for i in range(n)]
    return fig, axes


def _legend(fig, axes) -> None:
    """One legend for the figure, below the panels (inside a panel it hid the bars it labels)."""
    found: dict = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            found.setdefault(label, handle)
    if found:
        fig.legend(list(found.values()), list(found), loc="outside lower center", ncol=min(len(found), 3), fontsize=8,
                   frameon=False)


def _readable_limits(ax, axis: str, min_span: float = 0.02) -> None:
    """No offset notation, and at least `min_span` shown: equal numbers read as equal, not as 1e-8 apart."""
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


def plot_vs_l0(group: Group, confidence: float) -> bytes | None:
    """Each task's headline against the SAE's L0 (SAEBench's view); controls as horizontal reference lines."""
    metrics = _plot_metrics(group)
    saes = [r for r in group.rows if not r.is_control and math.isfinite(r.l0)]
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
            ax.errorbar([row.l0], [c.value], yerr=err, fmt="o", capsize=3, color=color_of[id(row)],
                        label=short_name(row.sae))
        for row in controls:
            c = row.cell(task, metric)
            if c is not None and math.isfinite(c.value):
                _reference_line(ax, c.value, short_name(row.sae), color_of[id(row)])
        _readable_limits(ax, "y")
        ax.set_xscale("log")
        ax.set_xlabel("L0 (sae_core)")
        ax.set_ylabel(metric)
        ax.set_title(f"{task}: {metric}", fontsize=10)
        ax.grid(alpha=0.3)
    _legend(fig, axes)
    fig.suptitle(f"score against L0 (group {group.number})\n{_interval_words(confidence)}", fontsize=10)
    return _png(fig)


def _interval_words(confidence: float) -> str:
    return f"error bars: the table's {percent(confidence)} intervals"


def plot_bars(group: Group, confidence: float) -> bytes | None:
    """Per task, each SAE's headline with its interval; controls as vertical reference lines, chance as x."""
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
            ch = row.cell(task, chance_metric(metric))
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
    fig.suptitle(f"headline metrics (group {group.number})\n{_interval_words(confidence)}", fontsize=10)
    return _png(fig)


def plots(board: Board) -> dict[str, bytes]:
    """File name -> PNG bytes: per group, the score-vs-L0 view (where sae_core is present) and the bars."""
    out = {}
    for group in board.groups:
        for name, render in (("vs_l0", plot_vs_l0), ("bars", plot_bars)):
            png = render(group, board.confidence)
            if png is not None:
                out[f"group{group.number}_{name}.png"] = png
    return out


# --- HTML --------------------------------------------------------------------------------------
_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;font-size:13px;margin:0.8em 0}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:right;white-space:nowrap}
th{background:#f0f0f0;cursor:pointer;user-select:none}
th.sorted-asc::after{content:" \\25B2"} th.sorted-desc::after{content:" \\25BC"}
td.text,th.text{text-align:left}
tr.control td{color:#666;font-style:italic}
.note{font-size:13px;color:#444;max-width:70em}
.differs{background:#fff4d6;padding:6px 10px;border-left:4px solid #e0a000;font-size:13px}
img{max-width:100%;border:1px solid #ddd;margin:0.4em 0}
"""

# click a header: sort the rows of its table by that column (numbers by data-value, empty last)
_SCRIPT = """
document.querySelectorAll('table.board th').forEach(function (th) {
  th.addEventListener('click', function () {
    var table = th.closest('table'), body = table.tBodies[0];
    var col = Array.prototype.indexOf.call(th.parentNode.children, th);
    var asc = !th.classList.contains('sorted-asc');
    table.querySelectorAll('th').forEach(function (h) { h.classList.remove('sorted-asc', 'sorted-desc'); });
    th.classList.add(asc ? 'sorted-asc' : 'sorted-desc');
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = a.cells[col].dataset.value, y = b.cells[col].dataset.value;
      if (x === '' && y === '') return 0;
      if (x === '') return 1;
      if (y === '') return -1;
      var nx = parseFloat(x), ny = parseFloat(y);
      var c = (isNaN(nx) || isNaN(ny)) ? x.localeCompare(y) : nx - ny;
      return asc ? c : -c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  });
});
"""


def _sort_value(entry) -> str:
    if entry is None:
        return ""
    if isinstance(entry, Cell):
        return "" if not math.isfinite(entry.value) else repr(float(entry.value))
    if isinstance(entry, tuple):  # latents scored (skipped): sorts by scored
        return str(entry[0])
    return str(entry)


def html_page(board: Board, images: dict[str, bytes] | None = None) -> str:
    images = plots(board) if images is None else images
    e = html.escape
    parts = ["<!DOCTYPE html>", "<html lang='en'><head><meta charset='utf-8'>", "<title>SAE leaderboard</title>",
             f"<style>{_STYLE}</style></head><body>", "<h1>SAE leaderboard</h1>",
             f"<p class='note'>{e(interval_note(board))} Click a column header to sort.</p>"]
    several = len(board.groups) > 1
    if several:
        parts.append(f"<p class='differs'>The rows fall in {len(board.groups)} groups scored under different "
                     "instrument settings; compare numbers within a group only.</p>")
    for group in board.groups:
        parts.append(f"<section id='group{group.number}'>")
        if several:
            parts.append(f"<h2>Group {group.number}</h2>")
            for line in settings_lines(group):
                parts.append(f"<p class='differs'>{e(line)}</p>")
        cols = columns(group)
        parts.append(f"<table class='board' id='board{group.number}'><thead><tr>")
        parts += [f"<th class='{'text' if c.kind == 'text' else 'num'}' data-key='{e(c.key)}'>{e(c.header)}</th>"
                  for c in cols]
        parts.append("</tr></thead><tbody>")
        for row in group.rows:
            parts.append(f"<tr class='{'control' if row.is_control else 'sae'}'>")
            for c in cols:
                entry = value(row, c) if (c.task is None or c.task in row.tasks) else None
                parts.append(f"<td class='{'text' if c.kind == 'text' else 'num'}' "
                             f"data-value='{e(_sort_value(entry))}'>{e(fmt_entry(row, c, entry))}</td>")
            parts.append("</tr>")
        parts.append("</tbody></table>")
        parts.append("<details><summary>settings of this group</summary><pre>"
                     f"{e(json.dumps(group.settings, indent=1, sort_keys=True, default=str))}</pre></details>")
        for name, png in images.items():
            if name.startswith(f"group{group.number}_"):
                data = base64.b64encode(png).decode()
                parts.append(f"<div><img class='plot' alt='{e(name)}' src='data:image/png;base64,{data}'></div>")
        parts.append("</section>")
    parts.append(f"<script>{_SCRIPT}</script></body></html>")
    return "\n".join(parts) + "\n"


def render(board: Board, fmt_name: str) -> str:
    if fmt_name == "markdown":
        return markdown(board)
    if fmt_name == "csv":
        return csv_text(board)
    if fmt_name == "json":
        return json_text(board)
    if fmt_name == "html":
        return html_page(board)
    raise SaeInterpError(f"unknown format {fmt_name!r}; valid: markdown, csv, json, html")

