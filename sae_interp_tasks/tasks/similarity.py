"""sae_similarity: the SAE's dictionary against a reference SAE's, or against itself
(docs/methods.md, "Similarity").

One doc = one latent (the same slots as every latent task under the same seed). Per latent: the
max cosine of its decoder row to the reference's rows (`mcs`) and of its encoder row
(`mcs_encoder`), the cosine to its one-to-one partner (`matched_cos`, `matched` above
`match_threshold`), the correlation of the two latents' activations over the same tokens (same
hook only), and `mcs_random`, its max cosine to a random dictionary of the reference's shape: the
chance level. Per SAE (`dict_*`, the same in every doc, over every latent of the dictionary): the
mean max cosine, the fractions above 0.7 and 0.9, the matched fraction, with their chance levels.
Without a reference each latent is compared with the other latents of its own SAE, which is
SAEBench's `max_decoder_cosine_sim` (and `average_max_decoder_cosine_sim` as `dict_mean_mcs`). No
LLM and no explanations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from sae_interp_tasks.aggregations import Shared, nanmean
from sae_interp_tasks.harness import run_stages
from sae_interp_tasks.harness.run_stages import LatentRun, LatentSettings
from sae_interp_tasks.harness.serve import serve_latents
from sae_interp_tasks.harness.task import LatentTask
from sae_interp_tasks.records import ScoredLatent
from sae_interp_tasks.registry import ReportSpec, task_kind
from sae_interp_tasks.stages.similarity import (
    MCS_LEVELS,
    SimilarityConfig,
    activation_correlations,
    compare,
)

LEVELS = [f"{int(level * 10):02d}" for level in MCS_LEVELS]
DICT_METRICS = (
    "dict_mean_mcs",
    "dict_mean_mcs_encoder",
    "dict_mean_mcs_random",
    "dict_matched_frac",
    *(f"dict_frac_mcs_{lv}" for lv in LEVELS),
    *(f"dict_frac_mcs_{lv}_random" for lv in LEVELS),
)


@dataclass(frozen=True)
class SimilaritySettings(LatentSettings):
    similarity: SimilarityConfig = field(default_factory=SimilarityConfig)


def _dictionary(sae):
    return sae.W_dec.detach(), sae.W_enc.detach().T


def comparison(run: LatentRun):
    """The whole dictionary's comparison, once per run and settings."""
    ctx, cfg = run.context, run.settings.similarity

    def build():
        dec_a, enc_a = _dictionary(ctx.sae)
        if cfg.reference is None:
            return compare(dec_a, enc_a, None, None, cfg, seed=run.seed), None
        ref, info = run_stages.reference(ctx, cfg)
        dec_b, enc_b = _dictionary(ref)
        return compare(dec_a, enc_a, dec_b, enc_b, cfg, seed=run.seed), (ref, info)

    return ctx.store.compute_once(("similarity", cfg, run.seed), build)


def _shared(values: dict, n: int) -> dict:
    """Each dictionary-wide number as aggregations.Shared reads it. It is taken over every latent
    of the dictionary, so a mean has no sampling error (0); a fraction carries the binomial
    standard error over the n latents, the spread a dictionary of that width would show."""
    out = {}
    for name, v in values.items():
        frac = "frac" in name
        se = math.sqrt(max(v * (1 - v), 0.0) / n) if frac else 0.0
        out[name] = {"value": v, "stderr": se}
    return out


def score_similarity(run: LatentRun) -> dict[int, ScoredLatent]:
    ctx, cfg = run.context, run.settings.similarity
    cmp, ref = comparison(run)
    width = len(cmp.mcs)
    shared = _shared(cmp.summary(cfg.match_threshold), width)
    correlations = {}
    if ref is not None and ref[1].hook_name == ctx.info.hook_name:
        pairs = [(lat, int(cmp.partner[lat])) for lat in run.owned if cmp.partner[lat] >= 0]
        correlations = activation_correlations(
            run_stages.contexts(ctx, run.settings, run.seed),
            ctx.read_activations,
            ctx.sae,
            ref[0],
            pairs,
            cfg.correlation_tokens,
            ctx.batch_size_per_gpu,
        )
    out = {}
    for lat in run.owned:
        partner = int(cmp.partner[lat])
        matched_cos = float(cmp.partner_cos[lat])
        metrics = {
            "mcs": float(cmp.mcs[lat]),
            "mcs_encoder": float(cmp.mcs_encoder[lat]),
            "mcs_random": float(cmp.mcs_random[lat]),
            "matched_cos": matched_cos,
            "matched": float(partner >= 0 and matched_cos > cfg.match_threshold)
            if ref is not None
            else float("nan"),
            "activation_corr": correlations.get(lat, float("nan")),
            **shared,
        }
        detail = {
            "reference": ref[1].label if ref is not None else "itself",
            "nearest": int(cmp.nearest[lat]),
            "partner": partner if partner >= 0 else None,
        }
        out[lat] = ScoredLatent(lat, "", [], metrics=metrics, detail=detail)
    return out


@task_kind(
    "similarity",
    settings=SimilaritySettings,
    serve=serve_latents,
    scorer=score_similarity,
    explained=False,
    report=ReportSpec(
        headline="mcs",
        extra=("matched_cos", "dict_matched_frac", "dict_mean_mcs"),
        chance={"mcs": "mcs_random", "dict_mean_mcs": "dict_mean_mcs_random"},
        position=70,
    ),
)
class SAESimilarityTask(LatentTask):
    """Max cosine similarity of each latent's decoder row to a reference dictionary (or its own)."""

    METRICS = {
        "mcs": (nanmean, True),
        "mcs_encoder": (nanmean, True),
        "mcs_random": (nanmean, False),
        "matched_cos": (nanmean, True),
        "matched": (nanmean, True),
        "activation_corr": (nanmean, True),
        **{name: (Shared(), "random" not in name) for name in DICT_METRICS},
    }

    @classmethod
    def response_detail(cls, scored, run) -> dict:
        return dict(scored.detail)
