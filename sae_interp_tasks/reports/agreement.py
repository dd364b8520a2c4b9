"""Methods side by side: do two scoring methods agree on which latents are good?

For each SAE with at least two latent tasks scored on the same latents (their samples files
read), the Spearman rank correlation of every pair of tasks' per-latent headline scores over the
latents both scored, with a percentile bootstrap interval over latents (resampled with
replacement, the same draws for every pair), as the auto-interpretation literature's first table
does. A pair whose scorer failed its known-answer check on either side is marked: its scores are
not claims about the latents.
"""

from __future__ import annotations

import dataclasses
import io
import math
from dataclasses import dataclass

import numpy as np

from sae_interp_tasks.reports.resampling import percentile_interval
from sae_interp_tasks.reports.results_io import Run, TaskResult

MIN_LATENTS = 5  # fewer latents in common give no correlation worth printing


@dataclass(frozen=True)
class MethodPair:
    sae: str
    a: str  # "<task> <headline>"
    b: str
    n: int  # latents both scored
    rho: float
    low: float
    high: float
    unchecked: bool  # a scorer behind either side failed its known-answer check


def _latent_scores(task: TaskResult) -> dict | None:
    """latent -> headline score, from the task's samples; None where it has none per latent."""
    samples = task.samples
    if samples is None or task.report.doc_id != "latent" or task.headline not in samples.values:
        return None
    values = samples.values[task.headline]
    return {k: float(v) for k, v in zip(samples.keys, values, strict=True) if math.isfinite(v)}


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    from scipy.stats import spearmanr

    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")  # a constant side has no ranking to agree with
    return float(spearmanr(x, y).statistic)


def _pair(run: Run, a: TaskResult, b: TaskResult, sa, sb, confidence, resamples, seed):
    common = sorted(set(sa) & set(sb))
    if len(common) < MIN_LATENTS:
        return None
    x = np.array([sa[k] for k in common])
    y = np.array([sb[k] for k in common])
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(resamples):
        idx = rng.integers(0, len(common), len(common))
        draws.append(spearman(x[idx], y[idx]))
    finite = np.array([d for d in draws if math.isfinite(d)])
    low, high = percentile_interval(finite, confidence) if len(finite) else (math.nan, math.nan)
    failed = a.check_passed(a.headline) is False or b.check_passed(b.headline) is False
    return MethodPair(
        run.shown_as,
        f"{a.task} {a.headline}",
        f"{b.task} {b.headline}",
        len(common),
        spearman(x, y),
        low,
        high,
        failed,
    )


def _by_sae(runs: list[Run]) -> list[tuple[Run, dict]]:
    """Each SAE once (as the leaderboard merges its rows: one identity, the tasks of all its
    files, a later file's task replacing an earlier one's), with its tasks."""
    merged: dict = {}
    for run in sorted(runs, key=lambda r: r.epoch_seconds):
        _, tasks = merged.setdefault(run.identity, (run, {}))
        tasks.update(run.tasks)
    found = list(merged.values())
    labels = [run.shown_as for run, _ in found]
    return [
        (dataclasses.replace(run, sae=f"{run.sae} [{run.fingerprint}]"), tasks)
        if labels.count(run.shown_as) > 1 and run.fingerprint
        else (run, tasks)
        for run, tasks in found
    ]


def method_pairs(
    runs: list[Run], confidence: float = 0.95, resamples: int = 1000, seed: int = 0
) -> list[MethodPair]:
    """Every pair of latent tasks of each SAE that scored at least MIN_LATENTS latents in common."""
    out = []
    for run, tasks in _by_sae(runs):
        scored = {
            name: (task, s)
            for name, task in sorted(tasks.items())
            if (s := _latent_scores(task)) is not None
        }
        names = list(scored)
        for i, first in enumerate(names):
            for second in names[i + 1 :]:
                (a, sa), (b, sb) = scored[first], scored[second]
                found = _pair(run, a, b, sa, sb, confidence, resamples, seed)
                if found is not None:
                    out.append(found)
    return out


def markdown(pairs: list[MethodPair], confidence: float) -> str:
    if not pairs:
        return ""
    lines = [
        "## Methods side by side",
        "",
        f"Spearman rank correlation of two tasks' per-latent scores over the latents both scored, "
        f"[{confidence:.0%} bootstrap interval over latents].",
        "",
        "| SAE | method A | method B | latents | Spearman ρ |",
        "|---|---|---|---:|---|",
    ]
    for p in pairs:
        mark = " †" if p.unchecked else ""
        lines.append(
            f"| {p.sae} | {p.a} | {p.b} | {p.n} | {p.rho:.3f} [{p.low:.3f}, {p.high:.3f}]{mark} |"
        )
    if any(p.unchecked for p in pairs):
        lines += ["", "† a scorer behind one side failed its known-answer check: not a claim."]
    return "\n".join(lines) + "\n"


def heatmap(pairs: list[MethodPair], sae: str) -> bytes:
    """The SAE's methods x methods matrix of ρ as a PNG (matplotlib's Agg canvas)."""
    from matplotlib.figure import Figure

    mine = [p for p in pairs if p.sae == sae]
    methods = sorted({p.a for p in mine} | {p.b for p in mine})
    rho = np.eye(len(methods))
    for p in mine:
        i, j = methods.index(p.a), methods.index(p.b)
        rho[i, j] = rho[j, i] = p.rho
    fig = Figure(figsize=(3.0 + 0.9 * len(methods), 2.4 + 0.7 * len(methods)), layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    image = ax.imshow(rho, vmin=-1.0, vmax=1.0, cmap="RdBu_r")
    labels = [m.replace("sae_", "") for m in methods]
    ax.set_xticks(range(len(methods)), labels, rotation=30, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(len(methods)), labels)
    for i in range(len(methods)):
        for j in range(len(methods)):
            if math.isfinite(rho[i, j]):
                ax.text(j, i, f"{rho[i, j]:.2f}", ha="center", va="center")
    ax.set_title(f"Spearman ρ between methods: {sae}"[:70])
    fig.colorbar(image, ax=ax)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def scatter(runs: list[Run], first: str, second: str) -> bytes:
    """Per-latent scores of two tasks (by task name), one colour per SAE, as a PNG."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 4.5), layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    drawn = 0
    for run, tasks in _by_sae(runs):
        a, b = tasks.get(first), tasks.get(second)
        sa = _latent_scores(a) if a else None
        sb = _latent_scores(b) if b else None
        if not sa or not sb:
            continue
        common = sorted(set(sa) & set(sb))
        ax.scatter([sa[k] for k in common], [sb[k] for k in common], s=14, label=run.shown_as)
        drawn += 1
        ax.set_xlabel(f"{first} {a.headline}")
        ax.set_ylabel(f"{second} {b.headline}")
    if drawn:
        ax.legend(fontsize="small")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue() if drawn else b""
