"""Running a window classifier (detection, fuzzing; self-explanation reuses detection's) on a
run's latents: its scores, its known-answer check, and its cost estimate. Shared by the task kinds
that score with a classifier, so none of them imports another's module."""

from __future__ import annotations

import dataclasses
import math
import random

from sae_interp_tasks.aggregations import Pooled
from sae_interp_tasks.harness import costs, run_stages
from sae_interp_tasks.harness.run_stages import LatentRun, ScorerSettings
from sae_interp_tasks.scorers import classifier
from sae_interp_tasks.validity import scorer_check
from sae_interp_tasks.validity.scorer_check import CheckResult

CLASSIFIER_CHECK = "scorer_check_balanced_acc"
# delphi's frequency-weighted F1: the latents' F1 weighted by how often each fired in the pass
# (the frequent latents are the ones a user of the SAE meets), over the latents with an F1
FREQ_WEIGHTED_F1 = Pooled("sum(f1_x_firing) / sum(firing_scored)")
# a window classifier's task metrics: the classifier's own and its known-answer check's
METRICS = {
    **classifier.METRICS,
    "f1_freq_weighted": (FREQ_WEIGHTED_F1, True),
    **scorer_check.check_metrics(CLASSIFIER_CHECK),
}
# the metrics that mean nothing when the check fails (answered_frac and parse_failures still do)
CHECKED = {
    m: "scorer_check_passed"
    for m in (*classifier.METRICS, "f1_freq_weighted")
    if m not in ("answered_frac", "parse_failures")
}


def classifier_scores(run: LatentRun, scorer: classifier.WindowClassifier, stream: str):
    """A window classifier's scores of the run's owned latents, with its known-answer check's
    metrics beside them: the whole scorer of a kind that scores with one (detection, fuzzing)."""
    return run_stages.with_checks(
        classify(run, scorer, stream), check_classifier(run, scorer, stream)
    )


def classify(
    run: LatentRun,
    scorer: classifier.WindowClassifier,
    stream: str,
    settings: ScorerSettings | None = None,
    explanations: dict | None = None,
):
    """A window classifier on the run's owned latents (its settings', or `settings`); `explanations`
    defaults to the run's auto-interp explanations."""
    s = settings or run.settings
    scored = scorer.score(
        [run.splits[lat] for lat in run.latents],
        explanations or run.explanations,
        s.scorer,
        run_stages.scorer_client(run.context, s.scorer),
        run.decode,
        run.seed,
        stream,
        s.explainer.highlight_threshold,
        set(run.owned),
    )
    return {lat: with_firing(sc, run.selection.state.n_firing(lat)) for lat, sc in scored.items()}


def with_firing(scored, n_firing: int):
    """The statistics of the frequency-weighted F1: F1 x firing count and the firing count, both 0
    for a latent without an F1 (no window answered), which then weighs nothing."""
    f1 = scored.metrics.get("f1", math.nan)
    ok = math.isfinite(f1)
    stats = {
        **(scored.stats or {}),
        "f1_x_firing": f1 * n_firing if ok else 0.0,
        "firing_scored": float(n_firing) if ok else 0.0,
    }
    return dataclasses.replace(scored, stats=stats)


def check_classifier(
    run: LatentRun, scorer: classifier.WindowClassifier, stream: str
) -> CheckResult | None:
    """The window classifier's balanced accuracy on the run's known answers (once per run)."""
    s: ScorerSettings = run.settings

    def compute() -> CheckResult:
        splits, explanations = run_stages.check_set(run)
        client = run_stages.scorer_client(run.context, s.scorer)
        scored = scorer.score(
            splits,
            explanations,
            dataclasses.replace(s.scorer, shuffled_control=False),
            client,
            run.decode,
            run.seed,
            f"{stream} check",
            s.explainer.highlight_threshold,
        )
        result = scorer_check.balanced_accuracy(
            [j for sc in scored.values() for j in sc.judgements], CLASSIFIER_CHECK
        )
        scorer_check.announce(f"sae_{stream}", client.name, result, scorer_check.ADVICE_SCORER)
        return result

    return run_stages.scorer_check(
        run, (stream, s.scorer, s.explainer.highlight_threshold), compute
    )


def classifier_estimate(
    scorer: classifier.WindowClassifier, shuffled: bool | None = None, check: bool = True
):
    """The estimate of a window classifier's requests: its prompts for the owned latents (with a
    stand-in explanation), the shuffled control's as many again, and the known-answer check's."""

    def estimate(run: LatentRun, counter: costs.PromptCounter) -> costs.Estimate:
        s: ScorerSettings = run.settings
        variants = 2 if (s.scorer.shuffled_control if shuffled is None else shuffled) else 1
        total = _prompts(
            scorer, [run.splits[lat] for lat in run.owned], s, run.decode, counter
        ).times(variants)
        if check and s.check.scorer_check:
            total = total.add(
                _prompts(scorer, run_stages.check_set(run)[0], s, run.decode, counter)
            )
        return total

    return estimate


def _prompts(
    scorer: classifier.WindowClassifier, splits: list, s: ScorerSettings, decode, counter
) -> costs.Estimate:
    total, rng, size = costs.Estimate(), random.Random(0), s.scorer.windows_per_prompt
    for split in splits:
        shown = scorer.shown(split, rng, s.explainer.highlight_threshold)
        for start in range(0, len(shown), size):
            batch = shown[start : start + size]
            answer = counter.text(", ".join(["0"] * len(batch)) + "]")
            total = total.add(
                counter.prompt(scorer.prompt(costs.STAND_IN, batch, decode, s.scorer), answer)
            )
    return total
