"""`sae-interp compare`'s statistics against scipy's bootstrap and exact forms, on in-memory
numbers.

No lm_eval here (tests/test_leaderboard.py runs it): the intervals of a mean difference, paired
and unpaired, agree with `scipy.stats.bootstrap` (percentile method) within Monte-Carlo error;
the pooled ratios recomputed from chunk statistics equal sae_core's own aggregations exactly;
NaN per-doc scores are left out; the verdict follows each metric's direction and --max-drop.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from sae_interp_tasks.reports import compare, compare_text, resampling
from sae_interp_tasks.reports.results_io import Metric, Run, TaskResult
from sae_interp_tasks.reports.samples_io import DocScores, _doc_stats
from sae_interp_tasks.reports.spec import ReportSpec

RESAMPLES = 20_000


def scipy_interval(data: tuple, statistic, paired: bool, seed: int = 1) -> tuple[float, float]:
    res = stats.bootstrap(
        data,
        statistic,
        paired=paired,
        vectorized=True,
        n_resamples=RESAMPLES,
        method="percentile",
        confidence_level=0.95,
        random_state=np.random.default_rng(seed),
    )
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def close_intervals(mine: tuple, theirs: tuple) -> bool:
    """Endpoints within 5% of the interval's width (Monte-Carlo error at 20k resamples is ~1-2%)."""
    width = theirs[1] - theirs[0]
    return abs(mine[0] - theirs[0]) < 0.05 * width and abs(mine[1] - theirs[1]) < 0.05 * width


def test_unpaired_mean_difference_matches_scipy():
    rng = np.random.default_rng(0)
    base, cand = rng.beta(5, 4, size=40), rng.beta(4, 4, size=55)
    point, lo, hi = resampling.mean_difference(
        base, cand, False, 0.95, RESAMPLES, np.random.default_rng(2)
    )
    assert point == pytest.approx(cand.mean() - base.mean())
    theirs = scipy_interval(
        (cand, base), lambda c, b, axis: c.mean(axis=axis) - b.mean(axis=axis), paired=False
    )
    assert close_intervals((lo, hi), theirs), ((lo, hi), theirs)
    # and the normal closed form, which the percentile bootstrap approaches at this n
    se = np.sqrt(cand.var(ddof=1) / cand.size + base.var(ddof=1) / base.size)
    assert (hi - lo) / (2 * 1.96 * se) == pytest.approx(1.0, abs=0.1)


def test_paired_mean_difference_matches_scipy():
    rng = np.random.default_rng(1)
    base = rng.normal(0.7, 0.1, size=30)
    # small, consistent drop: only pairing sees it
    cand = base - 0.02 + rng.normal(0, 0.01, size=30)
    point, lo, hi = resampling.mean_difference(
        base, cand, True, 0.95, RESAMPLES, np.random.default_rng(2)
    )
    theirs = scipy_interval((base, cand), lambda b, c, axis: (c - b).mean(axis=axis), paired=True)
    assert close_intervals((lo, hi), theirs), ((lo, hi), theirs)
    assert hi < 0
    _, lo_u, hi_u = resampling.mean_difference(
        base, cand, False, 0.95, RESAMPLES, np.random.default_rng(2)
    )
    assert lo_u < 0 < hi_u  # unpaired, the same drop is lost in the spread between docs


def random_core_stats(n: int, seed: int, spliced_shift: float = 0.0):
    from sae_interp_tasks.stages.core import CoreStats

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        tokens = int(rng.integers(200, 256))
        x_sum = rng.normal(0.5, 1.0, size=8) * tokens
        out.append(
            CoreStats(
                n_tokens=tokens,
                l0_sum=float(rng.uniform(5, 20) * tokens),
                sq_err_sum=float(rng.uniform(0.5, 1.5) * tokens),
                x_sum=x_sum,
                x_sq_sum=float(rng.uniform(9, 11) * tokens),
                firing=np.zeros(4, np.int64),
                ce_clean=float(rng.uniform(2, 3)),
                ce_spliced=float(rng.uniform(3, 3.5) + spliced_shift),
                ce_zero=float(rng.uniform(9, 11)),
            )
        )
    return out


def chunks_of(stats_list):
    """Through the samples file's JSON, as `sae-interp` reads it."""
    from sae_interp_tasks.records import Response
    from sae_interp_tasks.registry import lookup

    rows = [
        json.loads(str(Response(chunk=i, stats=s, metrics={}))) for i, s in enumerate(stats_list)
    ]
    return _doc_stats([r["stats"] for r in rows], lookup("core").report).arrays


def ratio(metric: str, stats: dict, weights) -> np.ndarray:
    from sae_interp_tasks.stages import core_metrics

    return getattr(core_metrics, metric).resampled(stats, weights)


def test_pooled_metrics_resample_from_the_statistics_the_samples_log():
    """The task's aggregation (on its CoreStats) and the reports' recomputation (on the JSON the
    samples log) are one expression; a resample's weights count how often each chunk is drawn."""
    from sae_interp_tasks.stages import core_metrics

    stats_list = random_core_stats(12, seed=3)
    chunks = chunks_of(stats_list)
    ones = np.ones((1, 12))
    assert ratio("explained_variance", chunks, ones)[0] == pytest.approx(
        core_metrics.explained_variance(stats_list), rel=1e-12
    )
    assert ratio("ce_loss_recovered", chunks, ones)[0] == pytest.approx(
        core_metrics.ce_loss_recovered(stats_list), rel=1e-12
    )
    # by hand: explained variance about the pooled mean, and the ratio of summed losses
    n = sum(s.n_tokens for s in stats_list)
    x_sum = sum(s.x_sum for s in stats_list)
    total = sum(s.x_sq_sum for s in stats_list) - float(x_sum @ x_sum) / n
    assert core_metrics.explained_variance(stats_list) == pytest.approx(
        1 - sum(s.sq_err_sum for s in stats_list) / total, rel=1e-12
    )
    clean, spliced, zero = (
        np.mean([getattr(s, k) for s in stats_list]) for k in ("ce_clean", "ce_spliced", "ce_zero")
    )
    assert core_metrics.ce_loss_recovered(stats_list) == pytest.approx(
        (zero - spliced) / (zero - clean), rel=1e-12
    )
    # a resample that draws chunk 0 twice and leaves chunk 1 out is the aggregation of that list
    weights = ones.copy()
    weights[0, 0], weights[0, 1] = 2, 0
    drawn = [stats_list[0], stats_list[0], *stats_list[2:]]
    assert ratio("explained_variance", chunks, weights)[0] == pytest.approx(
        core_metrics.explained_variance(drawn), rel=1e-12
    )


def test_samples_written_before_a_statistic_existed_still_resample_what_they_carry():
    """sae_core samples from before SAEBench's sums were logged: explained variance and CE loss
    recovered still get their bootstrap; a metric that reads a missing sum does not, and says so."""
    from sae_interp_tasks.records import Response
    from sae_interp_tasks.registry import lookup
    from sae_interp_tasks.stages.core import EXTRA_SUMS

    report = lookup("core").report
    rows = [
        json.loads(str(Response(chunk=i, stats=s, metrics={})))
        for i, s in enumerate(random_core_stats(6, 4))
    ]
    old = [{k: v for k, v in r["stats"].items() if k not in EXTRA_SUMS} for r in rows]
    stats = _doc_stats(old, report)
    assert stats is not None and stats.n_docs == 6
    assert stats.carries(report.pooled["explained_variance"]) and stats.carries(
        report.pooled["ce_loss_recovered"]
    )
    assert not stats.carries(report.pooled["cossim"]) and "cos_sum" not in stats.arrays
    # a repr string: nothing to resample
    assert _doc_stats(["CoreStats(n_tokens=1, ...)"] * 3, report) is None


def test_paired_ratio_difference_matches_scipy():
    from sae_interp_tasks.stages import core_metrics

    base_list = random_core_stats(16, seed=4)
    cand_list = [s.__class__(**{**s.__dict__, "ce_spliced": s.ce_spliced + 0.3}) for s in base_list]
    base, cand = chunks_of(base_list), chunks_of(cand_list)
    from sae_interp_tasks.reports.samples_io import DocStats

    point, lo, hi = resampling.pooled_difference(
        core_metrics.ce_loss_recovered,
        DocStats(base),
        DocStats(cand),
        True,
        0.95,
        RESAMPLES,
        np.random.default_rng(5),
    )
    assert point == pytest.approx(
        core_metrics.ce_loss_recovered(cand_list) - core_metrics.ce_loss_recovered(base_list)
    )

    def statistic(index, axis):
        index = index.astype(int)  # [resamples, n] drawn chunk ids
        weights = np.stack([np.bincount(row, minlength=16) for row in np.atleast_2d(index)]).astype(
            float
        )
        diff = ratio("ce_loss_recovered", cand, weights) - ratio("ce_loss_recovered", base, weights)
        return diff if index.ndim > 1 else diff[0]

    theirs = scipy_interval((np.arange(16.0),), statistic, paired=True)
    assert close_intervals((lo, hi), theirs), ((lo, hi), theirs)
    assert hi < 0


# --- compare_metric on in-memory runs ------------------------------------------------------------
def task_result(
    task: str, values: dict[str, list], keys: list, better: dict[str, bool]
) -> TaskResult:
    arrays = {m: np.array(v, dtype=float) for m, v in values.items()}
    metrics = {m: Metric(m, float(np.nanmean(a)), 0.01, better[m]) for m, a in arrays.items()}
    return TaskResult(
        task=task,
        version="1.0",
        metrics=metrics,
        settings={"n_tokens": 1, "fewshot_seed": 1234},
        n_docs=len(keys),
        samples=DocScores(path=Path("x"), keys=tuple(keys), values=arrays, unfilled=0),
        report=ReportSpec(headline=next(iter(values))),
    )


def run_of(result: TaskResult, fingerprint: str, sae: str = "s") -> Run:
    return Run(
        path=Path(f"{sae}.json"),
        date="",
        sae=sae,
        fingerprint=fingerprint,
        d_sae=4,
        d_in=2,
        architecture="standard",
        hook_name="h",
        subject_model="m",
        control=None,
        seed=1234,
        tasks={result.task: result},
    )


def test_nan_docs_are_left_out_not_zero():
    base = task_result(
        "sae_detection",
        {"balanced_acc": [0.8, np.nan, 0.6, 0.7]},
        [3, 5, 7, 9],
        {"balanced_acc": True},
    )
    cand = task_result(
        "sae_detection",
        {"balanced_acc": [0.8, 0.9, np.nan, 0.7]},
        [3, 5, 7, 9],
        {"balanced_acc": True},
    )
    paired = compare.compare([run_of(base, "f")], [run_of(cand, "f")], resamples=1000)
    (row,) = paired.rows
    assert row.paired and row.n_baseline == 2  # docs 3 and 9: the only ones scored on both sides
    assert row.difference == pytest.approx(0.0)
    unpaired = compare.compare([run_of(base, "f")], [run_of(cand, "g", sae="t")], resamples=1000)
    (row,) = unpaired.rows
    assert not row.paired and (row.n_baseline, row.n_candidate) == (3, 3)
    assert row.difference == pytest.approx(np.mean([0.8, 0.9, 0.7]) - np.mean([0.8, 0.6, 0.7]))


def test_paired_by_latent_id_not_by_position():
    base = task_result("sae_embedding", {"auroc": [0.9, 0.5, 0.7]}, [10, 20, 30], {"auroc": True})
    cand = task_result("sae_embedding", {"auroc": [0.7, 0.9, 0.5]}, [30, 10, 20], {"auroc": True})
    (row,) = compare.compare([run_of(base, "f")], [run_of(cand, "f")], resamples=1000).rows
    assert row.paired and (row.difference, row.lo, row.hi) == (0.0, 0.0, 0.0)


@pytest.mark.parametrize(
    "better, shift, max_drop, worse",
    [
        (True, -0.1, 0.0, True),  # higher is better and it fell
        (True, +0.1, 0.0, False),
        (False, +0.1, 0.0, True),  # lower is better and it rose
        (False, -0.1, 0.0, False),
        (True, -0.1, 0.2, False),  # within the allowed drop
    ],
)
def test_verdict_follows_direction_and_max_drop(better, shift, max_drop, worse):
    rng = np.random.default_rng(6)
    values = list(rng.normal(0.5, 0.01, size=20))
    base = task_result(
        "sae_fuzzing", {"balanced_acc": values}, list(range(20)), {"balanced_acc": better}
    )
    cand = task_result(
        "sae_fuzzing",
        {"balanced_acc": [v + shift for v in values]},
        list(range(20)),
        {"balanced_acc": better},
    )
    report = compare.compare(
        [run_of(base, "f")], [run_of(cand, "f")], max_drop=max_drop, resamples=1000
    )
    assert report.rows[0].worse is worse
    assert report.exit_code == (1 if worse else 0)
    assert compare_text.verdict_line(report).startswith("FAIL" if worse else "PASS")
