"""sae_surprisal: does the explanation make a base language model less surprised by the windows
where the latent fires than by the others? (delphi's surprisal scorer; docs/methods.md, "Surprisal")

Same latents, splits and explanations as every latent task of the run; the reader is the base LM of
`surprisal_scorer` / `surprisal_model` / `surprisal_base_url` (shared with sae_intervention). The
scorer is `scorers/surprisal.py`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sae_interp_tasks.harness import costs, run_stages
from sae_interp_tasks.harness.run_stages import LatentRun, ScorerSettings
from sae_interp_tasks.harness.serve import serve_latents
from sae_interp_tasks.harness.task import LatentTask
from sae_interp_tasks.registry import ReportSpec, task_kind
from sae_interp_tasks.scorers import surprisal
from sae_interp_tasks.scorers.surprisal import ReaderConfig, SurprisalConfig, SurprisalReader
from sae_interp_tasks.validity import scorer_check
from sae_interp_tasks.validity.scorer_check import CheckResult

KIND = "surprisal"
CHECK = "scorer_check_auroc"


@dataclass(frozen=True)
class SurprisalSettings(ScorerSettings):  # `scorer.shuffled_control` and `max_concurrency` apply
    reader: ReaderConfig = field(default_factory=ReaderConfig)
    surprisal: SurprisalConfig = field(default_factory=SurprisalConfig)


def score_surprisal(run: LatentRun):
    s: SurprisalSettings = run.settings
    client = run_stages.client(
        run.context, s.reader.surprisal_client(run.context.device, s.scorer.max_concurrency)
    )
    reader = SurprisalReader(client, s.surprisal, run.decode)
    scored = surprisal.score_surprisal(
        [run.splits[lat] for lat in run.latents],
        run.explanations,
        reader,
        run.seed,
        s.scorer.shuffled_control,
        set(run.owned),
        desc=KIND,
    )
    return run_stages.with_checks(scored, check_reader(run, reader))


def check_reader(run: LatentRun, reader: SurprisalReader) -> CheckResult | None:
    """The AUROC of the loss reduction over every window of the run's known answers."""
    s: SurprisalSettings = run.settings

    def compute() -> CheckResult:
        splits, explanations = run_stages.check_set(run)
        labels, stats = [], []
        for split in splits:
            texts = [run.decode(ex.tokens.tolist()) for ex in split.test]
            stats += reader.statistics(explanations[split.latent].text, texts, f"{KIND} check")
            labels += [ex.is_activating for ex in split.test]
        result = scorer_check.auroc(labels, stats, CHECK)
        scorer_check.announce(f"sae_{KIND}", reader.client.name, result, scorer_check.ADVICE_READER)
        return result

    return run_stages.scorer_check(run, (KIND, s.reader, s.surprisal), compute)


def estimate_surprisal(run: LatentRun, counter: costs.PromptCounter) -> costs.Estimate:
    """Each test window read after the explanation, the neutral description and (shuffled) another
    latent's, and the known answers' windows after their explanations and the neutral one."""
    s: SurprisalSettings = run.settings
    reads = 3 if s.scorer.shuffled_control else 2
    texts = [run.decode(ex.tokens.tolist()) for lat in run.owned for ex in run.splits[lat].test]
    checked = (
        [
            run.decode(ex.tokens.tolist())
            for split in run_stages.check_set(run)[0]
            for ex in split.test
        ]
        if s.check.scorer_check
        else []
    )
    prefix = surprisal.surprisal_prefix(costs.STAND_IN)
    return counter.reads(prefix, texts).times(reads).add(counter.reads(prefix, checked).times(2))


@task_kind(
    KIND,
    settings=SurprisalSettings,
    serve=serve_latents,
    scorer=score_surprisal,
    estimate=estimate_surprisal,
    report=ReportSpec(
        headline="auroc",
        position=35,
        checks={m: "scorer_check_passed" for m in ("auroc", "auroc_shuffled", "loss_reduction")},
    ),
)
class SAESurprisalTask(LatentTask):
    """AUROC of the explanation's loss reduction, activating vs non-activating windows."""

    METRICS = {**surprisal.METRICS, **scorer_check.check_metrics(CHECK)}
