"""Per-latent metrics of the yes/no scorers (sae_interp_tasks.scorers.metrics).

The arithmetic is scikit-learn's; what is ours is which windows count: a window whose batch
could not be parsed (prediction None) is left out of every metric, so a latent whose batches
all failed scores NaN, never 0 and never 1.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn import metrics as skm

from sae_interp_tasks.records import WindowJudgement
from sae_interp_tasks.scorers import metrics

# 12 windows: 6 activating (deciles 1..6), 6 not; a scorer that is right 9 times in 12
LABELS = [True, True, True, True, True, True, False, False, False, False, False, False]
PREDS = [True, True, True, False, True, False, False, True, False, False, False, False]
PROBS = [0.9, 0.8, 0.7, 0.3, 0.6, 0.45, 0.2, 0.65, 0.1, 0.4, 0.05, 0.3]
DECILES = [1, 2, 3, 4, 5, 6, 0, 0, 0, 0, 0, 0]


def judgements(labels=LABELS, preds=PREDS, probs=PROBS, deciles=DECILES) -> list[WindowJudgement]:
    return [
        WindowJudgement(label=lab, prediction=p, probability=q, decile=d)
        for lab, p, q, d in zip(labels, preds, probs, deciles, strict=True)
    ]


def failed(js: list[WindowJudgement], indices) -> list[WindowJudgement]:
    """The same windows with the given ones' batch unparseable (no prediction, no probability)."""
    return [
        WindowJudgement(j.label, None, None, j.decile) if i in indices else j
        for i, j in enumerate(js)
    ]


def test_each_metric_agrees_with_scikit_learn():
    js = judgements()
    assert metrics.balanced_accuracy(js) == pytest.approx(
        skm.balanced_accuracy_score(LABELS, PREDS)
    )
    assert metrics.precision(js) == pytest.approx(skm.precision_score(LABELS, PREDS))
    assert metrics.recall(js) == pytest.approx(skm.recall_score(LABELS, PREDS))
    assert metrics.f1(js) == pytest.approx(skm.f1_score(LABELS, PREDS))
    assert metrics.judgement_auroc(js) == pytest.approx(skm.roc_auc_score(LABELS, PROBS))
    assert metrics.auroc(LABELS, PROBS) == pytest.approx(skm.roc_auc_score(LABELS, PROBS))
    # and the hand-computed values, so a wrong argument order to sklearn cannot agree with itself
    assert metrics.recall(js) == pytest.approx(4 / 6)
    assert metrics.precision(js) == pytest.approx(4 / 5)
    assert metrics.balanced_accuracy(js) == pytest.approx((4 / 6 + 5 / 6) / 2)


def test_perfect_and_inverted_scorers():
    perfect = judgements(preds=LABELS, probs=[float(x) for x in LABELS])
    assert metrics.balanced_accuracy(perfect) == 1.0
    assert metrics.f1(perfect) == 1.0
    assert metrics.judgement_auroc(perfect) == 1.0
    inverted = judgements(preds=[not x for x in LABELS], probs=[float(not x) for x in LABELS])
    assert metrics.balanced_accuracy(inverted) == 0.0
    assert metrics.judgement_auroc(inverted) == 0.0


def test_unanswered_windows_are_left_out_not_scored_as_no():
    js = judgements()
    broken = failed(js, {3, 5})  # the two activating windows the scorer got wrong
    answered = [j for i, j in enumerate(js) if i not in {3, 5}]
    assert metrics.recall(broken) == 1.0  # not 4/6: the failed windows are not misses
    for fn in (
        metrics.balanced_accuracy,
        metrics.precision,
        metrics.recall,
        metrics.f1,
        metrics.judgement_auroc,
    ):
        assert fn(broken) == pytest.approx(fn(answered)), fn.__name__
    assert metrics.classification_metrics(broken)["answered_frac"] == pytest.approx(10 / 12)


def test_a_latent_whose_batches_all_failed_is_nan_not_zero():
    values = metrics.classification_metrics(failed(judgements(), set(range(len(LABELS)))))
    assert values["answered_frac"] == 0.0
    for name, value in values.items():
        if name != "answered_frac":
            assert math.isnan(value), (name, value)


def test_one_class_only_gives_nan_where_the_metric_is_undefined():
    only_activating = judgements(
        labels=[True] * 4,
        preds=[True, False, True, True],
        probs=[0.9, 0.2, 0.8, 0.7],
        deciles=[1, 2, 3, 4],
    )
    assert math.isnan(metrics.balanced_accuracy(only_activating))
    assert math.isnan(metrics.judgement_auroc(only_activating))
    assert metrics.recall(only_activating) == 0.75  # recall needs only the activating windows
    only_quiet = judgements(
        labels=[False] * 3, preds=[False, True, False], probs=[0.1, 0.6, 0.2], deciles=[0] * 3
    )
    assert math.isnan(metrics.recall(only_quiet))


def test_auroc_skips_missing_and_nan_scores():
    labels = [True, False, True, False, True]
    scores = [0.9, 0.1, None, float("nan"), 0.2]
    assert metrics.auroc(labels, scores) == pytest.approx(
        skm.roc_auc_score([True, False, True], [0.9, 0.1, 0.2])
    )
    assert math.isnan(metrics.auroc(labels, [None] * 5))


def test_recall_by_decile():
    # decile 1: 2 of 2 found; decile 2: 1 of 2; decile 3: 0 of 1; decile 4: one window, unanswered;
    # others empty
    js = [
        WindowJudgement(True, True, decile=1),
        WindowJudgement(True, True, decile=1),
        WindowJudgement(True, True, decile=2),
        WindowJudgement(True, False, decile=2),
        WindowJudgement(True, False, decile=3),
        WindowJudgement(True, None, decile=4),
        WindowJudgement(False, True, decile=0),
    ]
    got = metrics.recall_by_decile(js, n_deciles=5)
    assert list(got) == [1, 2, 3, 4, 5]
    assert got[1] == 1.0 and got[2] == 0.5 and got[3] == 0.0
    assert math.isnan(got[4]) and math.isnan(got[5])


def test_classification_metrics_keys_and_values():
    js = judgements()
    values = metrics.classification_metrics(js)
    assert set(values) == (
        {"balanced_acc", "precision", "recall", "f1", "auroc", "answered_frac"}
        | {f"recall_decile{d}" for d in range(1, 11)}
    )
    assert values["balanced_acc"] == metrics.balanced_accuracy(js)
    assert values["auroc"] == metrics.judgement_auroc(js)
    assert values["answered_frac"] == 1.0
    assert values["recall_decile1"] == 1.0 and values["recall_decile4"] == 0.0
    assert all(math.isnan(values[f"recall_decile{d}"]) for d in range(7, 11))  # no windows there
    assert set(metrics.classification_metrics(js, n_deciles=3)) >= {"recall_decile3"}
    assert "recall_decile4" not in metrics.classification_metrics(js, n_deciles=3)


def test_without_probabilities_auroc_is_nan_but_the_rest_is_scored():
    values = metrics.classification_metrics(judgements(probs=[None] * len(LABELS)))
    assert math.isnan(values["auroc"])
    assert values["balanced_acc"] == pytest.approx(float(np.mean([4 / 6, 5 / 6])))


def test_the_shared_statistics_equal_the_libraries():
    """stats.py is the one home of z, mean with standard error, and balanced accuracy: the same
    numbers scipy and scikit-learn give."""
    from scipy import stats as sps
    from sklearn.metrics import balanced_accuracy_score

    from sae_interp_tasks import stats

    assert stats.z_for(0.95) == pytest.approx(sps.norm.ppf(0.975), rel=1e-12)
    assert stats.z_for(0.8) == pytest.approx(sps.norm.ppf(0.9), rel=1e-12)
    rng = np.random.default_rng(0)
    values = rng.normal(size=50).tolist() + [float("nan"), None]
    mean, err, n = stats.mean_and_stderr(values)
    finite = np.array(values[:50])
    assert n == 50 and mean == pytest.approx(finite.mean(), rel=1e-12)
    assert err == pytest.approx(sps.sem(finite), rel=1e-12)
    labels = rng.random(200) < 0.3
    predictions = rng.random(200) < 0.5
    assert stats.balanced_accuracy(labels, predictions) == balanced_accuracy_score(
        labels, predictions
    )
    assert math.isnan(stats.balanced_accuracy([True, True], [True, False]))
    with pytest.raises(ValueError):
        stats.z_for(1.0)
