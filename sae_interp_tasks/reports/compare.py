"""`sae-interp compare`: candidate - baseline per metric with a bootstrap interval, and a CI
verdict.

Per gated metric the difference candidate - baseline gets a percentile bootstrap interval from
the per-doc scores in the samples files:
  - paired, where the docs are the same (as the task's recorded report says: the same latents of
    the same SAE's weights, or docs whose pairing field agrees, e.g. chunks of the same tokens):
    one resampling of the matched docs serves both sides;
  - unpaired otherwise: each side's docs are resampled independently.
Means over docs resample per-doc values with NaN (no score) left out. Pooled metrics (e.g. explained
variance) resample docs and recompute the metric from the docs' statistics with the expression the
task recorded (aggregations.Pooled), exactly as the task aggregates it.

The verdict is FAIL when, on any gated metric, the whole two-sided `confidence` interval lies
beyond a drop of `max_drop` in the metric's bad direction. The bootstrap itself is in
`resampling.py`; the pull-request summary and the verdict line in `compare_text.py`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from sae_interp_tasks.errors import SaeInterpError
from sae_interp_tasks.reports.resampling import mean_metric_difference, pooled_metric_difference
from sae_interp_tasks.reports.results_io import (
    Run,
    TaskResult,
    describe_differences,
    require_samples,
    settings_differences,
)

log = logging.getLogger(__name__)

N_RESAMPLES = 10_000


# --- comparing two sides ----------------------------------------------------------------------
@dataclass(frozen=True)
class Side:
    """One side of a comparison: one SAE's tasks, merged from its results files."""

    label: str
    fingerprint: str | None
    subject_model: str | None
    paths: tuple
    tasks: dict  # task -> TaskResult


@dataclass(frozen=True)
class Comparison:
    task: str
    metric: str
    baseline: float
    candidate: float
    difference: float
    lo: float
    hi: float
    higher_is_better: bool
    paired: bool
    how: str  # why paired / unpaired, in words
    n_baseline: int
    n_candidate: int
    worse: bool  # worse than max_drop at the confidence (never for a metric that is not gated)
    not_gated: str = (
        ""  # why the metric is not gated on (its scorer failed its known-answer check); "" if gated
    )

    @property
    def name(self) -> str:
        return f"{self.task}/{self.metric}"

    @property
    def gated(self) -> bool:
        return not self.not_gated

    @property
    def detectable_drop(self) -> float:
        """The smallest drop this comparison could detect: its interval's half-width."""
        return (self.hi - self.lo) / 2


@dataclass(frozen=True)
class RunComparison:
    baseline: Side
    candidate: Side
    confidence: float
    max_drop: float
    resamples: int
    rows: tuple

    @property
    def failed(self) -> tuple:
        return tuple(r for r in self.rows if r.worse)

    @property
    def gated(self) -> tuple:
        return tuple(r for r in self.rows if r.gated)

    @property
    def exit_code(self) -> int:
        """1: a gated metric is worse; 2: nothing could be gated (every scorer failed its check);
        0: pass."""
        return 1 if self.failed else 0 if self.gated else 2


def side_from_runs(runs: list[Run], what: str) -> Side:
    """The runs of one SAE merged (e.g. its reconstruction and auto-interp runs); a task given
    twice is an error."""
    names = sorted(
        {r.sae + (f" [{r.fingerprint}]" if r.fingerprint else " [no fingerprint]") for r in runs}
    )
    if len(names) > 1:
        raise SaeInterpError(
            f"{what} holds results of {len(names)} SAEs ({', '.join(names)}); "
            "point at one SAE's results file or folder"
        )
    tasks: dict = {}
    for run in runs:
        for task, result in run.tasks.items():
            if task in tasks:
                raise SaeInterpError(
                    f"{what} holds {task} twice ({tasks[task][0].path} and {run.path}); "
                    "point at one results file per task"
                )
            tasks[task] = (run, result)
    first = runs[0]
    subjects = {r.subject_model for r in runs}
    return Side(
        label=first.sae,
        fingerprint=first.fingerprint,
        subject_model=subjects.pop() if len(subjects) == 1 else None,
        paths=tuple(str(r.path) for r in runs),
        tasks={t: res for t, (_, res) in tasks.items()},
    )


def gated_metrics(base: Side, cand: Side, metrics: list[str] | None) -> list[tuple[str, str]]:
    """(task, metric) pairs to gate on; tasks absent on one side are an error."""
    if not metrics:
        missing = sorted(set(base.tasks) ^ set(cand.tasks))
        if missing:
            where = {t: "baseline" if t in base.tasks else "candidate" for t in missing}
            said = ", ".join(f"{t} only in the {w}" for t, w in where.items())
            raise SaeInterpError(
                f"the two sides scored different tasks ({said}); run the same --tasks on both, "
                "or gate on some with --metrics"
            )
        chosen = [(t, result.headline) for t, result in base.tasks.items()]
        for task, metric in chosen:
            for side, what in ((base, "baseline"), (cand, "candidate")):
                if metric not in side.tasks[task].metrics:
                    raise SaeInterpError(
                        f"{task} in the {what} reports no {metric} (its headline); "
                        "re-run it, or gate on other metrics with --metrics"
                    )
        return chosen
    chosen: list[tuple[str, str]] = []
    for spec in metrics:
        task, _, metric = spec.rpartition("/")
        tasks = (
            [task]
            if task
            else [
                t
                for t in set(base.tasks) | set(cand.tasks)
                if metric in _metric_names(base, cand, t)
            ]
        )
        if not tasks:
            headlines = {
                f"{t}/{r.headline}" for side in (base, cand) for t, r in side.tasks.items()
            }
            raise SaeInterpError(
                f"no task on either side reports metric {metric!r}; "
                f"headline metrics: {', '.join(sorted(headlines))}"
            )
        for t in sorted(tasks):
            for side, what in ((base, "baseline"), (cand, "candidate")):
                if t not in side.tasks:
                    raise SaeInterpError(
                        f"{t} is absent from the {what} ({', '.join(side.paths)}); "
                        f"score it on both sides or leave {spec} out of --metrics"
                    )
                if metric not in side.tasks[t].metrics:
                    raise SaeInterpError(
                        f"{t} in the {what} reports no metric {metric!r}; "
                        f"it has {', '.join(sorted(side.tasks[t].metrics))}"
                    )
            chosen.append((t, metric))
    return list(dict.fromkeys(chosen))


def _metric_names(base: Side, cand: Side, task: str) -> set:
    return {m for side in (base, cand) if task in side.tasks for m in side.tasks[task].metrics}


def check_settings(base: Side, cand: Side, tasks) -> None:
    for task in tasks:
        diffs = settings_differences(base.tasks[task].settings, cand.tasks[task].settings)
        if diffs:
            raise SaeInterpError(
                f"{task} was scored under different instrument settings: "
                f"{describe_differences(diffs)}; "
                "re-run the candidate with the baseline's --metadata and --seed"
            )


def pairing(task: str, base: Side, cand: Side) -> tuple[bool, str]:
    """Whether the docs of `task` are the same on both sides, and why (settings already agree). A
    task's report says when docs pair: `pair_on: sae` (the same latents of the same SAE weights),
    or a field each doc logs whose values must agree (e.g. the hash of a chunk's tokens)."""
    if not base.subject_model or not cand.subject_model:
        return False, "unpaired: subject model not recorded (results written before get_model_info)"
    if base.subject_model != cand.subject_model:
        return False, "unpaired: different subject models"
    report = base.tasks[task].report
    doc = report.doc_id
    if report.pair_on != "sae":
        if not _same_field(base.tasks[task], cand.tasks[task]):
            return (
                False,
                f"unpaired: the {doc}s differ in {report.pair_on} (e.g. corpus: sae read each "
                "SAE's own dataset)",
            )
        return True, f"paired by {doc} (same settings, subject model and {report.pair_on})"
    if base.fingerprint and base.fingerprint == cand.fingerprint:
        return True, f"paired by {doc} (same SAE weights)"
    return False, f"unpaired: different SAEs' {doc}s"


def _same_field(b: TaskResult, c: TaskResult) -> bool:
    """False when both sides' samples log the pairing field and a doc of the same id differs in
    it."""
    sb, sc = b.samples, c.samples
    if sb is None or sc is None or sb.pair_values is None or sc.pair_values is None:
        # written before the field was logged: the settings agree, which is what they can say
        return True
    theirs = dict(zip(sc.keys, sc.pair_values, strict=True))
    return all(theirs.get(k, h) == h for k, h in zip(sb.keys, sb.pair_values, strict=True))


def compare_metric(
    task: str,
    metric: str,
    base: Side,
    cand: Side,
    confidence: float,
    max_drop: float,
    resamples: int,
    rng: np.random.Generator,
) -> Comparison:
    b, c = base.tasks[task], cand.tasks[task]
    better = b.metrics[metric].higher_is_better
    if better is None:
        raise SaeInterpError(
            f"{task}/{metric} has no higher_is_better in the results; gate on another metric"
        )
    if b.from_saebench or c.from_saebench:
        return _values_only(task, metric, b, c, bool(better))
    paired, how = pairing(task, base, cand)
    difference = pooled_metric_difference if b.pooled(metric) else mean_metric_difference
    point, lo, hi, n_b, n_c, paired, how = difference(
        task, metric, b, c, paired, how, confidence, resamples, rng
    )
    not_gated = _failed_checks(metric, b, c, confidence)
    # worse by more than max_drop: the whole interval lies beyond -max_drop in the bad direction
    worse = not not_gated and ((hi < -max_drop) if better else (lo > max_drop))
    return Comparison(
        task=task,
        metric=metric,
        baseline=b.metrics[metric].value,
        candidate=c.metrics[metric].value,
        difference=point,
        lo=lo,
        hi=hi,
        higher_is_better=bool(better),
        paired=paired,
        how=how,
        n_baseline=n_b,
        n_candidate=n_c,
        worse=bool(worse),
        not_gated=not_gated,
    )


def _values_only(task: str, metric: str, b: TaskResult, c: TaskResult, better: bool) -> Comparison:
    """A SAEBench file on either side: a difference of values, but nothing to bootstrap a gate
    from."""
    vb, vc = b.metrics[metric].value, c.metrics[metric].value
    return Comparison(
        task=task,
        metric=metric,
        baseline=vb,
        candidate=vc,
        difference=vc - vb,
        lo=math.nan,
        hi=math.nan,
        higher_is_better=better,
        paired=False,
        how="values from SAEBench files",
        n_baseline=0,
        n_candidate=0,
        worse=False,
        not_gated="a SAEBench result file carries no per-doc scores to put an interval on",
    )


def _failed_checks(metric: str, b: TaskResult, c: TaskResult, confidence: float) -> str:
    """Why `metric` is not gated on: the sides whose scorer failed its known-answer check, in
    words; "" when neither did."""
    failed = [
        (what, r)
        for what, r in (("baseline", b), ("candidate", c))
        if r.check_passed(metric) is False
    ]
    return "; ".join(
        f"the {what}'s scorer failed its known-answer check ({r.check_summary(metric, confidence)})"
        for what, r in failed
    )


def compare(
    base_runs: list[Run],
    cand_runs: list[Run],
    metrics: list[str] | None = None,
    confidence: float = 0.95,
    max_drop: float = 0.0,
    resamples: int = N_RESAMPLES,
    seed: int = 0,
) -> RunComparison:
    if not 0 < confidence < 1:
        raise SaeInterpError(f"--confidence must be between 0 and 1, got {confidence}")
    if max_drop < 0:
        raise SaeInterpError(f"--max-drop must be 0 or more, got {max_drop}")
    base, cand = (
        side_from_runs(base_runs, "the baseline"),
        side_from_runs(cand_runs, "the candidate"),
    )
    gated = gated_metrics(base, cand, metrics)
    tasks = list(dict.fromkeys(t for t, _ in gated))
    check_settings(base, cand, tasks)
    for runs in (base_runs, cand_runs):
        for run in runs:
            require_samples(
                run, [t for t in tasks if t in run.tasks and not run.tasks[t].from_saebench]
            )
    rng = np.random.default_rng(seed)
    rows = tuple(
        compare_metric(t, m, base, cand, confidence, max_drop, resamples, rng) for t, m in gated
    )
    return RunComparison(
        baseline=base,
        candidate=cand,
        confidence=confidence,
        max_drop=max_drop,
        resamples=resamples,
        rows=rows,
    )
