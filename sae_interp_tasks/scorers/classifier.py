"""The base of scorers that show an LLM held-out windows and read a yes/no verdict per window
(detection, fuzzing: `scorers/detection.py`, `scorers/fuzzing.py`).

A variant says what the scorer decides for each window (`rules`) and how the windows are shown
(`shown`: plain, or with tokens marked). Several windows go into one prompt; the scorer answers with
a list like [1, 0, 0, 1, 0]. With logprobs, each listed digit's P(1) / (P(1) + P(0)) is the window's
probability (then AUROC too). A batch whose answer cannot be parsed is a failure: its windows get no
prediction, are counted, and are left out of the metrics. Every latent is also scored with another
latent's explanation (the shuffled control), which gives the scorer's chance level.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from sae_interp_tasks.aggregations import nanmean, total
from sae_interp_tasks.clients import ClientConfig, Completion, LLMClient, Prompt
from sae_interp_tasks.config import StageConfig, option, positive
from sae_interp_tasks.records import (
    Example,
    ExampleSplit,
    Explanation,
    ScoredLatent,
    WindowJudgement,
)
from sae_interp_tasks.scorers import metrics
from sae_interp_tasks.stages.controls import shuffled_donors
from sae_interp_tasks.stages.examples import highlight

Decode = Callable[[list[int]], str]

# the per-latent metrics every window classifier reports: name -> (aggregation, higher_is_better)
METRICS = {
    "balanced_acc": (nanmean, True),
    "f1": (nanmean, True),
    "precision": (nanmean, True),
    "recall": (nanmean, True),
    "auroc": (nanmean, True),
    "balanced_acc_shuffled": (nanmean, False),
    "auroc_shuffled": (nanmean, False),
    "answered_frac": (nanmean, True),
    "parse_failures": (total, False),
    **{f"recall_decile{d}": (nanmean, True) for d in range(1, 11)},
}


@dataclass(frozen=True)
class ScorerConfig(StageConfig):
    # oracle: validity.oracle, known-answer SAEs only
    scorer: str = option("hf", choices=("hf", "openai", "oracle"))
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
        return ClientConfig(
            kind=self.scorer,
            model=self.scorer_model,
            base_url=self.scorer_base_url,
            api_key_env=self.scorer_api_key_env,
            max_concurrency=self.max_concurrency,
            device=device,
        )


@dataclass(frozen=True)
class Shown:
    """One window as the scorer sees it, with the truth."""

    example: Example
    label: bool
    marks: np.ndarray | None  # fuzzing only


_LIST = re.compile(r"\[([^\[\]]*)\]")


def parse_answer(
    completion: Completion, n: int, use_probs: bool = True
) -> tuple[list[bool] | None, list[float] | None]:
    """Predictions (and probabilities when logprobs came back) for n windows; (None, None) if
    unparseable."""
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


class WindowClassifier:
    """A scorer that labels windows yes/no from an explanation. Subclasses set `rules` (what the
    scorer decides for each window) and may override `shown` (how the windows are presented)."""

    rules: str = ""

    def shown(self, split: ExampleSplit, rng: random.Random, threshold: float) -> list[Shown]:
        """The latent's test windows as the scorer sees them, in a seeded order (plain text
        here)."""
        items = [Shown(ex, True, None) for ex in split.test_activating]
        items += [Shown(ex, False, None) for ex in split.test_non_activating]
        rng.shuffle(items)
        return items

    def prompt(
        self, explanation: str, batch: list[Shown], decode: Decode, cfg: ScorerConfig
    ) -> Prompt:
        n = len(batch)
        system = (
            "You check an explanation of a feature of a language model against text examples. For "
            "each "
            f"example, {self.rules} Answer with a Python list of {n} numbers, one per example in "
            "order, "
            f"written [{', '.join(['x'] * n)}] with each x replaced by 1 (yes) or 0 (no), and "
            "nothing else."
        )
        lines = [f"Example {i}: {shown_text(item, decode)}" for i, item in enumerate(batch, 1)]
        user = (
            f"Explanation: {explanation}\n\n" + "\n".join(lines) + f"\n\nYour list of {n} numbers:"
        )
        return Prompt(
            messages=(("system", system), ("user", user)),
            max_tokens=cfg.scorer_max_tokens,
            temperature=0.0,
            logprobs=cfg.use_logprobs,
            prefill="[",
            choice_list=n if cfg.constrained else 0,
        )

    def score(
        self,
        splits: list[ExampleSplit],
        explanations: dict[int, Explanation],
        cfg: ScorerConfig,
        client: LLMClient,
        decode: Decode,
        seed: int,
        stream: str,
        threshold: float = 0.3,
        owned: set[int] | None = None,
    ) -> dict[int, ScoredLatent]:
        """Score every latent's explanation (and, as chance level, a shuffled one) with one batched
        client call. `stream` names the random stream (the asking task's kind: tasks asking with
        the same name see the same windows); with `owned`, only those latents (shuffled donors are
        still drawn among all)."""
        donor = shuffled_donors([s.latent for s in splits], seed, cfg.shuffled_control)
        splits = [s for s in splits if owned is None or s.latent in owned]
        jobs = []  # (latent, variant, batch of Shown)
        for split in splits:
            shown = self.shown(split, random.Random(f"{seed}:{stream}:{split.latent}"), threshold)
            variants = [("real", explanations[split.latent].text)]
            if split.latent in donor:
                variants.append(("shuffled", explanations[donor[split.latent]].text))
            for variant, text in variants:
                for start in range(0, len(shown), cfg.windows_per_prompt):
                    jobs.append(
                        (split.latent, variant, text, shown[start : start + cfg.windows_per_prompt])
                    )
        answers = client.generate(
            [self.prompt(text, batch, decode, cfg) for _, _, text, batch in jobs], desc=stream
        )
        judged, detail = _read_answers([s.latent for s in splits], jobs, answers, cfg, decode)
        return {
            split.latent: _scored(
                split.latent, explanations[split.latent].text, judged, detail[split.latent]
            )
            for split in splits
        }


def shown_text(item: Shown, decode: Decode) -> str:
    """A shown window's text, its marked tokens <<like this>> where it has marks."""
    return (
        highlight(item.example.tokens, item.marks, decode)
        if item.marks is not None
        else decode(item.example.tokens.tolist())
    )


def _read_answers(
    latents: list[int], jobs: list, answers: list[Completion], cfg: ScorerConfig, decode: Decode
):
    """Per (latent, variant) the window judgements; per latent what --log_samples shows of its real
    variant."""
    judged: dict[tuple[int, str], list[WindowJudgement]] = {}
    detail = {
        lat: {"windows": [], "answers": [], "parse_failures": 0, "batches": 0} for lat in latents
    }
    for (latent, variant, _, batch), answer in zip(jobs, answers, strict=True):
        preds, probs = parse_answer(answer, len(batch), cfg.use_logprobs)
        out = judged.setdefault((latent, variant), [])
        for i, item in enumerate(batch):
            out.append(
                WindowJudgement(
                    label=item.label,
                    prediction=None if preds is None else preds[i],
                    probability=None if probs is None else probs[i],
                    decile=item.example.decile,
                )
            )
        if variant != "real":
            continue
        d = detail[latent]
        d["batches"] += 1
        d["parse_failures"] += preds is None
        d["answers"].append(answer.text if answer.text is not None else f"<failed: {answer.error}>")
        for i, item in enumerate(batch):
            d["windows"].append(
                {
                    "text": shown_text(item, decode),
                    "max_act": round(item.example.max_act, 4),
                    "decile": item.example.decile,
                    "label": item.label,
                    "prediction": None if preds is None else preds[i],
                    "probability": None if probs is None else round(probs[i], 4),
                    # per token, for exports that show windows token by token (delphi's scores)
                    "str_tokens": [decode([t]) for t in item.example.tokens.tolist()],
                    "activations": [round(float(a), 4) for a in item.example.acts.tolist()],
                }
            )
    return judged, detail


def _scored(latent: int, explanation: str, judged: dict, detail: dict) -> ScoredLatent:
    real = judged[(latent, "real")]
    values = metrics.classification_metrics(real)
    values["parse_failures"] = detail["parse_failures"]
    shuffled = judged.get((latent, "shuffled"))
    values["balanced_acc_shuffled"] = (
        metrics.balanced_accuracy(shuffled) if shuffled else metrics.NAN
    )
    values["auroc_shuffled"] = metrics.judgement_auroc(shuffled) if shuffled else metrics.NAN
    return ScoredLatent(latent, explanation, real, values, detail)
