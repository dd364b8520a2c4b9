"""sae_intervention: scoring what a latent causes when it is steered (docs/methods.md, "Intervention").

Same latents and auto-interp explanations as the other latent tasks (shared through `memo`);
per latent and target KL, the steering stage (`intervention.py`) finds a strength and writes
continuations, and the scorers (`scorers/intervention.py`) score the auto-interp explanation and
an output explanation (from the tokens the edit promotes), each beside a shuffled control.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from tqdm.auto import tqdm

from sae_interp_tasks import memo
from sae_interp_tasks.aggregations import nanmean, total
from sae_interp_tasks.errors import SaeInterpError
from sae_interp_tasks.intervention import InterventionConfig, intervention_prompts, steer_latents, steering_directions
from sae_interp_tasks.memo import LatentRun, LatentSettings
from sae_interp_tasks.records import ScoredLatent
from sae_interp_tasks.registry import task_kind
from sae_interp_tasks.scorers.classifier import ScorerConfig, derangement
from sae_interp_tasks.scorers.intervention import (InterventionScoringConfig, judge_prompt, judge_sets, output_explanations,
                                                   read_judgement, surprisal_scores)
from sae_interp_tasks.tasks.base import LatentTask

NAN = float("nan")


@dataclass(frozen=True)
class InterventionSettings(LatentSettings):
    scorer: ScorerConfig = field(default_factory=ScorerConfig)  # the judge's chat model
    intervention: InterventionConfig = field(default_factory=InterventionConfig)
    intervention_scoring: InterventionScoringConfig = field(default_factory=InterventionScoringConfig)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.intervention.n_prompts > self.activations.n_sample:
            raise SaeInterpError(
                f"n_intervention_prompts + n_output_prompts ({self.intervention.n_prompts}) cannot exceed n_sample "
                f"({self.activations.n_sample}), the activating windows a latent's prompts are drawn from; lower "
                "them or raise n_sample")


def metric_suffix(target: float, primary: float) -> str:
    """'' for the first target KL; '_kl3' or '_kl0p33' for the others."""
    return "" if target == primary else "_kl" + f"{target:g}".replace(".", "p")


def score_intervention(run: LatentRun) -> dict[int, ScoredLatent]:
    s: InterventionSettings = run.settings
    cfg, backend = s.intervention, run.backend
    decode = lambda ids: backend.tokenizer.decode(list(ids), skip_special_tokens=True)  # noqa: E731
    # each process steers and explains the latents it owns; the shuffled controls and the judge need
    # every latent's explanations and continuations, so those are gathered
    mine, skipped_mine = steer_all(run)
    steered = memo.gathered(backend, mine)
    skipped = set().union(*memo.gathered(backend, {backend.rank: skipped_mine}).values())
    if run.latents and skipped >= set(run.latents):
        raise SaeInterpError(
            f"no latent has the {cfg.n_prompts} activating windows (each cut after its first activating token) that "
            f"n_intervention_prompts + n_output_prompts ask for; raise n_tokens or lower n_intervention_prompts "
            "and n_output_prompts")
    reached = {t: [lat for lat in run.latents if (lat, t) in steered and steered[(lat, t)].reached]
               for t in cfg.targets}
    # output explanations from the promoted tokens
    explainer = None if s.explainer.explainer == "tokens" else memo.client(backend, s.explainer.client_config(backend.device))
    promoted = {(lat, t): [(backend.tokenizer.decode([tok]), gain) for tok, gain in steered[(lat, t)].promoted]
                for t in cfg.targets for lat in reached[t] if lat in run.owned}
    output = memo.gathered(backend, output_explanations(promoted, explainer, s.explainer.explainer_max_tokens))
    texts = {key: _texts(run, res, decode) for key, res in steered.items() if res.reached}
    scores = score_variants(run, reached, output, texts)

    out = {}
    for lat in run.owned:
        metrics, detail = {}, {"skipped_few_prompts": lat in skipped, "targets": {}}
        for t in cfg.targets:
            suffix = metric_suffix(t, cfg.targets[0])
            res = steered.get((lat, t))
            metrics.update({f"{name}{suffix}": NAN for name in VARIANT_METRICS})
            metrics[f"strength{suffix}"] = res.strength if res is not None and res.reached else NAN
            metrics[f"kl{suffix}"] = res.kl if res is not None and res.reached else NAN
            metrics[f"unreached{suffix}"] = float(res is not None and not res.reached)
            metrics.update({f"{name}{suffix}": value for name, value in scores.get((lat, t), {}).get("metrics", {}).items()})
            if res is not None:
                detail["targets"][f"{t:g}"] = _detail(res, texts.get((lat, t)), output.get((lat, t)),
                                                      scores.get((lat, t), {}), decode, backend.tokenizer)
        metrics["skipped_few_prompts"] = float(lat in skipped)
        detail["explanation"] = run.explanations[lat].text
        out[lat] = ScoredLatent(lat, "intervention", run.explanations[lat].text, [], metrics, detail)
    return out


def steer_all(run: LatentRun):
    """Steering results {(latent, target): LatentSteering} of the latents this process owns, and those
    of them with too few prompts."""
    s: InterventionSettings = run.settings
    cfg, backend = s.intervention, run.backend
    contexts = memo.contexts(backend, s, run.seed)
    per_context = s.activations.context_size // s.activations.window
    prompts, skipped = {}, set()
    for lat in run.owned:
        chosen = intervention_prompts(run.selection.state.record(lat), cfg, run.seed, lambda c: contexts[c].numpy(),
                                      s.activations.window, per_context)
        if chosen is None:
            skipped.add(lat)
        else:
            prompts[lat] = chosen
    ready = [lat for lat in run.owned if lat in prompts]
    group_size = max(1, cfg.intervention_batch_size // cfg.n_prompts)
    stop = {backend.tokenizer.eos_token_id}
    steered = {}
    bar = tqdm(total=len(ready), unit="latents", desc="intervention")
    for start in range(0, len(ready), group_size):
        group = ready[start:start + group_size]
        vectors = steering_directions(backend.sae, group)
        steered.update(steer_latents(backend.model, backend.info.hook_name, group, prompts, vectors, cfg, run.seed, stop))
        bar.update(len(group))
    bar.close()
    return steered, skipped


def _texts(run: LatentRun, res, decode) -> dict:
    return {"prompts": [decode(p.tokens) for p in res.prompts], "clean": [decode(c) for c in res.clean],
            "steered": [decode(c) for c in res.steered]}


VARIANT_METRICS = ("score", "score_shuffled", "output_score", "output_score_shuffled",
                   "judge_acc", "judge_acc_shuffled", "output_judge_acc", "output_judge_acc_shuffled")


def score_variants(run: LatentRun, reached: dict, output: dict, texts: dict) -> dict:
    """Per (latent, target): the surprisal and judge scores of the auto-interp and output explanations
    and of their shuffled controls (each latent scored with another latent's explanation)."""
    s: InterventionSettings = run.settings
    backend = run.backend
    scorers = s.intervention_scoring.intervention_scorers
    results: dict = {}
    jobs, keys = [], []
    judge_jobs = []
    for t, lats in reached.items():
        donor = derangement(lats, random.Random(f"{run.seed}:intervention-shuffle:{t}")) if s.scorer.shuffled_control else {}
        for lat in (lat for lat in lats if lat in run.owned):
            variants = {"score": run.explanations[lat].text, "output_score": output[(lat, t)]}
            if lat in donor:
                variants["score_shuffled"] = run.explanations[donor[lat]].text
                variants["output_score_shuffled"] = output[(donor[lat], t)]
            results[(lat, t)] = {"metrics": {}, "explanations": variants, "surprisal": {}, "judge": {}}
            tx = texts[(lat, t)]
            for name, explanation in variants.items():
                if "surprisal" in scorers:
                    jobs.append((explanation, tx["prompts"], tx["clean"], tx["steered"]))
                    keys.append((lat, t, name))
                if "judge" in scorers and len(lats) >= 3:
                    judge_jobs.append((lat, t, name, explanation))
    if jobs:
        client = memo.client(backend, s.intervention_scoring.surprisal_client(backend.device, s.scorer.max_concurrency))
        for (lat, t, name), sc in zip(keys, surprisal_scores(client, jobs)):
            results[(lat, t)]["metrics"][name] = sc.score
            results[(lat, t)]["surprisal"][name] = {"score": sc.score, "stderr": sc.stderr,
                                                    "logprob_clean_steered": sc.per_prompt}
    if judge_jobs:
        prompts, truths = [], []
        n = s.intervention_scoring.judge_continuations
        for lat, t, name, explanation in judge_jobs:
            rng = random.Random(f"{run.seed}:judge:{lat}:{t}:{name}")
            others = rng.sample([o for o in reached[t] if o != lat], 2)
            sets, truth = judge_sets(texts[(lat, t)]["steered"][:n], [texts[(o, t)]["steered"][:n] for o in others], rng)
            prompts.append(judge_prompt(explanation, sets))
            truths.append(truth)
        answers = memo.client(backend, s.scorer.client_config(backend.device)).generate(prompts, desc="judge")
        for (lat, t, name, _), answer, truth in zip(judge_jobs, answers, truths):
            metric = name.replace("score", "judge_acc")
            results[(lat, t)]["metrics"][metric] = read_judgement(answer.text, truth)
            results[(lat, t)]["judge"][metric] = {"answer": answer.text, "truth": truth + 1}
    return results


def _detail(res, texts, output, scores, decode, tokenizer) -> dict:
    detail = {"target_kl": res.target, "strength": res.strength, "kl": round(res.kl, 5), "reached": res.reached,
              "search": [[round(s, 6), round(kl, 5)] for s, kl in res.history],
              "promoted": [[tokenizer.decode([tok]), round(gain, 5)] for tok, gain in res.promoted],
              "output_explanation": output}
    if texts:
        detail["continuations"] = [{"prompt": p, "clean": c, "steered": st} for p, c, st in
                                   zip(texts["prompts"], texts["clean"], texts["steered"])]
    if scores:
        detail.update(explanations=scores["explanations"], surprisal=scores["surprisal"], judge=scores["judge"])
    return detail


def _target_metrics(targets: list[float]) -> dict:
    per_target = {**{name: (nanmean, not name.endswith("_shuffled")) for name in VARIANT_METRICS},
                  "strength": (nanmean, False), "kl": (nanmean, False), "unreached": (total, False)}
    return {f"{name}{metric_suffix(t, targets[0])}": spec for t in targets for name, spec in per_target.items()}


@task_kind("intervention", settings=InterventionSettings, scorer=score_intervention, headline="score")
class SAEInterventionTask(LatentTask):
    """Steer each latent to a target KL; does its explanation predict what the model then writes?"""

    METRICS = {**_target_metrics([1.0]), "skipped_few_prompts": (total, False)}

    def metric_specs(self) -> dict:
        """This run's metrics: the class's, plus suffixed ones for every extra target KL."""
        targets = self.settings.intervention.targets
        return {**_target_metrics(targets), "skipped_few_prompts": (total, False), "skipped_dead": (total, False)}

    def process_results(self, doc, results) -> dict:
        response = results[0]
        values = {name: response.metrics.get(name, NAN) for name in self.metric_specs()}
        values["skipped_dead"] = response.skipped_before
        return values

    def aggregation(self) -> dict:
        return {name: agg for name, (agg, _) in self.metric_specs().items()}

    def higher_is_better(self) -> dict:
        return {name: better for name, (_, better) in self.metric_specs().items()}

    @classmethod
    def response_detail(cls, scored: ScoredLatent, run: LatentRun) -> dict:
        return scored.detail

