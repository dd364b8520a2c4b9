"""Fuzzing: every window is shown with tokens marked, activating windows with their true activating
tokens and non-activating ones with as many random tokens as an activating window has on average;
the scorer says whether the marking is the one the explanation describes (docs/methods.md,
"Fuzzing")."""

from __future__ import annotations

import random

import numpy as np

from sae_interp_tasks.records import ExampleSplit
from sae_interp_tasks.scorers.classifier import Shown, WindowClassifier
from sae_interp_tasks.stages.examples import activating_marks


class Fuzzing(WindowClassifier):
    rules = (
        "some tokens of each example are marked <<like this>>. Decide for each example whether the "
        "marked "
        "tokens are exactly what the explanation describes (the feature fires on them)."
    )

    def shown(self, split: ExampleSplit, rng: random.Random, threshold: float) -> list[Shown]:
        true_marks = [activating_marks(ex, threshold) for ex in split.test_activating]
        n_marked = max(1, round(float(np.mean([m.sum() for m in true_marks]))) if true_marks else 1)
        items = [
            Shown(ex, True, marks)
            for ex, marks in zip(split.test_activating, true_marks, strict=True)
        ]
        for ex in split.test_non_activating:
            marks = np.zeros(len(ex.tokens), dtype=bool)
            marks[rng.sample(range(len(marks)), min(n_marked, len(marks)))] = True
            items.append(Shown(ex, False, marks))
        rng.shuffle(items)
        return items
