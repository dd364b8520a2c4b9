"""From a latent's pass record to disjoint explanation (train) and scoring (test) examples."""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

import numpy as np

from sae_interp_tasks.config import StageConfig, option, positive
from sae_interp_tasks.records import Example, ExampleSplit, LatentRecord

TRAIN_SAMPLINGS = ("deciles", "top", "random")


@dataclass(frozen=True)
class ExampleConfig(StageConfig):
    """How a latent's windows are split into explanation (train) and scoring (test) examples."""

    n_train: int = positive(40)
    # spread across deciles | top | random
    train_sampling: str = option("deciles", choices=TRAIN_SAMPLINGS)
    n_test_per_decile: int = positive(5)
    n_deciles: int = positive(10)
    n_test_non_activating: int = positive(50)
    # fewer activating windows than this: "dead or rare", not scored
    min_examples: int = positive(20)
    # non-activating test windows: random | hard (nearest to the top windows by sentence embedding)
    non_activating: str = option("random", choices=("random", "hard"))


def assign_deciles(examples: list[Example], n_deciles: int = 10) -> list[Example]:
    """Label each activating example with its decile (1 weakest .. n strongest) among these
    examples."""
    order = sorted(range(len(examples)), key=lambda i: examples[i].max_act)
    labelled = list(examples)
    for rank, i in enumerate(order):
        labelled[i] = replace(examples[i], decile=1 + rank * n_deciles // len(examples))
    return labelled


def split_examples(record: LatentRecord, cfg: ExampleConfig, seed: int) -> ExampleSplit:
    """Train windows (by `train_sampling`) and test windows (per decile + non-activating), never
    overlapping.

    The test set takes `n_test_per_decile` windows of each decile, but at most half of each decile's
    windows (so at most half of all), and training takes from the rest: a latent with few activating
    windows is never left with nothing to explain it by."""
    rng = random.Random(f"{seed}:{record.latent}")
    sample = assign_deciles(record.activating, cfg.n_deciles)
    by_decile: dict[int, list[Example]] = {d: [] for d in range(1, cfg.n_deciles + 1)}
    for ex in sample:
        by_decile[ex.decile].append(ex)
    for group in by_decile.values():
        rng.shuffle(group)

    # test first, so every decile keeps its test windows, but never more than half of a decile's
    # windows: a rare latent keeps at least half of its activating windows for its explanation
    n_test = {d: min(cfg.n_test_per_decile, len(group) // 2) for d, group in by_decile.items()}
    test_act = [ex for d in by_decile for ex in by_decile[d][: n_test[d]]]
    test_ids = {ex.window_id for ex in test_act}
    if cfg.train_sampling == "top":
        pool = [ex for ex in record.top if ex.window_id not in test_ids]
        train = pool[: cfg.n_train]
    elif cfg.train_sampling == "random":
        pool = [ex for ex in sample if ex.window_id not in test_ids]
        train = rng.sample(pool, min(cfg.n_train, len(pool)))
    else:
        rest = {d: g[n_test[d] :] for d, g in by_decile.items()}
        train = _round_robin(rest, cfg.n_train)
    non_act = list(record.non_activating)
    rng.shuffle(non_act)
    return ExampleSplit(
        latent=record.latent,
        train=train,
        test_activating=test_act,
        test_non_activating=non_act[: cfg.n_test_non_activating],
    )


def _round_robin(groups: dict[int, list[Example]], n: int) -> list[Example]:
    """Up to n examples spread evenly across the groups (strongest group first in each round)."""
    out: list[Example] = []
    keys = sorted(groups, reverse=True)
    depth = 0
    while len(out) < n and any(len(groups[k]) > depth for k in keys):
        for k in keys:
            if depth < len(groups[k]) and len(out) < n:
                out.append(groups[k][depth])
        depth += 1
    return out


def highlight(
    tokens: np.ndarray, marks: np.ndarray, decode, open_mark: str = "<<", close_mark: str = ">>"
) -> str:
    """The window's text with marked tokens wrapped as <<like this>>; adjacent marked tokens share
    one pair.

    The one highlighting function: explainer prompts, fuzzing prompts and logged samples all use it.
    """
    pieces: list[str] = []
    inside = False
    for tok, mark in zip(tokens.tolist(), marks.tolist(), strict=True):
        text = decode([tok])
        if mark and not inside:
            pieces.append(open_mark)
            inside = True
        elif not mark and inside:
            pieces.append(close_mark)
            inside = False
        pieces.append(text)
    if inside:
        pieces.append(close_mark)
    return "".join(pieces)


def activating_marks(example: Example, threshold_frac: float = 0.3) -> np.ndarray:
    """Tokens at or above threshold_frac x the window's max activation."""
    if example.max_act <= 0:
        return np.zeros(len(example.tokens), dtype=bool)
    return example.acts >= threshold_frac * example.max_act
