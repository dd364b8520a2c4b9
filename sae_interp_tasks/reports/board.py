"""`sae-interp leaderboard`'s model: one row per SAE, grouped by instrument settings, and its
columns.

Rows come from runs (results_io): an SAE's tasks from all the files given are merged into one
row; a task scored twice under different settings gives the SAE a second row. Rows are grouped
so that within a group every task was scored under the same settings (explainer, scorer,
corpus, token counts, task version, seed): numbers of different instruments never share a
column, and every renderer names the settings that differ between groups.

What a task's columns are, which metric is its chance level, which metrics are pooled and which
metric describes the SAE (the x axis of the plots) come from the report each task recorded in its
results file: no table of task kinds here.

Cells are mean [lo, hi] at the board's confidence: mean +- z * stderr as lm-eval reports it for
means over docs; for pooled metrics (no lm-eval stderr) a percentile bootstrap over docs when the
samples carry the statistics they are pooled from, else the value alone. How a cell and the notes
under a table read is in `cells.py`; the renderers are `tables.py` (markdown, CSV, JSON), `plots.py`
and `html.py`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np

from sae_interp_tasks import stats
from sae_interp_tasks.aggregations import Pooled
from sae_interp_tasks.errors import SaeInterpError
from sae_interp_tasks.reports.resampling import percentile_interval, resample_weights
from sae_interp_tasks.reports.results_io import Run, TaskResult, settings_differences

log = logging.getLogger(__name__)

BOOTSTRAP_RESAMPLES = 2_000


@dataclass(frozen=True)
class Cell:
    """A number with its interval; `how` says where the interval came from ("" when there is
    none)."""

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


@dataclass(frozen=True, eq=False)
class Group:
    number: int
    settings: dict  # task -> settings shared by every row of the group
    rows: tuple
    differs: dict  # task -> {key: this group's value} for keys that differ between groups

    @property
    def tasks(self) -> list[str]:
        """The group's tasks, in the order their reports ask for (`position`, then name)."""
        reports = {t: r.tasks[t].report for r in self.rows for t in r.tasks}
        return sorted(reports, key=lambda t: (reports[t].position, t))

    def report(self, task: str):
        return next(r.tasks[task].report for r in self.rows if task in r.tasks)

    @property
    def axis(self) -> tuple[str, str] | None:
        """(task, metric) of the metric that describes the SAE (e.g. L0), where a task of the group
        has one."""
        return next(((t, self.report(t).axis) for t in self.tasks if self.report(t).axis), None)

    def axis_value(self, row: Row) -> float:
        c = row.cell(*self.axis) if self.axis else None
        return c.value if c else math.nan


@dataclass(frozen=True, eq=False)
class Board:
    groups: tuple
    confidence: float
    files: tuple

    @property
    def z(self) -> float:
        return stats.z_for(self.confidence)


# --- building the board ------------------------------------------------------------------------
def check_samples(runs: list[Run]) -> None:
    """A run with samples for some tasks but not others lost a file: say which instead of
    guessing."""
    for run in runs:
        have = [t for t, r in run.tasks.items() if r.samples is not None]
        missing = [t for t in run.tasks if t not in have]
        if have and missing:
            raise SaeInterpError(
                f"{run.path}: samples_{missing[0]}_*.jsonl is missing beside it (other tasks have "
                "theirs); restore it, or re-run lm_eval with --log_samples"
            )


def _drafts(runs: list[Run]) -> list[dict]:
    """Per SAE, its tasks merged across files: [{"run": first run, "tasks": {task: (run,
    result)}}]."""
    drafts: list[dict] = []
    for run in runs:
        for task, result in run.tasks.items():
            mine = [d for d in drafts if d["run"].identity == run.identity]
            same = [
                d
                for d in mine
                if task in d["tasks"] and d["tasks"][task][1].settings == result.settings
            ]
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
    return (
        f"{run.shown_as} [{run.fingerprint}]"
        if len(fingerprints) > 1 and run.fingerprint
        else run.shown_as
    )


def build_board(runs: list[Run], confidence: float = 0.95, seed: int = 0) -> Board:
    if not 0 < confidence < 1:
        raise SaeInterpError(f"--confidence must be between 0 and 1, got {confidence}")
    check_samples(runs)
    z = stats.z_for(confidence)
    rng = np.random.default_rng(seed)
    rows = []
    for draft in _drafts(runs):
        run = draft["run"]
        tasks = {t: res for t, (_, res) in draft["tasks"].items()}
        cells = {
            (task, metric): _cell(result, metric, z, confidence, rng)
            for task, result in tasks.items()
            for metric in shown_metrics(result)
        }
        rows.append(
            Row(
                sae=_label(run, runs),
                fingerprint=run.fingerprint,
                d_sae=run.d_sae,
                control=run.control,
                subject_model=run.subject_model,
                tasks=tasks,
                sources={t: str(r.path) for t, (r, _) in draft["tasks"].items()},
                cells=cells,
            )
        )
    rows.sort(key=lambda r: r.is_control)  # stable: SAEs in the order given, then the controls
    return Board(groups=_group(rows), confidence=confidence, files=tuple(str(r.path) for r in runs))


def shown_metrics(result: TaskResult) -> list[str]:
    """The task's columns and plotted metrics, each followed by its chance level, that the results
    hold."""
    names = list(
        dict.fromkeys([result.report.headline, *result.report.columns, *result.report.plotted])
    )
    names += [result.chance_of(m) for m in names if result.chance_of(m)]
    return [m for m in dict.fromkeys(names) if m in result.metrics]


def _cell(result: TaskResult, metric: str, z: float, confidence: float, rng) -> Cell:
    m = result.metrics[metric]
    if m.stderr is not None and math.isfinite(m.value):
        return Cell(m.value, m.value - z * m.stderr, m.value + z * m.stderr, "z")
    expression = result.report.pooled.get(metric)
    stats = result.samples.stats if result.samples else None
    if expression and stats is not None and stats.carries(expression) and stats.n_docs > 1:
        weights = resample_weights(rng, stats.n_docs, BOOTSTRAP_RESAMPLES)
        lo, hi = percentile_interval(
            Pooled(expression).resampled(stats.arrays, weights), confidence
        )
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
    checked: bool = False  # its scorer takes a known-answer check (the task's report says so)


def columns(group: Group) -> list[Column]:
    cols = [Column("sae", "SAE", "text"), Column("d_sae", "width", "int")]
    for task in group.tasks:
        report = group.report(task)
        present = {m for r in group.rows if task in r.tasks for m in shown_metrics(r.tasks[task])}
        for metric in report.columns:
            if metric not in present:
                continue
            cols.append(
                Column(
                    f"{task}/{metric}",
                    report.labels.get(metric, f"{task} {metric}"),
                    "cell",
                    task,
                    metric,
                    metric in report.checks,
                )
            )
            chance = report.chance.get(metric)
            if chance in present:
                cols.append(
                    Column(
                        f"{task}/{chance}",
                        f"chance ({chance})",
                        "cell",
                        task,
                        chance,
                        chance in report.checks,
                    )
                )
        if report.doc_id == "latent":
            cols.append(
                Column(
                    f"{task}/latents", f"{task} latents scored (skipped)", "count", task, "latents"
                )
            )
    return cols
