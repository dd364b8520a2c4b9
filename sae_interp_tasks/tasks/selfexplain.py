"""sae_selfexplain: self-explanations of the selected latents, and their agreement with auto-interp.

Uses the same latent selection, test windows and auto-interp explanations as sae_detection
(shared through `harness.run_stages`), so agreement is measured latent by latent: retrieval
agreement, an optional LLM judge, and the self-explanation's own detection score next to the
auto-interp explanation's (sae_detection's scores, computed once when both tasks run). The sweeps
are
`stages/selfexplain.py`; agreement is `scorers/agreement.py`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from sae_interp_tasks.aggregations import nanmean, total
from sae_interp_tasks.errors import SaeInterpError
from sae_interp_tasks.harness import costs, run_stages
from sae_interp_tasks.harness.classifier_run import CLASSIFIER_CHECK as DETECTION_CHECK
from sae_interp_tasks.harness.classifier_run import (
    check_classifier,
    classifier_estimate,
    classify,
)
from sae_interp_tasks.harness.run_stages import LatentRun, ScorerSettings
from sae_interp_tasks.harness.serve import serve_latents
from sae_interp_tasks.harness.task import LatentTask
from sae_interp_tasks.records import Explanation, ScoredLatent
from sae_interp_tasks.registry import ReportSpec, task_kind
from sae_interp_tasks.scorers.agreement import AgreementConfig, agreement_metrics, judge_agreement
from sae_interp_tasks.scorers.detection import Detection
from sae_interp_tasks.stages.selfexplain import run_sweeps
from sae_interp_tasks.stages.selfexplain_prompts import SelfExplainConfig
from sae_interp_tasks.validity import scorer_check
from sae_interp_tasks.validity.scorer_check import CheckResult

DETECTION = "detection"  # whose scores of the auto-interp explanations this task reads
JUDGE_CHECK = "judge_check_acc"


@dataclass(frozen=True)
class SelfExplainSettings(ScorerSettings):
    selfexplain: SelfExplainConfig = field(default_factory=SelfExplainConfig)
    agreement: AgreementConfig = field(default_factory=AgreementConfig)


def explaining_model(run: LatentRun):
    """The model that explains its latents: the subject model, or `selfexplain_model` (same
    width)."""
    name = run.settings.selfexplain.selfexplain_model
    if name is None:
        return run.context.model
    model = run_stages.subject_model(run.context, name)
    if model.cfg.d_model != run.context.info.d_in:
        raise SaeInterpError(
            f"selfexplain_model {name} has d_model={model.cfg.d_model} but the SAE reads "
            f"{run.context.info.d_in}-wide activations; use an instruction-tuned variant of the "
            "SAE's model"
        )
    return model


def _add_detection_scores(run: LatentRun, self_text: dict, per: dict) -> None:
    """Each latent's self-explanation scored by detection on detection's windows (no shuffled
    control to pay for), beside the auto-interp explanation's score (sae_detection's own scores
    when both tasks run)."""
    s: SelfExplainSettings = run.settings
    latents = run.latents
    own = classify(
        dataclasses.replace(run, owned=tuple(latents)),
        Detection(),
        DETECTION,
        settings=dataclasses.replace(
            s, scorer=dataclasses.replace(s.scorer, shuffled_control=False)
        ),
        explanations={lat: Explanation(lat, self_text[lat], "selfexplain") for lat in latents},
    )
    auto = run_stages.scores(run, DETECTION)
    for lat in latents:
        per[lat].update(
            selfexplain_balanced_acc=own[lat].metrics["balanced_acc"],
            autointerp_balanced_acc=auto[lat].metrics["balanced_acc"],
        )


def score_selfexplain(run: LatentRun) -> dict[int, ScoredLatent]:
    s: SelfExplainSettings = run.settings
    latents = run.latents
    sweeps, threshold = run_sweeps(
        explaining_model(run),
        run.context.sae,
        latents,
        run.selection.state.record,
        run.decode,
        s.selfexplain,
        run.seed,
    )
    primary = sweeps[s.selfexplain.explain_template]
    self_text = {lat: primary[lat]["explanation"] or "(nothing)" for lat in latents}
    auto_text = {lat: run.explanations[lat].text for lat in latents}
    judge = run_stages.scorer_client(run.context, s.scorer) if s.agreement.judge else None
    per = agreement_metrics(
        latents,
        self_text,
        auto_text,
        run_stages.embedder(run.context, s.embedding),
        s.embedding.embedding_batch_size,
        judge,
    )
    for lat in latents:
        per[lat].update(
            selfexplain_failure=float(primary[lat]["peak_selfsim"] < threshold),
            peak_selfsim=primary[lat]["peak_selfsim"],
            selfsim_threshold=threshold,
        )
    if s.agreement.selfexplain_detection:
        _add_detection_scores(run, self_text, per)
    scored = {
        lat: ScoredLatent(
            lat,
            self_text[lat],
            [],
            per[lat],
            {
                "selfexplanation": self_text[lat],
                "autointerp_explanation": auto_text[lat],
                "sweeps": {name: by_latent[lat] for name, by_latent in sweeps.items()},
            },
        )
        for lat in latents
    }
    return run_stages.with_checks(
        scored,
        check_classifier(run, Detection(), DETECTION)
        if s.agreement.selfexplain_detection
        else None,
        check_judge(run) if s.agreement.judge else None,
    )


def check_judge(run: LatentRun) -> CheckResult | None:
    """The agreement judge on known answers: a word's explanation against a rewording of it (same)
    and against another word's (not the same); accuracy against 0.5."""
    s: SelfExplainSettings = run.settings

    def compute() -> CheckResult:
        _, explanations = run_stages.check_set(run)
        texts = [e.text for e in explanations.values()]
        words = [t.split('"')[1] for t in texts]
        pairs = [(t, f'mentions of "{w}"') for t, w in zip(texts, words, strict=True)]
        pairs += (
            [(t, texts[(i + 1) % len(texts)]) for i, t in enumerate(texts)]
            if len(texts) > 1
            else []
        )
        truth = [1.0] * len(texts) + [0.0] * (len(pairs) - len(texts))
        client = run_stages.scorer_client(run.context, s.scorer)
        votes = judge_agreement(client, pairs)
        result = scorer_check.accuracy(
            [float(v == t) if v == v else v for v, t in zip(votes, truth, strict=True)],
            0.5,
            JUDGE_CHECK,
        )
        scorer_check.announce("sae_selfexplain", client.name, result, scorer_check.ADVICE_SCORER)
        return result

    return run_stages.scorer_check(run, ("agreement-judge", s.scorer), compute)


def estimate_selfexplain(run: LatentRun, counter: costs.PromptCounter) -> costs.Estimate:
    """The self-explanations' own detection (no shuffled control; its check is detection's, counted
    there) and the judge (one short prompt per latent and per check pair)."""
    s: SelfExplainSettings = run.settings
    # self-explanations are scored on every rank
    every = dataclasses.replace(run, owned=tuple(run.latents))
    total = (
        classifier_estimate(Detection(), shuffled=False, check=False)(every, counter)
        if s.agreement.selfexplain_detection
        else costs.Estimate()
    )
    if s.agreement.judge:
        total = total.add(
            costs.Estimate(
                len(run.latents) + 2 * s.check.scorer_check_words,
                60 * (len(run.latents) + 2 * s.check.scorer_check_words),
                len(run.latents) + 2 * s.check.scorer_check_words,
            )
        )
    return total


@task_kind(
    "selfexplain",
    settings=SelfExplainSettings,
    serve=serve_latents,
    scorer=score_selfexplain,
    estimate=estimate_selfexplain,
    report=ReportSpec(
        headline="retrieval_auroc",
        extra=("top1_match",),
        chance={"top1_match": "top1_chance"},
        position=40,
        checks={
            "selfexplain_balanced_acc": "scorer_check_passed",
            "autointerp_balanced_acc": "scorer_check_passed",
            "judge_agreement": "judge_check_passed",
        },
    ),
)
class SAESelfExplainTask(LatentTask):
    """The subject model explains its own latents; agreement with the auto-interp explanations."""

    METRICS = {
        "retrieval_auroc": (nanmean, True),
        "top1_match": (nanmean, True),
        "top1_chance": (nanmean, False),
        "matched_similarity": (nanmean, True),
        "judge_agreement": (nanmean, True),
        "selfexplain_balanced_acc": (nanmean, True),
        "autointerp_balanced_acc": (nanmean, True),
        "peak_selfsim": (nanmean, True),
        # the failure threshold used (calibrated on random directions)
        "selfsim_threshold": (
            nanmean,
            False,
        ),
        "selfexplain_failure": (total, False),
        **scorer_check.check_metrics(DETECTION_CHECK),
        **scorer_check.check_metrics(JUDGE_CHECK),
    }

    @classmethod
    def response_detail(cls, scored: ScoredLatent, run: LatentRun) -> dict:
        return scored.detail
