"""Intruder: a scorer that needs no explanation (delphi's intruder scoring, arXiv 2507.08473).

The scorer sees `intruder_windows` held-out windows: all but one are activating windows of the
latent from one band of its activations (the bands cut its test windows by strength, strongest
first, and the questions cycle through them), and one, put at a random place, is the intruder: a
non-activating window (`intruder_source: non_activating`) or an activating window of another latent
(`other_latent`). With `intruder_highlight` each window's activating tokens are marked <<like
this>>, the intruder from the non-activating pool as many random tokens as the others average (so
marks alone do not give it away). The scorer names the intruder; its accuracy is the latent's score,
1/intruder_windows its chance level. As a control (`accuracy_shuffled`), as many questions whose
windows all come from different other latents, one of them called the intruder at random: no
scorer can do better than chance there, so it shows the chance level as this scorer and these
windows reach it.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass

import numpy as np

from sae_interp_tasks.aggregations import nanmean, total
from sae_interp_tasks.clients import Completion, Prompt
from sae_interp_tasks.config import StageConfig, option, positive
from sae_interp_tasks.records import Example, ExampleSplit, ScoredLatent
from sae_interp_tasks.scorers.classifier import Decode, Shown, shown_text
from sae_interp_tasks.stages.examples import activating_marks

INTRUDER_SOURCES = ("non_activating", "other_latent")
QUESTION = "Which example is the intruder?"
# the per-latent metrics: name -> (aggregation, higher_is_better)
METRICS = {
    "accuracy": (nanmean, True),
    "accuracy_shuffled": (nanmean, False),
    "accuracy_chance": (nanmean, False),
    "prob_intruder": (nanmean, True),
    "answered_frac": (nanmean, True),
    "parse_failures": (total, False),
}


@dataclass(frozen=True)
class IntruderConfig(StageConfig):
    # windows per question, the intruder one of them (answered with one digit)
    intruder_windows: int = option(5, min=3, max=9)
    intruder_questions: int = positive(10)  # questions per latent
    intruder_quantiles: int = positive(5)  # activation bands the questions cycle through
    intruder_source: str = option("non_activating", choices=INTRUDER_SOURCES)
    intruder_highlight: bool = True  # mark each window's activating tokens <<like this>>


@dataclass(frozen=True)
class Question:
    shown: tuple[Shown, ...]  # label True on the intruder
    intruder: int  # its place, from 0
    band: int  # 1 = the strongest activations

    @property
    def chance(self) -> float:
        return 1.0 / len(self.shown)


def bands(examples: list[Example], n_bands: int, need: int) -> list[list[Example]]:
    """The activating windows cut into bands by strength (strongest first), each widened around its
    middle to at least `need` windows."""
    ranked = sorted(examples, key=lambda e: e.max_act, reverse=True)
    m, out = len(ranked), []
    for b in range(min(n_bands, m)):
        lo, hi = b * m // n_bands, (b + 1) * m // n_bands
        if hi - lo < need:
            lo = max(0, min((lo + hi) // 2 - need // 2, m - need))
            hi = lo + need
        out.append(ranked[lo:hi])
    return out


def questions(
    split: ExampleSplit,
    others: dict[int, ExampleSplit],
    cfg: IntruderConfig,
    threshold: float,
    rng: random.Random,
    shuffled: bool = False,
) -> list[Question]:
    """A latent's questions; with `shuffled`, the control's: as many questions, each of one
    activating window from each of `intruder_windows` other latents, one of them called the
    intruder (so any scorer is right 1 time in `intruder_windows`, whatever the latents mean). []
    when the latent (or the run, for the control) has too few windows."""
    need = cfg.intruder_windows - 1
    if len(split.test_activating) < need:
        return []
    groups = bands(split.test_activating, cfg.intruder_quantiles, need)
    pool = sorted(lat for lat in others if others[lat].test_activating)  # latents to draw from
    if shuffled and len(pool) < cfg.intruder_windows:
        return []
    out = []
    for i, intruder in enumerate(_intruders(split, others, pool, cfg, rng)):
        if shuffled:
            picks = [
                rng.choice(others[lat].test_activating)
                for lat in rng.sample(pool, cfg.intruder_windows)
            ]
            windows, intruder = picks[:-1], picks[-1]
        else:
            windows = rng.sample(groups[i % len(groups)], need)
        out.append(_assemble(windows, intruder, 1 + i % len(groups), cfg, threshold, rng))
    return out


def _intruders(split: ExampleSplit, others: dict, donors: list, cfg: IntruderConfig, rng):
    """The intruder window of each question (their number is the number of questions); `donors`:
    the other latents with activating windows."""
    if cfg.intruder_source == "non_activating":
        pool = list(split.test_non_activating)
        rng.shuffle(pool)
        return pool[: cfg.intruder_questions]
    return [
        rng.choice(others[rng.choice(donors)].test_activating)
        for _ in range(cfg.intruder_questions if donors else 0)
    ]


def _assemble(windows, intruder, band, cfg: IntruderConfig, threshold, rng) -> Question:
    marks = [activating_marks(ex, threshold) if cfg.intruder_highlight else None for ex in windows]
    shown = [Shown(ex, False, m) for ex, m in zip(windows, marks, strict=True)]
    own = None
    if cfg.intruder_highlight:
        if intruder.max_act > 0:  # another latent's window: its own activating tokens
            own = activating_marks(intruder, threshold)
        else:  # as many random tokens as the others have marked on average
            n = max(1, round(float(np.mean([m.sum() for m in marks]))))
            own = np.zeros(len(intruder.tokens), dtype=bool)
            own[rng.sample(range(len(own)), min(n, len(own)))] = True
    place = rng.randint(0, len(shown))
    shown.insert(place, Shown(intruder, True, own))
    return Question(tuple(shown), place, band)


def prompt(question: Question, decode: Decode, max_tokens: int, constrained: bool) -> Prompt:
    n = len(question.shown)
    marked = question.shown[0].marks is not None
    system = (
        "You find the intruder among text examples. All examples but one were chosen because the "
        "same feature of a language model fires on them"
        + (", most strongly on the tokens marked <<like this>>" if marked else "")
        + "; one example, the intruder, was not chosen that way. Find what the others share and "
        f"answer with the number (1 to {n}) of the example that does not share it, and nothing "
        "else."
    )
    lines = [f"Example {i}: {_text(item, decode)}" for i, item in enumerate(question.shown, 1)]
    return Prompt(
        messages=(("system", system), ("user", "\n".join(lines) + f"\n\n{QUESTION}")),
        max_tokens=max_tokens,
        temperature=0.0,
        choice_one=n if constrained else 0,
    )


def _text(item: Shown, decode: Decode) -> str:
    return " ".join(shown_text(item, decode).split())  # one line per example


_NUMBER = re.compile(r"\d+")


def parse_choice(completion: Completion, n: int) -> tuple[int | None, list[float] | None]:
    """(the named example's place from 0, P of each place where the client read them); (None, None)
    when the answer names no example from 1 to n."""
    if completion.text is None:
        return None, None
    named = next((int(x) for x in _NUMBER.findall(completion.text) if 1 <= int(x) <= n), None)
    if named is None:
        return None, None
    probs = completion.choice_probs
    return named - 1, (list(probs) if probs and len(probs) == n else None)


def read(question: Question, completion: Completion) -> dict:
    """One answered question: whether it was right (NaN unanswered) and P(intruder)."""
    picked, probs = parse_choice(completion, len(question.shown))
    return {
        "correct": math.nan if picked is None else float(picked == question.intruder),
        "prob": math.nan if probs is None else float(probs[question.intruder]),
        "picked": picked,
    }


def scored(latent: int, real: list, shuffled: list, decode: Decode) -> ScoredLatent:
    """A latent's metrics from its answered questions [(question, completion, reading)]."""
    hits = [r["correct"] for _, _, r in real]
    answered = [h for h in hits if math.isfinite(h)]
    control = [r["correct"] for _, _, r in shuffled if math.isfinite(r["correct"])]
    probs = [r["prob"] for _, _, r in real if math.isfinite(r["prob"])]
    values = {
        "accuracy": float(np.mean(answered)) if answered else math.nan,
        "accuracy_shuffled": float(np.mean(control)) if control else math.nan,
        "accuracy_chance": float(np.mean([q.chance for q, _, _ in real])) if real else math.nan,
        "prob_intruder": float(np.mean(probs)) if probs else math.nan,
        "answered_frac": len(answered) / len(hits) if hits else math.nan,
        "parse_failures": float(len(hits) - len(answered)),
    }
    detail = {
        "questions": [
            {
                "band": q.band,
                "intruder": q.intruder + 1,
                "answer": c.text if c.text is not None else f"<failed: {c.error}>",
                "correct": None if not math.isfinite(r["correct"]) else bool(r["correct"]),
                "windows": [_text(item, decode) for item in q.shown],
            }
            for q, c, r in real
        ],
        "shuffled_questions": len(shuffled),
    }
    return ScoredLatent(latent, "", [], metrics=values, detail=detail)
