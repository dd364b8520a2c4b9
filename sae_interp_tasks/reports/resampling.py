"""The percentile bootstrap behind `sae-interp compare` and the leaderboard's pooled intervals.

Bootstrap draw counts and percentile intervals; the difference candidate - baseline of a mean over
docs (per-doc values, NaN left out) or of a pooled metric (recomputed from the docs' statistics with
the expression the task recorded, aggregations.Pooled), paired (one resampling of the matched docs
serves both sides) or unpaired (each side's docs resampled independently); and, per metric of two
task results, which of the two applies and on how many docs.
"""

from __future__ import annotations

import math

import numpy as np

from sae_interp_tasks.aggregations import Pooled
from sae_interp_tasks.errors import SaeInterpError
from sae_interp_tasks.reports.results_io import TaskResult
from sae_interp_tasks.reports.samples_io import DocStats


def resample_weights(rng: np.random.Generator, n: int, resamples: int) -> np.ndarray:
    """[resamples, n] draw counts: each row is a bootstrap sample of n docs drawn with
    replacement."""
    return rng.multinomial(n, np.full(n, 1.0 / n), size=resamples).astype(float)


def percentile_interval(draws: np.ndarray, confidence: float) -> tuple[float, float]:
    draws = draws[np.isfinite(draws)]
    if draws.size == 0:
        return math.nan, math.nan
    tail = (1.0 - confidence) / 2 * 100
    lo, hi = np.percentile(draws, [tail, 100 - tail])
    return float(lo), float(hi)


def mean_difference(
    base: np.ndarray,
    cand: np.ndarray,
    paired: bool,
    confidence: float,
    resamples: int,
    rng: np.random.Generator,
) -> tuple[float, float, float]:
    """(difference of means, lo, hi). Paired: `base[i]` and `cand[i]` are the same doc, NaN-free."""
    if paired:
        diff = cand - base
        draws = resample_weights(rng, diff.size, resamples) @ diff / diff.size
        return (float(diff.mean()), *percentile_interval(draws, confidence))
    draws_b = resample_weights(rng, base.size, resamples) @ base / base.size
    draws_c = resample_weights(rng, cand.size, resamples) @ cand / cand.size
    return (float(cand.mean() - base.mean()), *percentile_interval(draws_c - draws_b, confidence))


def pooled_difference(
    pooled: Pooled,
    base: DocStats,
    cand: DocStats,
    paired: bool,
    confidence: float,
    resamples: int,
    rng: np.random.Generator,
) -> tuple[float, float, float]:
    n_b, n_c = base.n_docs, cand.n_docs
    point = float(
        pooled.resampled(cand.arrays, np.ones((1, n_c)))[0]
        - pooled.resampled(base.arrays, np.ones((1, n_b)))[0]
    )
    w_b = resample_weights(rng, n_b, resamples)
    w_c = w_b if paired else resample_weights(rng, n_c, resamples)
    draws = pooled.resampled(cand.arrays, w_c) - pooled.resampled(base.arrays, w_b)
    return (point, *percentile_interval(draws, confidence))


# --- one metric of two task results ------------------------------------------------------------
def mean_metric_difference(
    task, metric, b: TaskResult, c: TaskResult, paired, how, confidence, resamples, rng
):
    """(point, lo, hi, n_b, n_c, paired, how) of a mean metric: paired on the docs scored on both
    sides, else unpaired on each side's scored docs."""
    vb, vc = b.samples.values[metric], c.samples.values[metric]
    if paired:
        index_c = {k: i for i, k in reversed(list(enumerate(c.samples.keys)))}
        pairs = [(i, index_c[k]) for i, k in enumerate(b.samples.keys) if k in index_c]
        pairs = [(i, j) for i, j in pairs if np.isfinite(vb[i]) and np.isfinite(vc[j])]
        if pairs:
            ib, ic = (np.array(x) for x in zip(*pairs, strict=True))
            point, lo, hi = mean_difference(vb[ib], vc[ic], True, confidence, resamples, rng)
            return point, lo, hi, len(pairs), len(pairs), True, f"{how}, {len(pairs)} matched docs"
        how = "unpaired: no doc scored on both sides"
    fb, fc = vb[np.isfinite(vb)], vc[np.isfinite(vc)]
    if fb.size == 0 or fc.size == 0:
        raise SaeInterpError(
            f"{task}/{metric} has no scored doc in the "
            f"{'baseline' if fb.size == 0 else 'candidate'} samples; check that run's scorer"
        )
    point, lo, hi = mean_difference(fb, fc, False, confidence, resamples, rng)
    return point, lo, hi, fb.size, fc.size, False, f"{how}, {fb.size} vs {fc.size} docs"


def pooled_metric_difference(
    task, metric, b: TaskResult, c: TaskResult, paired, how, confidence, resamples, rng
):
    """(point, lo, hi, n_b, n_c, paired, how) of a pooled metric, recomputed from the samples'
    statistics: paired when both sides scored the same docs, else unpaired."""
    expression = b.report.pooled.get(metric)
    if not expression:
        redo = [f"{task}/{m}" for m, e in b.report.pooled.items() if e]
        raise SaeInterpError(
            f"{task}/{metric} is pooled over docs and the samples lack the statistics to resample "
            f"it; gate on {', '.join(redo) or 'a metric'} or a mean metric"
        )
    sb, sc = b.samples.stats, c.samples.stats
    for stats, s in ((sb, b), (sc, c)):
        if stats is None or not stats.carries(expression):
            raise SaeInterpError(
                f"{s.samples.path} lacks the statistics {task}/{metric} is pooled from (written "
                f"before they were logged); re-run {task} with --log_samples"
            )
    pooled, doc = Pooled(expression), b.report.doc_id
    if paired:
        index_c = {k: i for i, k in enumerate(c.samples.keys)}
        common = [(i, index_c[k]) for i, k in enumerate(b.samples.keys) if k in index_c]
        if len(common) == len(b.samples.keys) == len(c.samples.keys):
            ib, ic = (np.array(x) for x in zip(*common, strict=True))
            point, lo, hi = pooled_difference(
                pooled, sb.take(ib), sc.take(ic), True, confidence, resamples, rng
            )
            return point, lo, hi, len(common), len(common), True, f"{how}, {len(common)} {doc}s"
        how = f"unpaired: the two runs scored different {doc}s"
    point, lo, hi = pooled_difference(pooled, sb, sc, False, confidence, resamples, rng)
    n_b, n_c = sb.n_docs, sc.n_docs
    return point, lo, hi, n_b, n_c, False, f"{how}, {n_b} vs {n_c} {doc}s"
