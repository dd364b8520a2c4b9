"""The known-answer checks of the scorers that read steered text (sae_intervention): the surprisal
reader and the judge, each on the run's check set (validity.scorer_check builds it)."""

from __future__ import annotations

import random
from collections.abc import Callable

from sae_interp_tasks.clients import LLMClient
from sae_interp_tasks.scorers.intervention import (
    judge_prompt,
    judge_sets,
    read_judgement,
    surprisal_scores,
)
from sae_interp_tasks.validity.scorer_check import CheckResult, accuracy, mean_gain


def reader_check(
    client: LLMClient, splits: list, explanations: dict, decode: Callable, name: str
) -> CheckResult:
    """The surprisal reader on known answers: log P(explanation | a window with the word) minus log
    P(explanation | a window without it), pair by pair; the mean gain must lie above zero."""
    jobs = []
    for split in splits:
        text = explanations[split.latent].text
        jobs += [
            (text, [""], [decode(off.tokens.tolist())], [decode(on.tokens.tolist())])
            for on, off in zip(split.test_activating, split.test_non_activating, strict=True)
        ]
    return mean_gain([sc.score for sc in surprisal_scores(client, jobs)], name)


def judge_check(
    client: LLMClient,
    splits: list,
    explanations: dict,
    decode: Callable,
    seed: int,
    n: int,
    name: str,
) -> CheckResult:
    """The judge on known answers: which of three sets of windows holds the explained word; against
    1/3."""
    if len(splits) < 3:
        return accuracy([], 1 / 3, name)
    sets = {s.latent: [decode(ex.tokens.tolist()) for ex in s.test_activating[:n]] for s in splits}
    prompts, truths = [], []
    for split in splits:
        rng = random.Random(f"{seed}:judge-check:{split.latent}")
        others = rng.sample([o for o in sets if o != split.latent], 2)
        shown, truth = judge_sets(sets[split.latent], [sets[o] for o in others], rng)
        prompts.append(judge_prompt(explanations[split.latent].text, shown))
        truths.append(truth)
    answers = client.generate(prompts, desc="judge check")
    return accuracy(
        [read_judgement(a.text, t) for a, t in zip(answers, truths, strict=True)], 1 / 3, name
    )
