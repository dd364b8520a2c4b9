"""sae_logitlens: each latent read through the unembedding (docs/methods.md, "Logit lens").

Per latent: the tokens its decoder direction promotes and suppresses most, the skewness and
kurtosis of its logit-lens weights over the vocabulary and the class they imply, the enrichment of
token sets at the top of it, and the headline: the AUROC of the lens's weight for the token that
follows each position, activating positions against non-activating ones, from the run's held-out
windows; `auroc_shuffled` (another latent's lens on the same positions) is its chance level. No
LLM and no explanation: the run's pass, selection and splits only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.stats import kurtosis, skew
from sklearn.metrics import roc_auc_score

from sae_interp_tasks.aggregations import nanmean
from sae_interp_tasks.harness import run_stages
from sae_interp_tasks.harness.run_stages import LatentRun, LatentSettings
from sae_interp_tasks.harness.serve import serve_latents
from sae_interp_tasks.harness.task import LatentTask
from sae_interp_tasks.records import Example, ScoredLatent
from sae_interp_tasks.registry import ReportSpec, task_kind
from sae_interp_tasks.stages.controls import shuffled_donors
from sae_interp_tasks.stages.lens import (
    LENS_CLASSES,
    TOKEN_SETS,
    LensConfig,
    enrichment,
    shape_class,
    top_tokens,
)


@dataclass(frozen=True)
class LogitLensSettings(LatentSettings):
    lens: LensConfig = field(default_factory=LensConfig)


def next_token_positions(windows: list[Example], activating: bool) -> tuple[list[int], int]:
    """(the tokens that follow the scored positions, how many): in an activating window the
    positions where the latent fires, in a non-activating one every position; the last position of
    a window has no next token in it."""
    following = []
    for ex in windows:
        tokens, acts = ex.tokens, ex.acts
        for t in range(len(tokens) - 1):
            if not activating or acts[t] > 0:
                following.append(int(tokens[t + 1]))
    return following, len(following)


def lens_auroc(weights: np.ndarray, positive: list[int], negative: list[int]) -> float:
    if not positive or not negative:
        return float("nan")
    y = np.r_[np.ones(len(positive)), np.zeros(len(negative))]
    return float(roc_auc_score(y, np.r_[weights[positive], weights[negative]]))


def score_logitlens(run: LatentRun) -> dict[int, ScoredLatent]:
    s: LogitLensSettings = run.settings
    lens = run_stages.weight_lens(run.context)
    latents = list(run.latents)
    if not latents:
        return {}
    weights = lens.logits(latents).numpy()
    row = {lat: i for i, lat in enumerate(latents)}
    sets = lens.token_sets()
    donors = shuffled_donors(latents, run.seed)
    k = s.lens.lens_top_k
    out = {}
    for lat in run.owned:
        w = weights[row[lat]]
        split = run.splits[lat]
        pos, _ = next_token_positions(split.test_activating, True)
        neg, _ = next_token_positions(split.test_non_activating, False)
        sk, ku = float(skew(w)), float(kurtosis(w))
        cls = shape_class(sk, ku, s.lens.lens_kurtosis_min)
        enriched = enrichment(w, sets)
        donor = donors.get(lat)
        shuffled = lens_auroc(weights[row[donor]], pos, neg) if donor is not None else np.nan
        metrics = {
            "auroc": lens_auroc(w, pos, neg),
            "auroc_shuffled": float(shuffled),
            "skewness": sk,
            "kurtosis": ku,
            **{f"frac_{c}": float(cls == c) for c in LENS_CLASSES},
            **{f"enrichment_{name}": v for name, v in enriched.items()},
        }
        text = lens.token_text
        detail = {
            "promoted": [[text(t), round(float(w[t]), 4)] for t in top_tokens(w, k)],
            "suppressed": [[text(t), round(float(w[t]), 4)] for t in top_tokens(w, k, False)],
            "lens_class": cls,
            "positions": {"activating": len(pos), "non_activating": len(neg)},
        }
        out[lat] = ScoredLatent(lat, "", [], metrics=metrics, detail=detail)
    return out


@task_kind(
    "logitlens",
    settings=LogitLensSettings,
    serve=serve_latents,
    scorer=score_logitlens,
    explained=False,
    report=ReportSpec(headline="auroc", position=60),
)
class SAELogitLensTask(LatentTask):
    """How well a latent's logit lens predicts the token that follows where it fires."""

    METRICS = {
        "auroc": (nanmean, True),
        "auroc_shuffled": (nanmean, False),
        "skewness": (nanmean, True),
        "kurtosis": (nanmean, True),
        **{f"frac_{c}": (nanmean, True) for c in LENS_CLASSES},
        **{f"enrichment_{name}": (nanmean, True) for name in TOKEN_SETS},
    }

    @classmethod
    def response_detail(cls, scored, run) -> dict:
        return dict(scored.detail)
