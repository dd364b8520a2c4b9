"""One function per metric, on plain label/prediction arrays (scikit-learn does the arithmetic)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from sklearn import metrics as skm

from sae_interp_tasks import stats
from sae_interp_tasks.records import WindowJudgement

NAN = float("nan")


def _answered(judgements: Sequence[WindowJudgement]) -> list[WindowJudgement]:
    return [j for j in judgements if j.prediction is not None]


def balanced_accuracy(judgements: Sequence[WindowJudgement]) -> float:
    done = _answered(judgements)
    labels = [j.label for j in done]
    return stats.balanced_accuracy(labels, [j.prediction for j in done])


def precision(judgements: Sequence[WindowJudgement]) -> float:
    done = _answered(judgements)
    if not done:
        return NAN
    return float(
        skm.precision_score([j.label for j in done], [j.prediction for j in done], zero_division=0)
    )


def recall(judgements: Sequence[WindowJudgement]) -> float:
    done = [j for j in _answered(judgements) if j.label]
    if not done:
        return NAN
    return float(np.mean([j.prediction for j in done]))


def f1(judgements: Sequence[WindowJudgement]) -> float:
    done = _answered(judgements)
    if not done:
        return NAN
    return float(
        skm.f1_score([j.label for j in done], [j.prediction for j in done], zero_division=0)
    )


def auroc(labels: Sequence[bool], scores: Sequence[float | None]) -> float:
    pairs = [
        (lab, s)
        for lab, s in zip(labels, scores, strict=True)
        if s is not None and not math.isnan(s)
    ]
    if len({lab for lab, _ in pairs}) < 2:
        return NAN
    return float(skm.roc_auc_score([lab for lab, _ in pairs], [s for _, s in pairs]))


def judgement_auroc(judgements: Sequence[WindowJudgement]) -> float:
    return auroc([j.label for j in judgements], [j.probability for j in judgements])


def recall_by_decile(
    judgements: Sequence[WindowJudgement], n_deciles: int = 10
) -> dict[int, float]:
    return {d: recall([j for j in judgements if j.decile == d]) for d in range(1, n_deciles + 1)}


def classification_metrics(
    judgements: Sequence[WindowJudgement], n_deciles: int = 10
) -> dict[str, float]:
    """All per-latent metrics of a yes/no scorer (detection, fuzzing)."""
    out = {
        "balanced_acc": balanced_accuracy(judgements),
        "precision": precision(judgements),
        "recall": recall(judgements),
        "f1": f1(judgements),
        "auroc": judgement_auroc(judgements),
        "answered_frac": len(_answered(judgements)) / max(len(judgements), 1),
    }
    for d, value in recall_by_decile(judgements, n_deciles).items():
        out[f"recall_decile{d}"] = value
    return out
