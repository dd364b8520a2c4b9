"""Detection and fuzzing: an LLM scorer reads the explanation and labels held-out windows yes/no.

Detection shows plain windows: does the latent fire anywhere here? Fuzzing shows every window
with some tokens marked: activating windows with their true activating tokens, non-activating
ones with as many random tokens as an activating window has on average; is this the marking
the explanation describes? Several windows go into one prompt; the scorer answers with a list
like [1, 0, 0, 1, 0]. With logprobs, each listed digit's P(1) / (P(1) + P(0)) is the window's
probability (then AUROC too). A batch whose answer cannot be parsed is a failure: its windows
get no prediction, are counted, and are left out of the metrics.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from sae_interp_tasks import metrics
from sae_interp_tasks.clients import ClientConfig, Completion, LLMClient, Prompt
from sae_interp_tasks.config import StageConfig, option, positive
from sae_interp_tasks.errors import SaeInterpError
from sae_interp_tasks.examples import activating_marks, highlight
from sae_interp_tasks.records import Example, ExampleSplit, Explanation, ScoredLatent, WindowJudgement

METHODS = ("detection", "fuzzing")
Decode = Callable[[list[int]], str]

_RULES = {
    "detection": ("decide for each example whether the feature fires on any of its tokens, judging only by "
                  "the explanation."),
    "fuzzing": ("some tokens of each example are marked <<like this>>. Decide for each example whether the "
                "marked tokens are exactly what the explanation describes (the feature fires on them)."),
}


@dataclass(frozen=True)
class ScorerConfig(StageConfig):
    scorer: str = option("hf", choices=("hf", "openai"))
    scorer_model: str = "HuggingFaceTB/SmolLM2-135M-Instruct"
    scorer_base_url: str | None = None
    scorer_api_key_env: str = "OPENAI_API_KEY"  # the NAME of the variable holding the key
    windows_per_prompt: int = positive(5)
    use_logprobs: bool = True
    # in-process scorers (hf) may only answer "[d, d, ...]" with d in 0/1 (constrained decoding,
    # as vLLM's guided decoding does), reading P(1) at each digit; endpoint scorers answer freely
    constrained: bool = True
    scorer_max_tokens: int = positive(24)
    shuffled_control: bool = True  # also score every latent with another latent's explanation
    max_concurrency: int = positive(8)  # requests in flight to an endpoint

    def client_config(self, device: str = "cpu") -> ClientConfig:
        return ClientConfig(kind=self.scorer, model=self.scorer_model, base_url=self.scorer_base_url,
                            api_key_env=self.scorer_api_key_env, max_concurrency=self.max_concurrency,
                            device=device)


@dataclass(frozen=True)
class Shown:
    """One window as the scorer sees it, with the truth."""

    example: Example
    label: bool
    marks: np.ndarray | None  # fuzzing only


def windows_to_show(split: ExampleSplit, method: str, rng: random.Random, threshold: float) -> list[Shown]:
    shown = [Shown(ex, True, None) for ex in split.test_activating]
    shown += [Shown(ex, False, None) for ex in split.test_non_activating]
    if method == "fuzzing":
        true_marks = [activating_marks(ex, threshold) for ex in split.test_activating]
        n_marked = max(1, round(float(np.mean([m.sum() for m in true_marks]))) if true_marks else 1)
        fuzzed = []
        for item in shown:
            if item.label:
                marks = activating_marks(item.example, threshold)
            else:
                marks = np.zeros(len(item.example.tokens), dtype=bool)
                marks[rng.sample(range(len(marks)), min(n_marked, len(marks)))] = True
            fuzzed.append(Shown(item.example, item.label, marks))
        shown = fuzzed
    rng.shuffle(shown)
    return shown


def scorer_prompt(explanation: str, batch: list[Shown], method: str, decode: Decode, cfg: ScorerConfig) -> Prompt:
    n = len(batch)
    system = (f"You check an explanation of a feature of a language model against text examples. For each example, "
              f"{_RULES[method]} Answer with a Python list of {n} numbers, one per example in order, written "
              f"[{', '.join(['x'] * n)}] with each x replaced by 1 (yes) or 0 (no), and nothing else.")
    lines = []
    for i, item in enumerate(batch, 1):
        text = highlight(item.example.tokens, item.marks, decode) if item.marks is not None else decode(item.example.tokens.tolist())
        lines.append(f"Example {i}: {text}")
    user = f"Explanation: {explanation}\n\n" + "\n".join(lines) + f"\n\nYour list of {n} numbers:"
    return Prompt(messages=(("system", system), ("user", user)), max_tokens=cfg.scorer_max_tokens,
                  temperature=0.0, logprobs=cfg.use_logprobs, prefill="[",
                  choice_list=n if cfg.constrained else 0)


_LIST = re.compile(r"\[([^\[\]]*)\]")


def parse_answer(completion: Completion, n: int, use_probs: bool = True) -> tuple[list[bool] | None, list[float] | None]:
    """Predictions (and probabilities when logprobs came back) for n windows; (None, None) if unparseable."""
    if completion.text is None:
        return None, None
    match = _LIST.search(completion.text)
    if not match:
        return None, None
    items = [x.strip() for x in match.group(1).split(",") if x.strip()]
    if len(items) != n or any(x not in ("0", "1") for x in items):
        return None, None
    preds = [x == "1" for x in items]
    if not use_probs:
        return preds, None
    if completion.choice_probs is not None:  # a constrained answer: P(1) read at each digit
        return preds, (completion.choice_probs if len(completion.choice_probs) == n else None)
    return preds, _digit_probabilities(completion, n)


def _digit_probabilities(completion: Completion, n: int) -> list[float] | None:
    """P(1) / (P(1) + P(0)) at each generated 0/1 digit, from the per-token top logprobs."""
    if not completion.top_logprobs:
        return None
    probs = []
    for alternatives in completion.top_logprobs:
        if not alternatives:
            continue
        chosen = max(alternatives, key=alternatives.get).strip()
        if "]" in chosen:  # the list has ended: digits after it are prose, not answers
            break
        if chosen not in ("0", "1"):
            continue
        p = {"0": 0.0, "1": 0.0}
        for tok, lp in alternatives.items():
            if tok.strip() in p:
                p[tok.strip()] += math.exp(lp)
        probs.append(p["1"] / (p["0"] + p["1"]))
    return probs if len(probs) == n else None


def derangement(latents: list[int], rng: random.Random) -> dict[int, int]:
    """Each latent -> another latent (whose explanation it borrows for the shuffled control)."""
    if len(latents) < 2:
        return {}
    order = list(latents)
    rng.shuffle(order)
    return {order[i]: order[(i + 1) % len(order)] for i in range(len(order))}


def score(method: str, splits: list[ExampleSplit], explanations: dict[int, Explanation], cfg: ScorerConfig,
          client: LLMClient, decode: Decode, seed: int, threshold: float = 0.3,
          owned: set[int] | None = None) -> dict[int, ScoredLatent]:
    """Score every latent's explanation (and, as chance level, a shuffled one) with one batched client
    call; with `owned`, only those latents (the shuffled donors are still drawn among all)."""
    if method not in METHODS:
        raise SaeInterpError(f"method must be one of {METHODS}, got {method!r}")
    donor = derangement([s.latent for s in splits], random.Random(f"{seed}:shuffle")) if cfg.shuffled_control else {}
    splits = [s for s in splits if owned is None or s.latent in owned]
    jobs = []  # (latent, variant, explanation text, batch of Shown)
    for split in splits:
        shown = windows_to_show(split, method, random.Random(f"{seed}:{method}:{split.latent}"), threshold)
        variants = [("real", explanations[split.latent].text)]
        if split.latent in donor:
            variants.append(("shuffled", explanations[donor[split.latent]].text))
        for variant, text in variants:
            for start in range(0, len(shown), cfg.windows_per_prompt):
                jobs.append((split.latent, variant, text, shown[start:start + cfg.windows_per_prompt]))
    prompts = [scorer_prompt(text, batch, method, decode, cfg) for _, _, text, batch in jobs]
    answers = client.generate(prompts, desc=method)

    judged: dict[tuple[int, str], list[WindowJudgement]] = {}
    detail: dict[int, dict] = {s.latent: {"windows": [], "answers": [], "parse_failures": 0, "batches": 0} for s in splits}
    for (latent, variant, text, batch), answer in zip(jobs, answers, strict=True):
        preds, probs = parse_answer(answer, len(batch), cfg.use_logprobs)
        out = judged.setdefault((latent, variant), [])
        for i, item in enumerate(batch):
            out.append(WindowJudgement(label=item.label, prediction=None if preds is None else preds[i],
                                       probability=None if probs is None else probs[i], decile=item.example.decile))
        if variant == "real":
            d = detail[latent]
            d["batches"] += 1
            d["parse_failures"] += preds is None
            d["answers"].append(answer.text if answer.text is not None else f"<failed: {answer.error}>")
            for i, item in enumerate(batch):
                d["windows"].append({
                    "text": highlight(item.example.tokens, item.marks, decode) if item.marks is not None
                    else decode(item.example.tokens.tolist()),
                    "max_act": round(item.example.max_act, 4), "decile": item.example.decile, "label": item.label,
                    "prediction": None if preds is None else preds[i],
                    "probability": None if probs is None else round(probs[i], 4)})

    scored = {}
    for split in splits:
        real = judged[(split.latent, "real")]
        values = metrics.classification_metrics(real)
        values["parse_failures"] = detail[split.latent]["parse_failures"]
        shuffled = judged.get((split.latent, "shuffled"))
        values["balanced_acc_shuffled"] = metrics.balanced_accuracy(shuffled) if shuffled else metrics.NAN
        values["auroc_shuffled"] = metrics.judgement_auroc(shuffled) if shuffled else metrics.NAN
        scored[split.latent] = ScoredLatent(split.latent, method, explanations[split.latent].text, real, values,
                                            detail[split.latent])
    return scored
