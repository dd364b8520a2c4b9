"""sae_simulation: can a model that reads only the explanation predict how strongly the latent
fires on each token of held-out windows? (OpenAI's simulator, "all at once"; docs/methods.md,
"Simulation")

Same latents, splits and explanations as every latent task of the run; the simulator model is the
LLM scorer's (`scorer`, `scorer_model`, `scorer_base_url`). The scorer is `scorers/simulation.py`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from sae_interp_tasks.harness import costs, run_stages
from sae_interp_tasks.harness.run_stages import LatentRun, ScorerSettings
from sae_interp_tasks.harness.serve import serve_latents
from sae_interp_tasks.harness.task import LatentTask
from sae_interp_tasks.registry import ReportSpec, task_kind
from sae_interp_tasks.scorers import simulation
from sae_interp_tasks.scorers.simulation import SimulationConfig, Simulator
from sae_interp_tasks.validity import scorer_check
from sae_interp_tasks.validity.scorer_check import CheckResult

KIND = "simulation"
CHECK = "scorer_check_correlation"


@dataclass(frozen=True)
class SimulationSettings(ScorerSettings):
    simulation: SimulationConfig = field(default_factory=SimulationConfig)


def score_simulation(run: LatentRun):
    s: SimulationSettings = run.settings
    client = run_stages.scorer_client(run.context, s.scorer)
    simulator = Simulator(
        client, s.simulation, run.decode, client.single_token_choices(simulation.VALUES)
    )
    scored = simulation.score_simulation(
        [run.splits[lat] for lat in run.latents],
        run.explanations,
        simulator,
        run.seed,
        s.scorer.shuffled_control,
        set(run.owned),
        desc=KIND,
    )
    return run_stages.with_checks(scored, check_simulator(run, simulator))


def check_simulator(run: LatentRun, simulator: Simulator) -> CheckResult | None:
    """The correlation of simulated and true activations over all tokens of the run's known
    answers."""
    s: SimulationSettings = run.settings

    def compute() -> CheckResult:
        splits, explanations = run_stages.check_set(run)
        done = [
            w
            for split in splits
            for w in simulator.simulate(
                explanations[split.latent].text, split.test, 1.0, f"{KIND} check"
            )
            if w.predicted is not None
        ]
        true = np.concatenate([w.true for w in done]) if done else np.zeros(0)
        predicted = np.concatenate([w.predicted for w in done]) if done else np.zeros(0)
        result = scorer_check.correlation(true, predicted, CHECK)
        scorer_check.announce(
            f"sae_{KIND}", simulator.client.name, result, scorer_check.ADVICE_SCORER
        )
        return result

    return run_stages.scorer_check(run, (KIND, s.scorer, s.simulation), compute)


def estimate_simulation(run: LatentRun, counter: costs.PromptCounter) -> costs.Estimate:
    """One read (logprobs) or one written answer (json) per test window, for the explanation and
    the shuffled control, and per window of the known answers."""
    s: SimulationSettings = run.settings
    windows = [ex for lat in run.owned for ex in run.splits[lat].test]
    checked = (
        [ex for split in run_stages.check_set(run)[0] for ex in split.test]
        if s.check.scorer_check
        else []
    )
    variants = 2 if s.scorer.shuffled_control else 1
    total = costs.Estimate()
    for group, times in ((windows, variants), (checked, 1)):
        tables = [
            simulation.table(costs.STAND_IN, [run.decode([t]) for t in ex.tokens.tolist()])
            for ex in group
        ]
        if s.simulation.simulation_mode == "json":
            one = costs.Estimate(
                len(tables),
                sum(counter.text(simulation.prefix(10) + tb) for tb in tables),
                sum(3 * len(ex.tokens) for ex in group),
            )
        else:
            one = counter.reads(simulation.prefix(10), tables)
        total = total.add(one.times(times))
    return total


@task_kind(
    KIND,
    settings=SimulationSettings,
    serve=serve_latents,
    scorer=score_simulation,
    estimate=estimate_simulation,
    report=ReportSpec(
        headline="correlation",
        position=25,
        checks={
            m: "scorer_check_passed"
            for m in simulation.METRICS
            if m not in ("answered_frac", "parse_failures")
        },
    ),
)
class SAESimulationTask(LatentTask):
    """Predicted vs true activations, token by token, from the explanation alone."""

    METRICS = {**simulation.METRICS, **scorer_check.check_metrics(CHECK)}
