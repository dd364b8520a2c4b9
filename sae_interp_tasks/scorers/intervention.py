"""Scoring explanations by what steering a latent does to the model's output.

- surprisal (Paulo et al. 2024, section 3.3.5): a base language model reads a few-shot prompt
  that ends in a passage (a prompt and its continuation) and the claim 'The above passage contains
  an amplified amount of "<explanation>"'. A latent's score is the mean over its scoring prompts of
  surprisal(explanation | clean continuation) - surprisal(explanation | steered continuation), in
  nats: how much more the explanation is expected after text the steered model wrote.
- judge (optional; output-centric descriptions, Gur-Arieh et al. 2025): a chat model reads the
  explanation and three sets of steered continuations (this latent's and two others' at the same
  target KL, in a seeded order) and names the set the explanation describes; chance is 1/3.
The output explanation (what the edit makes the model write, from the tokens it promotes) comes
from `stages/explainers.py`; `score_steering` scores both kinds of explanation for every latent.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from sae_interp_tasks import stats
from sae_interp_tasks.aggregations import nanmean, total
from sae_interp_tasks.clients import LLMClient, Prompt
from sae_interp_tasks.config import StageConfig, option, positive
from sae_interp_tasks.records import ScoredLatent
from sae_interp_tasks.stages.controls import shuffled_donors

INTERVENTION_SCORERS = ("surprisal", "judge")
CLAIM = 'The above passage contains an amplified amount of "'

# our own few-shot passages: text in which one concept is unmistakably over-represented
FEW_SHOT = (
    (
        "The harbour smelled of salt and tar. Boats, boats everywhere: fishing boats, sailing "
        "boats, a rusty ferry "
        "and three rowing boats tied to the pier.",
        "boats and ships",
    ),
    (
        "def load(path):\n    with open(path) as f:\n        return f.read()\n# open the file, "
        "read the file, close "
        "the file, file after file",
        "reading files in code",
    ),
    (
        "She was so happy, so glad, delighted really; the joy of the morning made everyone "
        "cheerful and smiling.",
        "happiness and joy",
    ),
    (
        "In 1914, 1918, 1939 and 1945 the dates kept piling up: 12 March, 3 April, the year 1066 "
        "and the decade "
        "of the 1960s.",
        "years and dates",
    ),
)


@dataclass(frozen=True)
class InterventionScoringConfig(StageConfig):
    """Which scorers read the steered text (the surprisal reader's model:
    scorers.surprisal.ReaderConfig)."""

    intervention_scorers: list = option(["surprisal"], choices=INTERVENTION_SCORERS)
    judge_continuations: int = positive(5)  # continuations shown per set to the judge


# --- surprisal
# ----------------------------------------------------------------------------------------
def surprisal_prefix() -> str:
    return "".join(f'<PASSAGE>\n{text}\n\n{CLAIM}{about}"\n\n' for text, about in FEW_SHOT)


def surprisal_request(
    prompt_text: str, continuation_text: str, explanation: str
) -> tuple[str, str]:
    """(context, target): the passage and the claim's lead, then the explanation and its closing
    quote."""
    return f"<PASSAGE>\n{prompt_text}{continuation_text}\n\n{CLAIM}", f'{explanation}"'


@dataclass(frozen=True)
class SurprisalScore:
    score: float  # mean over prompts of surprisal(clean) - surprisal(steered), nats
    stderr: float
    per_prompt: list[tuple[float | None, float | None]]  # (log P clean, log P steered)


def surprisal_scores(
    client: LLMClient, jobs: list[tuple[str, list[str], list[str], list[str]]]
) -> list[SurprisalScore]:
    """One score per job (explanation, prompt texts, clean texts, steered texts), all asked at
    once."""
    pairs = []
    for explanation, prompts, clean, steered in jobs:
        for p, c, s in zip(prompts, clean, steered, strict=True):
            pairs += [surprisal_request(p, c, explanation), surprisal_request(p, s, explanation)]
    values = client.continuation_logprobs(surprisal_prefix(), pairs, desc="surprisal")
    out, i = [], 0
    for _, prompts, _, _ in jobs:
        per = [(values[i + 2 * k], values[i + 2 * k + 1]) for k in range(len(prompts))]
        i += 2 * len(prompts)
        diffs = np.array([s - c for c, s in per if c is not None and s is not None])
        if len(diffs) == 0:
            out.append(SurprisalScore(float("nan"), float("nan"), per))
            continue
        value, stderr, _ = stats.mean_and_stderr(diffs)
        out.append(SurprisalScore(value, stderr, per))
    return out


# --- the judge
# -------------------------------------------------------------------------------------------
JUDGE_SYSTEM = (
    "A feature inside a language model was amplified while it wrote short continuations. You get a "
    "description of a feature and three numbered sets of continuations; only one set was written "
    "with "
    "the described feature amplified. Answer with the number of that set only."
)
_SET = re.compile(r"\b([123])\b")


def judge_prompt(explanation: str, sets: list[list[str]]) -> Prompt:
    body = "\n\n".join(
        f"Set {i}:\n" + "\n".join(f"- {' '.join(text.split())}" for text in texts)
        for i, texts in enumerate(sets, 1)
    )
    return Prompt(
        messages=(
            ("system", JUDGE_SYSTEM),
            ("user", f"Description: {explanation}\n\n{body}\n\nWhich set?"),
        ),
        max_tokens=4,
        temperature=0.0,
    )


def judge_sets(
    own: list[str], others: list[list[str]], rng: random.Random
) -> tuple[list[list[str]], int]:
    """Three sets in a seeded order, and the index of this latent's set."""
    sets = [own] + others
    order = list(range(len(sets)))
    rng.shuffle(order)
    return [sets[i] for i in order], order.index(0)


def read_judgement(text: str | None, truth: int) -> float:
    """1.0 when the judge named this latent's set, 0.0 when another, NaN when no set number was
    given."""
    match = _SET.search(text or "")
    return float("nan") if match is None else float(int(match.group(1)) - 1 == truth)


# --- scoring every latent's steering
# ----------------------------------------------------------------------
NAN = float("nan")
VARIANT_METRICS = (
    "score",
    "score_shuffled",
    "output_score",
    "output_score_shuffled",
    "judge_acc",
    "judge_acc_shuffled",
    "output_judge_acc",
    "output_judge_acc_shuffled",
)


def metric_suffix(target: float, primary: float) -> str:
    """'' for the first target KL; '_kl3' or '_kl0p33' for the others."""
    return "" if target == primary else "_kl" + f"{target:g}".replace(".", "p")


def intervention_metrics(targets: list[float]) -> dict:
    """The per-latent metrics for these target KLs: name -> (aggregation, higher_is_better)."""
    per_target = {
        **{name: (nanmean, not name.endswith("_shuffled")) for name in VARIANT_METRICS},
        "strength": (nanmean, False),
        "kl": (nanmean, False),
        "unreached": (total, False),
    }
    return {
        **{
            f"{name}{metric_suffix(t, targets[0])}": spec
            for t in targets
            for name, spec in per_target.items()
        },
        "skipped_few_prompts": (total, False),
    }


@dataclass(frozen=True)
class SteeredTextScorers:
    """The scorers of steered text, and their clients (made on first use, so an unused one never
    loads)."""

    config: InterventionScoringConfig
    shuffled_control: bool
    surprisal_client: Callable[[], LLMClient]
    judge_client: Callable[[], LLMClient]


def score_steering(
    latents: list[int],
    owned: tuple[int, ...],
    explanations: dict[int, str],
    steered: dict,
    skipped: set[int],
    output: dict,
    targets: list[float],
    scorers: SteeredTextScorers,
    decode: Callable,
    token_text: Callable[[int], str],
    seed: int,
) -> dict[int, ScoredLatent]:
    """The owned latents' scores from every latent's steering results {(latent, target):
    LatentSteering} and output explanations {(latent, target): text} (the shuffled controls and the
    judge use them all)."""
    reached = {
        t: [lat for lat in latents if (lat, t) in steered and steered[(lat, t)].reached]
        for t in targets
    }
    texts = {key: steered_texts(res, decode) for key, res in steered.items() if res.reached}
    scores = score_variants(owned, explanations, reached, output, texts, scorers, seed)
    out = {}
    for lat in owned:
        metrics, detail = {}, {"skipped_few_prompts": lat in skipped, "targets": {}}
        for t in targets:
            suffix = metric_suffix(t, targets[0])
            res = steered.get((lat, t))
            metrics.update({f"{name}{suffix}": NAN for name in VARIANT_METRICS})
            metrics[f"strength{suffix}"] = res.strength if res is not None and res.reached else NAN
            metrics[f"kl{suffix}"] = res.kl if res is not None and res.reached else NAN
            metrics[f"unreached{suffix}"] = float(res is not None and not res.reached)
            metrics.update(
                {
                    f"{name}{suffix}": v
                    for name, v in scores.get((lat, t), {}).get("metrics", {}).items()
                }
            )
            if res is not None:
                detail["targets"][f"{t:g}"] = _detail(
                    res,
                    texts.get((lat, t)),
                    output.get((lat, t)),
                    scores.get((lat, t), {}),
                    token_text,
                )
        metrics["skipped_few_prompts"] = float(lat in skipped)
        detail["explanation"] = explanations[lat]
        out[lat] = ScoredLatent(lat, explanations[lat], [], metrics, detail)
    return out


def steered_texts(res, decode: Callable) -> dict:
    return {
        "prompts": [decode(p.tokens) for p in res.prompts],
        "clean": [decode(c) for c in res.clean],
        "steered": [decode(c) for c in res.steered],
    }


def score_variants(
    owned: tuple[int, ...],
    explanations: dict[int, str],
    reached: dict,
    output: dict,
    texts: dict,
    scorers: SteeredTextScorers,
    seed: int,
) -> dict:
    """Per (latent, target) of the owned latents: the surprisal and judge scores of the auto-interp
    and output explanations and of their shuffled controls (each latent scored with another
    latent's)."""
    results: dict = {}
    jobs: list = []  # (latent, target, variant name, explanation)
    for t, lats in reached.items():
        donor = shuffled_donors(
            lats, seed, scorers.shuffled_control, stream=f"intervention-shuffle:{t}"
        )
        for lat in (lat for lat in lats if lat in owned):
            variants = {"score": explanations[lat], "output_score": output[(lat, t)]}
            if lat in donor:
                variants["score_shuffled"] = explanations[donor[lat]]
                variants["output_score_shuffled"] = output[(donor[lat], t)]
            results[(lat, t)] = {
                "metrics": {},
                "explanations": variants,
                "surprisal": {},
                "judge": {},
            }
            jobs += [(lat, t, name, explanation) for name, explanation in variants.items()]
    which = scorers.config.intervention_scorers
    if "surprisal" in which and jobs:
        _surprisal(jobs, texts, scorers.surprisal_client(), results)
    judged = [job for job in jobs if len(reached[job[1]]) >= 3]
    if "judge" in which and judged:
        _judge(judged, reached, texts, scorers, seed, results)
    return results


def _surprisal(jobs: list, texts: dict, client: LLMClient, results: dict) -> None:
    asked = [
        (
            explanation,
            texts[(lat, t)]["prompts"],
            texts[(lat, t)]["clean"],
            texts[(lat, t)]["steered"],
        )
        for lat, t, _, explanation in jobs
    ]
    for (lat, t, name, _), sc in zip(jobs, surprisal_scores(client, asked), strict=True):
        results[(lat, t)]["metrics"][name] = sc.score
        results[(lat, t)]["surprisal"][name] = {
            "score": sc.score,
            "stderr": sc.stderr,
            "logprob_clean_steered": sc.per_prompt,
        }


def _judge(
    jobs: list, reached: dict, texts: dict, scorers: SteeredTextScorers, seed: int, results: dict
) -> None:
    prompts, truths = [], []
    n = scorers.config.judge_continuations
    for lat, t, name, explanation in jobs:
        rng = random.Random(f"{seed}:judge:{lat}:{t}:{name}")
        others = rng.sample([o for o in reached[t] if o != lat], 2)
        sets, truth = judge_sets(
            texts[(lat, t)]["steered"][:n], [texts[(o, t)]["steered"][:n] for o in others], rng
        )
        prompts.append(judge_prompt(explanation, sets))
        truths.append(truth)
    answers = scorers.judge_client().generate(prompts, desc="judge")
    for (lat, t, name, _), answer, truth in zip(jobs, answers, truths, strict=True):
        metric = name.replace("score", "judge_acc")
        results[(lat, t)]["metrics"][metric] = read_judgement(answer.text, truth)
        results[(lat, t)]["judge"][metric] = {"answer": answer.text, "truth": truth + 1}


def _detail(res, texts, output, scores, token_text: Callable[[int], str]) -> dict:
    detail = {
        "target_kl": res.target,
        "strength": res.strength,
        "kl": round(res.kl, 5),
        "reached": res.reached,
        "search": [[round(s, 6), round(kl, 5)] for s, kl in res.history],
        "promoted": [[token_text(tok), round(gain, 5)] for tok, gain in res.promoted],
        "output_explanation": output,
    }
    if texts:
        detail["continuations"] = [
            {"prompt": p, "clean": c, "steered": st}
            for p, c, st in zip(texts["prompts"], texts["clean"], texts["steered"], strict=True)
        ]
    if scores:
        detail.update(
            explanations=scores["explanations"],
            surprisal=scores["surprisal"],
            judge=scores["judge"],
        )
    return detail
