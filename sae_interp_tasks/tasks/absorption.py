"""sae_absorption: SAEBench's first-letter feature absorption; one doc = one letter.

A "starts with E" latent that stays silent on "Elephant" because another latent took that token
over has been absorbed. Per letter: a probe for the letter on the hooked activation, the k-sparse
latents that carry it (the split latents), and over the test words the probe finds, the absorption
fraction, the full-absorption rate and the number of split latents (`stages/absorption.py`,
docs/methods.md, "Feature absorption"). The words are the subject model's own single-token
vocabulary (`stages/absorption_data.py`); their activations are cached per model and hook, so
every SAE at a hook reads them back after one forward.

A letter the model does not carry (probe F1 at or below `absorption_min_probe_f1`), with too few
words, or with no probe true positive is skipped and counted (`skipped_letters`), never scored 0.
Fewer scored letters than `absorption_min_letters` fail the instrument's check
(`letters_check_passed` 0): the leaderboard marks the scores and `compare` does not gate on them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from sae_interp_tasks.aggregations import Shared, nanmean, spread, total
from sae_interp_tasks.config import Settings
from sae_interp_tasks.harness.context import RunContext
from sae_interp_tasks.harness.request import InterpretRequest, grouped
from sae_interp_tasks.harness.task import SAETask
from sae_interp_tasks.records import Response
from sae_interp_tasks.registry import ReportSpec, task_kind
from sae_interp_tasks.stages import absorption
from sae_interp_tasks.stages.absorption_data import (
    LETTERS,
    AbsorptionConfig,
    cached_word_activations,
)

log = logging.getLogger(__name__)
KIND = "absorption"
SCORED = ("absorption_fraction", "full_absorption_rate", "num_split_features")
NAN = float("nan")


@dataclass(frozen=True)
class AbsorptionSettings(Settings):
    absorption: AbsorptionConfig = field(default_factory=AbsorptionConfig)


def serve_absorption(ctx: RunContext, requests: list[InterpretRequest]) -> list[Response]:
    """Every letter, once per group of equal settings and seed."""
    out: list = [None] * len(requests)
    for indices in grouped(requests, lambda r: (r.settings, r.seed)).values():
        first = requests[indices[0]]
        cfg: AbsorptionConfig = first.settings.absorption
        letters = ctx.store.compute_once(
            ("absorption", cfg, first.seed),
            lambda cfg=cfg, seed=first.seed: _score_all(ctx, cfg, seed),
        )
        passed = sum("skip" not in r for r in letters.values()) >= cfg.absorption_min_letters
        for i in indices:
            out[i] = _response(letters[requests[i].doc["letter"]], passed)
    return out


def _response(result: dict, passed: bool) -> Response:
    skipped = "skip" in result
    metrics = {m: NAN if skipped else float(result[m]) for m in SCORED}
    metrics.update({f"{m}_std": metrics[m] for m in SCORED})  # aggregated as the spread
    metrics["probe_f1"] = float(result.get("probe_f1", NAN))
    metrics["num_probe_true_positives"] = float(result.get("num_probe_true_positives", 0))
    metrics["num_full_absorption"] = float(result.get("num_full_absorption", 0))
    metrics["skipped_letters"] = float(skipped)
    metrics["letters_check_passed"] = {"value": float(passed), "stderr": 0.0}
    return Response(
        metrics=metrics,
        detail={k: v for k, v in result.items() if k != "letter"}
        | {"first_letter": result["letter"]},
    )


def _score_all(ctx: RunContext, cfg: AbsorptionConfig, seed: int) -> dict[str, dict]:
    data = cached_word_activations(ctx, cfg, seed)
    results: dict[str, dict] = {
        letter: {"letter": letter, "skip": reason} for letter, reason in data.skipped.items()
    }
    present = sorted(set(data.labels.tolist()))
    if present:
        codes = absorption.encode_sparse(ctx.sae, data.acts)
        scored = absorption.score_letters(data, codes, ctx.sae, cfg, seed)
        results.update({LETTERS[index]: result for index, result in scored.items()})
    skipped = {k: r["skip"] for k, r in results.items() if "skip" in r}
    if skipped:
        log.warning(
            "absorption: %d letters not scored (%s)",
            len(skipped),
            "; ".join(f"{k}: {why}" for k, why in sorted(skipped.items())),
        )
    scored = len(results) - len(skipped)
    if scored < cfg.absorption_min_letters:
        log.warning(
            "absorption: only %d letters scored, fewer than absorption_min_letters=%d: the subject "
            "model does not carry first letters well enough at this hook for the scores to mean "
            "much (SAEBench recommends models of 1B parameters or more); they are marked as such",
            scored,
            cfg.absorption_min_letters,
        )
    return results


# SAEBench's absorption_first_letter files: its means and standard deviations over letters are
# ours by name; the per-letter rows come from the samples (`details: letters`)
SAEBENCH = {
    "eval_type_id": "absorption_first_letter",
    "task": "sae_absorption",
    "metrics": {
        "mean": {
            "mean_absorption_fraction_score": "absorption_fraction",
            "mean_full_absorption_score": "full_absorption_rate",
            "mean_num_split_features": "num_split_features",
            "std_dev_absorption_fraction_score": "absorption_fraction_std",
            "std_dev_full_absorption_score": "full_absorption_rate_std",
            "std_dev_num_split_features": "num_split_features_std",
        }
    },
    "details": "letters",
}


@task_kind(
    KIND,
    settings=AbsorptionSettings,
    serve=serve_absorption,
    report=ReportSpec(
        headline="absorption_fraction",
        extra=("full_absorption_rate", "num_split_features"),
        doc_id="first_letter",
        pair_on="first_letter",
        position=75,
        checks={m: "letters_check_passed" for m in SCORED},
        saebench=SAEBENCH,
    ),
)
class SAEAbsorptionTask(SAETask):
    """Per first letter: the latents that carry it, and how much of it other latents absorbed."""

    METRICS = {
        "absorption_fraction": (nanmean, False),
        "full_absorption_rate": (nanmean, False),
        "num_split_features": (nanmean, False),
        **{f"{m}_std": (spread, False) for m in SCORED},
        "probe_f1": (nanmean, True),
        "num_probe_true_positives": (total, True),
        "num_full_absorption": (total, False),
        "skipped_letters": (total, False),
        "letters_check_passed": (Shared(), True),
    }

    def make_docs(self) -> list[dict]:
        return [{"letter": c} for c in self.settings.absorption.absorption_letters]
