"""The statistics every part of the package uses, one function each: the z of a two-sided
confidence level, a mean with its standard error, and a binary classifier's class rates and
balanced accuracy. Tasks, scorer checks, reports and benchmarks all call these, so an interval means
the same thing wherever it is printed. Imports numpy only (the reports load it without torch)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist

import numpy as np

NAN = float("nan")


def z_for(confidence: float) -> float:
    """The two-sided normal quantile of a confidence level (0.95 -> 1.95996...)."""
    if not 0 < confidence < 1:
        raise ValueError(f"a confidence level lies between 0 and 1, got {confidence}")
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def finite(values) -> np.ndarray:
    """The values that are numbers (None and NaN left out: a latent left unscored, never a 0)."""
    arr = np.asarray([v for v in values if v is not None], dtype=float)
    return arr[~np.isnan(arr)]


def mean(values) -> float:
    kept = finite(values)
    return float(kept.mean()) if len(kept) else NAN


def stderr_of_mean(values) -> float:
    """Sample standard deviation (ddof 1) over the values that are numbers, over sqrt(n); NaN below
    two values."""
    kept = finite(values)
    return float(kept.std(ddof=1) / math.sqrt(len(kept))) if len(kept) > 1 else NAN


def mean_and_stderr(values) -> tuple[float, float, int]:
    """(mean, its standard error, how many values are numbers)."""
    return mean(values), stderr_of_mean(values), len(finite(values))


def class_rates(labels: Sequence[bool], predictions: Sequence[bool]) -> tuple:
    """((true-positive rate, positives), (true-negative rate, negatives)); a rate is NaN where its
    class is empty."""
    rates = []
    for cls in (True, False):
        hits = [bool(p) == cls for lab, p in zip(labels, predictions, strict=True) if lab == cls]
        rates.append((sum(hits) / len(hits) if hits else NAN, len(hits)))
    return tuple(rates)


def balanced_accuracy(labels: Sequence[bool], predictions: Sequence[bool]) -> float:
    """The mean of the two class rates; NaN unless both classes occur."""
    (tpr, n1), (tnr, n0) = class_rates(labels, predictions)
    return (tpr + tnr) / 2 if n1 and n0 else NAN


def balanced_accuracy_stderr(labels: Sequence[bool], predictions: Sequence[bool]) -> float:
    """The standard error of the mean of the two class rates, each binomial (a rate's variance
    floored at that of p = 1/2 over its class, so a perfect score still gets an interval)."""
    (tpr, n1), (tnr, n0) = class_rates(labels, predictions)
    if not n1 or not n0:
        return NAN
    return 0.5 * math.sqrt(
        max(tpr * (1 - tpr), 0.25 / n1) / n1 + max(tnr * (1 - tnr), 0.25 / n0) / n0
    )
