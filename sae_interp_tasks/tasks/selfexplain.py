"""sae_selfexplain: self-explanations of the selected latents, and their agreement with auto-interp.

Uses the same latent selection, test windows and auto-interp explanations as sae_detection
(shared through `memo`), so agreement is measured latent by latent: retrieval agreement, an
optional LLM judge, and the self-explanation's own detection score next to the auto-interp
explanation's (sae_detection's scores, computed once when both tasks run).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field


from sae_interp_tasks import memo
from sae_interp_tasks.aggregations import nanmean, total
from sae_interp_tasks.errors import SaeInterpError
from sae_interp_tasks.memo import LatentRun
from sae_interp_tasks.records import Explanation, ScoredLatent
from sae_interp_tasks.registry import task_kind
from sae_interp_tasks.scorers import classifier
from sae_interp_tasks.scorers.agreement import AgreementConfig, judge_agreement, retrieval_agreement
from sae_interp_tasks.selfexplain import SelfExplainConfig, run_sweeps
from sae_interp_tasks.tasks.autointerp import ClassifierSettings
from sae_interp_tasks.tasks.base import LatentTask


@dataclass(frozen=True)
class SelfExplainSettings(ClassifierSettings):
    selfexplain: SelfExplainConfig = field(default_factory=SelfExplainConfig)
    agreement: AgreementConfig = field(default_factory=AgreementConfig)


def explaining_model(run: LatentRun):
    """The model that explains its latents: the subject model, or `selfexplain_model` (same width)."""
    name = run.settings.selfexplain.selfexplain_model
    backend = run.backend
    if name is None:
        return backend.model
    from sae_interp_tasks.subject import load_subject

    model = backend.memo.get(("selfexplain-model", name), lambda: load_subject(name, device=backend.device))
    if model.cfg.d_model != backend.info.d_in:
        raise SaeInterpError(f"selfexplain_model {name} has d_model={model.cfg.d_model} but the SAE reads "
                             f"{backend.info.d_in}-wide activations; use an instruction-tuned variant of the SAE's model")
    return model


def score_selfexplain(run: LatentRun) -> dict[int, ScoredLatent]:
    s: SelfExplainSettings = run.settings
    cfg = s.selfexplain
    latents = run.latents
    sweeps, threshold = run_sweeps(explaining_model(run), run.backend.sae, latents, run.selection.state.record,
                                   run.backend.tok_decode, cfg, run.seed)
    primary = sweeps[cfg.explain_template]
    self_text = {lat: primary[lat]["explanation"] or "(nothing)" for lat in latents}
    auto_text = {lat: run.explanations[lat].text for lat in latents}
    retrieval = retrieval_agreement([self_text[lat] for lat in latents], [auto_text[lat] for lat in latents],
                                    memo.embedder(run.backend, s.embedding), s.embedding.embedding_batch_size)
    per = {lat: {**values, "selfexplain_failure": float(primary[lat]["peak_selfsim"] < threshold),
                 "peak_selfsim": primary[lat]["peak_selfsim"], "selfsim_threshold": threshold}
           for lat, values in zip(latents, retrieval)}
    def scorer_client():
        return memo.client(run.backend, s.scorer.client_config(run.backend.device))

    if s.agreement.judge:
        votes = judge_agreement(scorer_client(), [(self_text[lat], auto_text[lat]) for lat in latents])
        for lat, vote in zip(latents, votes):
            per[lat]["judge_agreement"] = vote
    if s.agreement.selfexplain_detection:
        # only the self-explanations' own balanced accuracy is reported: no shuffled control to pay for
        own = classifier.score("detection", [run.splits[lat] for lat in latents],
                               {lat: Explanation(lat, self_text[lat], "selfexplain") for lat in latents},
                               dataclasses.replace(s.scorer, shuffled_control=False), scorer_client(),
                               run.backend.tok_decode, run.seed, s.explainer.highlight_threshold)
        auto = memo.scores(run, "detection")  # sae_detection's own scores when both tasks run
        for lat in latents:
            per[lat]["selfexplain_balanced_acc"] = own[lat].metrics["balanced_acc"]
            per[lat]["autointerp_balanced_acc"] = auto[lat].metrics["balanced_acc"]
    return {lat: ScoredLatent(lat, "selfexplain", self_text[lat], [], per[lat], {
        "selfexplanation": self_text[lat], "autointerp_explanation": auto_text[lat],
        "sweeps": {name: by_latent[lat] for name, by_latent in sweeps.items()}}) for lat in latents}


@task_kind("selfexplain", settings=SelfExplainSettings, scorer=score_selfexplain, headline="retrieval_auroc")
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
        "selfsim_threshold": (nanmean, False),  # the failure threshold used (calibrated on random directions)
        "selfexplain_failure": (total, False),
    }

    @classmethod
    def response_detail(cls, scored: ScoredLatent, run: LatentRun) -> dict:
        return scored.detail
