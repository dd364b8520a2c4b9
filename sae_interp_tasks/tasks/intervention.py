"""sae_intervention: scoring what a latent causes when it is steered (docs/methods.md,
"Intervention").

Same latents and auto-interp explanations as the other latent tasks (shared through
`harness.run_stages`). Per latent and target KL, the steering stage (`stages/steering.py`) finds a
strength and writes continuations, the explainer stage describes the tokens the edit promotes (the
output explanation), and `scorers/intervention.py` scores both explanations, each beside a shuffled
control.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sae_interp_tasks.errors import SaeInterpError
from sae_interp_tasks.harness import costs, run_stages
from sae_interp_tasks.harness.run_stages import LatentRun, ScorerSettings
from sae_interp_tasks.harness.serve import serve_latents
from sae_interp_tasks.harness.task import LatentTask
from sae_interp_tasks.records import ScoredLatent
from sae_interp_tasks.registry import ReportSpec, task_kind
from sae_interp_tasks.scorers.intervention import (
    CLAIM,
    InterventionScoringConfig,
    SteeredTextScorers,
    intervention_metrics,
    score_steering,
    surprisal_prefix,
)
from sae_interp_tasks.scorers.surprisal import ReaderConfig
from sae_interp_tasks.stages.explainers import output_explanations
from sae_interp_tasks.stages.steering import InterventionConfig, check_prompts, steer_all
from sae_interp_tasks.validity import scorer_check
from sae_interp_tasks.validity.scorer_check import ADVICE_READER, ADVICE_SCORER, CheckResult
from sae_interp_tasks.validity.steering_checks import judge_check, reader_check

READER_CHECK, JUDGE_CHECK = "surprisal_check_gain", "judge_check_acc"


@dataclass(frozen=True)
class InterventionSettings(ScorerSettings):  # `scorer` is the judge's chat model
    intervention: InterventionConfig = field(default_factory=InterventionConfig)
    intervention_scoring: InterventionScoringConfig = field(
        default_factory=InterventionScoringConfig
    )
    reader: ReaderConfig = field(default_factory=ReaderConfig)  # the surprisal scorer's base LM

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.intervention.n_prompts > self.activations.n_sample:
            raise SaeInterpError(
                f"n_intervention_prompts + n_output_prompts ({self.intervention.n_prompts}) cannot "
                "exceed n_sample "
                f"({self.activations.n_sample}), the activating windows a latent's prompts are "
                "drawn from; lower "
                "them or raise n_sample"
            )


def score_intervention(run: LatentRun) -> dict[int, ScoredLatent]:
    s: InterventionSettings = run.settings
    cfg, ctx = s.intervention, run.context
    tokenizer = ctx.tokenizer
    # each process steers and explains the latents it owns; the shuffled controls and the judge need
    # every latent's explanations and continuations, so those are gathered
    contexts = run_stages.contexts(ctx, s, run.seed)
    mine, skipped_mine = steer_all(
        ctx.model,
        ctx.sae,
        ctx.info.write_hook,  # a transcoder's decoder directions live at its output hook
        list(run.owned),
        run.selection.state.record,
        lambda c: contexts[c].numpy(),
        cfg,
        s.activations.window,
        s.activations.context_size // s.activations.window,
        run.seed,
        {tokenizer.eos_token_id},
    )
    steered = run.gather(mine)
    skipped = set().union(*run.gather({ctx.rank: skipped_mine}).values())
    check_prompts(run.latents, skipped, cfg)
    promoted = {
        (lat, t): [(tokenizer.decode([tok]), gain) for tok, gain in mine[(lat, t)].promoted]
        for t in cfg.targets
        for lat in run.owned
        if (lat, t) in mine and mine[(lat, t)].reached
    }
    output = run.gather(
        output_explanations(
            promoted,
            run_stages.explainer_client(ctx, s.explainer),
            s.explainer.explainer_max_tokens,
        )
    )
    scorers = SteeredTextScorers(
        s.intervention_scoring,
        s.scorer.shuffled_control,
        surprisal_client=lambda: run_stages.client(
            ctx, s.reader.surprisal_client(ctx.device, s.scorer.max_concurrency)
        ),
        judge_client=lambda: run_stages.scorer_client(ctx, s.scorer),
    )
    scored = score_steering(
        run.latents,
        run.owned,
        {lat: e.text for lat, e in run.explanations.items()},
        steered,
        skipped,
        output,
        cfg.targets,
        scorers,
        lambda ids: tokenizer.decode(list(ids), skip_special_tokens=True),
        lambda tok: tokenizer.decode([tok]),
        run.seed,
    )
    return run_stages.with_checks(scored, *check_scorers(run, scorers))


def check_scorers(run: LatentRun, scorers: SteeredTextScorers) -> list[CheckResult | None]:
    """The surprisal reader's and the judge's known-answer checks, for the scorers in use."""
    s: InterventionSettings = run.settings
    which = s.intervention_scoring.intervention_scorers

    def reader() -> CheckResult:
        client = scorers.surprisal_client()
        result = reader_check(client, *run_stages.check_set(run), run.decode, READER_CHECK)
        scorer_check.announce("sae_intervention", client.name, result, ADVICE_READER)
        return result

    def judge() -> CheckResult:
        client = scorers.judge_client()
        result = judge_check(
            client,
            *run_stages.check_set(run),
            run.decode,
            run.seed,
            s.intervention_scoring.judge_continuations,
            JUDGE_CHECK,
        )
        scorer_check.announce("sae_intervention", client.name, result, ADVICE_SCORER)
        return result

    return [
        run_stages.scorer_check(run, ("intervention-reader", s.reader), reader)
        if "surprisal" in which
        else None,
        run_stages.scorer_check(
            run, ("intervention-judge", s.scorer, s.intervention_scoring), judge
        )
        if "judge" in which
        else None,
    ]


def estimate_intervention(run: LatentRun, counter: costs.PromptCounter) -> costs.Estimate:
    """Per owned latent and target KL: the output explanation, the surprisal reads of every scoring
    prompt's clean and steered passages for each explanation (and shuffled one), the judge; and the
    scorers' checks."""
    s: InterventionSettings = run.settings
    cfg, which = s.intervention, s.intervention_scoring.intervention_scorers
    steered = len(run.owned) * len(cfg.targets)
    variants = 4 if s.scorer.shuffled_control else 2
    total = costs.Estimate()
    if s.explainer.uses_llm:
        total = total.add(costs.Estimate(steered, 120 * steered, costs.ANSWER_TOKENS * steered))
    passage = cfg.prompt_tokens + cfg.continuation_tokens + counter.text(CLAIM) + 16
    prefix = counter.text(surprisal_prefix())
    per_request = passage + (prefix if s.reader.surprisal_scorer == "openai" else 0)
    if "surprisal" in which:
        reads = (
            steered * variants * cfg.n_intervention_prompts * 2
            + 2 * s.check.scorer_check_words * s.check.scorer_check_windows
        )
        total = total.add(costs.Estimate(reads, reads * per_request + prefix, 0))
    if "judge" in which:
        asks = steered * variants + s.check.scorer_check_words
        total = total.add(
            costs.Estimate(
                asks, asks * (80 + 3 * s.intervention_scoring.judge_continuations * 12), 4 * asks
            )
        )
    return total


CHECKS = {
    **{
        m: "surprisal_check_passed"
        for m in ("score", "score_shuffled", "output_score", "output_score_shuffled")
    },
    **{
        m: "judge_check_passed"
        for m in (
            "judge_acc",
            "judge_acc_shuffled",
            "output_judge_acc",
            "output_judge_acc_shuffled",
        )
    },
}


@task_kind(
    "intervention",
    settings=InterventionSettings,
    serve=serve_latents,
    scorer=score_intervention,
    estimate=estimate_intervention,
    report=ReportSpec(headline="score", position=50, checks=CHECKS),
)
class SAEInterventionTask(LatentTask):
    """Steer each latent to a target KL; does its explanation predict what the model then writes?"""

    METRICS = {
        **intervention_metrics([1.0]),
        **scorer_check.check_metrics(READER_CHECK),
        **scorer_check.check_metrics(JUDGE_CHECK),
    }

    def metric_specs(self) -> dict:
        """This run's metrics: the class's, plus suffixed ones for every extra target KL."""
        return {
            **intervention_metrics(self.settings.intervention.targets),
            **super().metric_specs(),
        }

    @classmethod
    def response_detail(cls, scored: ScoredLatent, run: LatentRun) -> dict:
        return scored.detail
