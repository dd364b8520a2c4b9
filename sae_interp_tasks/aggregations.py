"""How per-doc values become a task's number: lm-eval calls these with every doc's value.

Each carries its own closed-form standard error (`stderr`), which the import hook makes lm-eval
use instead of its bootstrap (100,000 resamples, a forked process per metric: about a minute per
run at 512 docs for numbers a formula gives at once).
"""

from __future__ import annotations

import math

import numpy as np


def nanmean(values) -> float:
    """The mean over docs that have a value (NaN: a latent left unscored, never counted as 0)."""
    kept = _finite(values)
    return float(kept.mean()) if len(kept) else float("nan")


def _nanmean_stderr(values) -> float:
    kept = _finite(values)
    return float(kept.std(ddof=1) / math.sqrt(len(kept))) if len(kept) > 1 else float("nan")


nanmean.stderr = _nanmean_stderr


def total(values) -> float:
    """For counts (e.g. dead-or-rare latents passed over): their sum over docs; no standard error."""
    return float(sum(values))


def _finite(values) -> np.ndarray:
    arr = np.asarray([v for v in values if v is not None], dtype=float)
    return arr[~np.isnan(arr)]
