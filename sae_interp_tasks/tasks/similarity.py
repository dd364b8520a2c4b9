"""sae_similarity: the SAE's dictionary against a reference SAE's, or against itself
(docs/methods.md, "Similarity").

One doc = one latent (the same slots as every latent task under the same seed). Per latent: the
max cosine of its decoder row to the reference's rows (`mcs`) and of its encoder row
(`mcs_encoder`), the cosine to its one-to-one partner (`matched_cos`, `matched` above
`match_threshold`), the correlation of the two latents' activations over the same tokens (same
hook only), and `mcs_random`, its max cosine to a random dictionary of the reference's shape: the
chance level. For a reference narrower than the SAE at the same hook, feature splitting: the
reference latent a latent takes over and how many siblings share it (`split_children`). With
`semantic_overlap`, the similarity of its explanation to its partner's (both by the run's
explainer) against a shuffled partner's. Per SAE (`dict_*`, the same in every doc, over every
latent of the dictionary): the mean max cosine, the fractions above 0.7 and 0.9, the matched
fraction, the split reference latents, with their chance levels. Without a reference each latent
is compared with the other latents of its own SAE, which is SAEBench's `max_decoder_cosine_sim`
(and `average_max_decoder_cosine_sim` as `dict_mean_mcs`). No LLM unless the semantic overlap
asks for explanations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from sae_interp_tasks.aggregations import Shared, nanmean
from sae_interp_tasks.harness import costs, references, run_stages
from sae_interp_tasks.harness.run_stages import LatentRun, LatentSettings
from sae_interp_tasks.harness.serve import serve_latents
from sae_interp_tasks.harness.task import LatentTask
from sae_interp_tasks.records import ScoredLatent
from sae_interp_tasks.registry import ReportSpec, task_kind
from sae_interp_tasks.stages.controls import shuffled_donors
from sae_interp_tasks.stages.embedder import embed
from sae_interp_tasks.stages.paired_pass import (
    PairedResult,
    paired_pass,
    split_candidates,
    splitting_summary,
)
from sae_interp_tasks.stages.similarity import MCS_LEVELS, SimilarityConfig, compare

LEVELS = [f"{int(level * 10):02d}" for level in MCS_LEVELS]
SPLIT_METRICS = ("dict_split_frac", "dict_taken_over_frac", "dict_children_mean")
DICT_METRICS = (
    "dict_mean_mcs",
    "dict_mean_mcs_encoder",
    "dict_mean_mcs_random",
    "dict_matched_frac",
    *(f"dict_frac_mcs_{lv}" for lv in LEVELS),
    *(f"dict_frac_mcs_{lv}_random" for lv in LEVELS),
    *SPLIT_METRICS,
)


@dataclass(frozen=True)
class SimilaritySettings(LatentSettings):
    similarity: SimilarityConfig = field(default_factory=SimilarityConfig)


def semantic_wanted(s: SimilaritySettings) -> bool:
    """The run's explanations are read only for the semantic overlap, which needs a reference."""
    return bool(s.similarity.semantic_overlap and s.similarity.reference)


def _dictionary(sae):
    return sae.W_dec.detach(), sae.W_enc.detach().T


def comparison(run: LatentRun):
    """The whole dictionary's comparison, once per run and settings."""
    ctx, cfg = run.context, run.settings.similarity

    def build():
        dec_a, enc_a = _dictionary(ctx.sae)
        if cfg.reference is None:
            return compare(dec_a, enc_a, None, None, cfg, seed=run.seed), None
        ref, info = references.reference(ctx, cfg)
        dec_b, enc_b = _dictionary(ref)
        return compare(dec_a, enc_a, dec_b, enc_b, cfg, seed=run.seed), (ref, info)

    return ctx.store.compute_once(("similarity", cfg, run.seed), build)


def _shared(values: dict, n: dict | int) -> dict:
    """Each dictionary-wide number as aggregations.Shared reads it. It is taken over every latent
    of the dictionary, so a mean has no sampling error (0); a fraction carries the binomial
    standard error over the n latents it counts, the spread a dictionary of that width would
    show."""
    out = {}
    for name, v in values.items():
        count = n.get(name, 1) if isinstance(n, dict) else n
        se = math.sqrt(max(v * (1 - v), 0.0) / count) if "frac" in name and v == v else 0.0
        out[name] = {"value": v, "stderr": se if v == v else float("nan")}
    return out


def paired(run: LatentRun, cmp, ref) -> tuple[PairedResult, list[tuple[int, int]]]:
    """At the same hook: matched latents' correlations (the owned ones) and, for a narrower
    reference, the feature-splitting candidates of the whole dictionary with their shares."""
    ctx, cfg = run.context, run.settings.similarity
    if ref is None or ref[1].hook_name != ctx.info.hook_name:
        return PairedResult({}, {}), []
    pairs = [(lat, int(cmp.partner[lat])) for lat in run.owned if cmp.partner[lat] >= 0]
    narrower = cmp.reference_width < len(cmp.mcs)
    candidates = split_candidates(cmp.mcs, cmp.nearest, cfg.split_threshold) if narrower else []
    result = ctx.store.compute_once(
        ("paired-pass", cfg, run.seed, tuple(pairs)),
        lambda: paired_pass(
            run_stages.contexts(ctx, run.settings, run.seed),
            ctx.read_activations,
            ctx.sae,
            ref[0],
            pairs,
            candidates,
            cfg.correlation_tokens,
            ctx.batch_size_per_gpu,
        ),
    )
    return result, candidates


def semantic(run: LatentRun, cmp, ref) -> dict[int, dict]:
    """Per owned latent with a matched partner that both sides explain: the cosine of the two
    explanations' sentence embeddings, and of its explanation with a shuffled partner's."""
    s = run.settings
    partners = {lat: int(cmp.partner[lat]) for lat in run.latents if cmp.partner[lat] >= 0}
    theirs = references.reference_explanations(run, ref[0], ref[1], partners)
    pool = [lat for lat in run.latents if lat in run.explanations and partners.get(lat) in theirs]
    if not pool:
        return {}
    embedder = run_stages.embedder(run.context, s.embedding)
    ours_vec = embed(embedder, [run.explanations[lat].text for lat in pool])
    theirs_vec = embed(embedder, [theirs[partners[lat]].text for lat in pool])
    row = {lat: i for i, lat in enumerate(pool)}
    donors = shuffled_donors(pool, run.seed, stream="semantic-overlap")
    out = {}
    for lat in run.owned:
        if lat not in row:
            continue
        i = row[lat]
        donor = donors.get(lat)
        out[lat] = {
            "explanation_sim": float(ours_vec[i] @ theirs_vec[i]),
            "explanation_sim_shuffled": float(ours_vec[i] @ theirs_vec[row[donor]])
            if donor is not None
            else float("nan"),
            "explanation": run.explanations[lat].text,
            "partner_explanation": theirs[partners[lat]].text,
        }
    return out


def dictionary_numbers(cmp, cfg: SimilarityConfig, siblings_summary: dict | None) -> dict:
    width = len(cmp.mcs)
    values = cmp.summary(cfg.match_threshold)
    counts: dict = {name: width for name in values}
    split = siblings_summary or {name: float("nan") for name in SPLIT_METRICS}
    values.update(split)
    counts.update({name: cmp.reference_width for name in SPLIT_METRICS})
    return _shared(values, counts)


def score_similarity(run: LatentRun) -> dict[int, ScoredLatent]:
    cfg = run.settings.similarity
    cmp, ref = comparison(run)
    pass_result, candidates = paired(run, cmp, ref)
    siblings, split_summary = {}, None
    if candidates:
        siblings, split_summary = splitting_summary(
            candidates, pass_result.split_share, cfg.split_min_share, cmp.reference_width
        )
    shared = dictionary_numbers(cmp, cfg, split_summary)
    overlap = semantic(run, cmp, ref) if semantic_wanted(run.settings) else {}
    parents = dict(candidates)
    nan = float("nan")
    out = {}
    for lat in run.owned:
        partner = int(cmp.partner[lat])
        matched_cos = float(cmp.partner_cos[lat])
        sem = overlap.get(lat, {})
        metrics = {
            "mcs": float(cmp.mcs[lat]),
            "mcs_encoder": float(cmp.mcs_encoder[lat]),
            "mcs_random": float(cmp.mcs_random[lat]),
            "matched_cos": matched_cos,
            "matched": float(partner >= 0 and matched_cos > cfg.match_threshold)
            if ref is not None
            else nan,
            "activation_corr": pass_result.correlations.get(lat, nan),
            "split_children": float(siblings[lat]) if lat in siblings else nan,
            "explanation_sim": sem.get("explanation_sim", nan),
            "explanation_sim_shuffled": sem.get("explanation_sim_shuffled", nan),
            **shared,
        }
        detail = {
            "reference": ref[1].label if ref is not None else "itself",
            "nearest": int(cmp.nearest[lat]),
            "partner": partner if partner >= 0 else None,
            "split_parent": parents.get(lat) if lat in siblings else None,
            "split_share": pass_result.split_share.get(lat),
            **{k: sem[k] for k in ("explanation", "partner_explanation") if k in sem},
        }
        out[lat] = ScoredLatent(lat, "", [], metrics=metrics, detail=detail)
    return out


def estimate_similarity(run: LatentRun, counter) -> costs.Estimate:
    """The semantic overlap explains each matched partner as the run explains its own latents:
    about as many prompts, of about the same size (the run's own explanations are counted with
    the shared explanations)."""
    if not semantic_wanted(run.settings):
        return costs.Estimate()
    return costs.explainer_estimate(run, counter)


@task_kind(
    "similarity",
    settings=SimilaritySettings,
    serve=serve_latents,
    scorer=score_similarity,
    estimate=estimate_similarity,
    explained=semantic_wanted,
    report=ReportSpec(
        headline="mcs",
        extra=("matched_cos", "dict_matched_frac", "dict_mean_mcs", "explanation_sim"),
        chance={
            "mcs": "mcs_random",
            "dict_mean_mcs": "dict_mean_mcs_random",
            "explanation_sim": "explanation_sim_shuffled",
            **{f"dict_frac_mcs_{lv}": f"dict_frac_mcs_{lv}_random" for lv in LEVELS},
        },
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
        "split_children": (nanmean, True),
        "explanation_sim": (nanmean, True),
        "explanation_sim_shuffled": (nanmean, False),
        **{name: (Shared(), "random" not in name) for name in DICT_METRICS},
    }

    @classmethod
    def response_detail(cls, scored, run) -> dict:
        return dict(scored.detail)
