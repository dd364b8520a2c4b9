"""sae_intruder: can a scorer pick out the window that is not the latent's, with no explanation?

delphi's intruder scoring (arXiv 2507.08473) on the run's held-out windows (`scorers/intruder.py`,
docs/methods.md, "Intruder"): it reads the run's pass, selection and splits, never its explanations,
so it scores an SAE's latents before anyone has explained them. The scorer (the same clients as
detection, its answer constrained to one example number in process) first finds intruders among the
known answers of the scorer check (validity.scorer_check): windows that share a frequent word and
one that lacks it.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass, field

from sae_interp_tasks.errors import SaeInterpError
from sae_interp_tasks.harness import costs, run_stages
from sae_interp_tasks.harness.run_stages import LatentRun, ScorerSettings
from sae_interp_tasks.harness.serve import serve_latents
from sae_interp_tasks.harness.task import LatentTask
from sae_interp_tasks.registry import ReportSpec, task_kind
from sae_interp_tasks.scorers import intruder
from sae_interp_tasks.scorers.intruder import IntruderConfig
from sae_interp_tasks.validity import scorer_check

KIND = "intruder"
CHECK = "scorer_check_accuracy"


@dataclass(frozen=True)
class IntruderSettings(ScorerSettings):
    intruder: IntruderConfig = field(default_factory=IntruderConfig)

    def __post_init__(self) -> None:
        super().__post_init__()
        need = self.intruder.intruder_windows - 1
        if self.check.scorer_check and self.check.scorer_check_windows < need:
            raise SaeInterpError(
                f"scorer_check_windows={self.check.scorer_check_windows} is fewer than the "
                f"{need} windows an intruder question shows beside the intruder "
                f"(intruder_windows={self.intruder.intruder_windows}); raise scorer_check_windows "
                "or lower intruder_windows"
            )


def _questions(run: LatentRun, splits, owned, stream: str, cfg: IntruderConfig, shuffled: bool):
    """(latent, variant, question) of every owned latent, the control's too when `shuffled`, each
    drawn from the seeded stream of its latent and variant."""
    threshold = run.settings.explainer.highlight_threshold
    for split in splits:
        if split.latent not in owned:
            continue
        others = {o.latent: o for o in splits if o.latent != split.latent}
        for variant in ("real", "shuffled") if shuffled else ("real",):
            rng = random.Random(f"{run.seed}:{stream}:{variant}:{split.latent}")
            for q in intruder.questions(split, others, cfg, threshold, rng, variant == "shuffled"):
                yield split.latent, variant, q


def ask(run: LatentRun, splits, owned, stream: str, cfg: IntruderConfig, shuffled: bool = True):
    """Every owned latent's questions (and the control's), asked in one batched call: latent ->
    (real, shuffled), each a list of (question, completion, reading)."""
    s: IntruderSettings = run.settings
    jobs = list(_questions(run, splits, owned, stream, cfg, shuffled))
    constrained = s.scorer.constrained
    prompts = [
        intruder.prompt(q, run.decode, s.scorer.scorer_max_tokens, constrained) for *_, q in jobs
    ]
    answers = run_stages.scorer_client(run.context, s.scorer).generate(prompts, desc=stream)
    out = {lat: ([], []) for lat in owned}
    for (lat, variant, q), answer in zip(jobs, answers, strict=True):
        out[lat][variant == "shuffled"].append((q, answer, intruder.read(q, answer)))
    return out


def score_intruder(run: LatentRun):
    s: IntruderSettings = run.settings
    splits = [run.splits[lat] for lat in run.latents]
    answered = ask(run, splits, set(run.owned), KIND, s.intruder, s.scorer.shuffled_control)
    scored = {
        lat: intruder.scored(lat, real, control, run.decode)
        for lat, (real, control) in answered.items()
    }
    return run_stages.with_checks(scored, check_intruder(run))


def check_intruder(run: LatentRun):
    """The scorer's accuracy at finding the window without the word among the check's windows that
    share it (once per run), against chance 1/intruder_windows."""
    s: IntruderSettings = run.settings
    cfg = _check_config(s)

    def compute():
        splits, _ = run_stages.check_set(run)
        answered = ask(run, splits, {sp.latent for sp in splits}, f"{KIND} check", cfg, False)
        hits = [r["correct"] for real, _ in answered.values() for _, _, r in real]
        result = scorer_check.accuracy(hits, 1 / s.intruder.intruder_windows, CHECK)
        client = run_stages.scorer_client(run.context, s.scorer)
        scorer_check.announce(
            f"sae_{KIND}",
            client.name,
            result,
            scorer_check.ADVICE_SCORER,
            "cannot find the window without a word among windows that share it",
        )
        return result

    return run_stages.scorer_check(run, (KIND, s.scorer, s.intruder), compute)


def _check_config(s: IntruderSettings) -> IntruderConfig:
    """The check's questions: the windows without the word are the intruders, one band."""
    return dataclasses.replace(s.intruder, intruder_source="non_activating", intruder_quantiles=1)


def estimate_intruder(run: LatentRun, counter: costs.PromptCounter) -> costs.Estimate:
    """Its prompts, the very ones the scorer asks (the control's and the check's included)."""
    s: IntruderSettings = run.settings
    splits = [run.splits[lat] for lat in run.latents]
    sets = [(splits, set(run.owned), KIND, s.intruder, s.scorer.shuffled_control)]
    if s.check.scorer_check:
        check = run_stages.check_set(run)[0]
        sets.append((check, {sp.latent for sp in check}, f"{KIND} check", _check_config(s), False))
    total = costs.Estimate()
    for group in sets:
        for *_, q in _questions(run, *group):
            p = intruder.prompt(q, run.decode, s.scorer.scorer_max_tokens, False)
            total = total.add(counter.prompt(p, 1))
    return total


@task_kind(
    KIND,
    settings=IntruderSettings,
    serve=serve_latents,
    scorer=score_intruder,
    estimate=estimate_intruder,
    explained=False,
    report=ReportSpec(
        headline="accuracy",
        extra=("accuracy_shuffled",),
        chance={"accuracy": "accuracy_chance"},
        position=25,
        checks={
            m: "scorer_check_passed" for m in ("accuracy", "accuracy_shuffled", "prob_intruder")
        },
    ),
)
class SAEIntruderTask(LatentTask):
    """Can a scorer pick out the window the latent does not fire on, with no explanation?"""

    METRICS = {**intruder.METRICS, **scorer_check.check_metrics(CHECK)}

    @classmethod
    def response_detail(cls, scored, run) -> dict:
        return {"scorer": scored.detail}
