"""The scorer check: before its numbers mean anything, an LLM scorer must score known answers.

Built from the run's own corpus (the activation pass's shared sample of windows): a few frequent
words, each as an explanation ('the word "return"') of a pseudo-latent that fires exactly on that
word, with held-out windows that contain it and as many that do not. A task scores these with its
own scorer and settings; the statistic (the scorer's own kind: balanced accuracy, correlation,
AUROC, ...) comes with a standard error, and the scorer passes when the lower end of its 95%
interval lies above chance. A scorer that fails is announced in one warning line, recorded in the
results (`*_check_passed` 0), marked by `sae-interp leaderboard` and never gated on by `compare`.
"""

from __future__ import annotations

import logging
import math
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from sae_interp_tasks import stats
from sae_interp_tasks.aggregations import Shared, nanmean
from sae_interp_tasks.config import StageConfig, positive
from sae_interp_tasks.records import Example, ExampleSplit, Explanation, WindowJudgement
from sae_interp_tasks.scorers import metrics

log = logging.getLogger(__name__)
Z = stats.z_for(0.95)  # the check passes when its two-sided 95% interval clears chance
# what a failed check advises: a chat scorer (detection, fuzzing, simulation, self-explanation,
# the judge) and a base-LM reader of log-probabilities (surprisal, intervention's reader)
ADVICE_SCORER = (
    "use a capable scorer (scorer: openai with scorer_model and scorer_base_url, e.g. an "
    "instruction-tuned "
    "model of 7B parameters or more behind vLLM)"
)
ADVICE_READER = (
    "use a larger base model (surprisal_scorer: openai with surprisal_model and "
    "surprisal_base_url, a "
    "completions endpoint that echoes prompt logprobs, e.g. vLLM)"
)
CANDIDATES = 30  # the most frequent words the check words are drawn from


@dataclass(frozen=True)
class CheckConfig(StageConfig):
    scorer_check: bool = (
        True  # score known answers first; false: no check (and no *_check_* metrics)
    )
    # frequent words, each an explanation with its own windows
    scorer_check_words: int = positive(4)
    # per word: windows that contain it, and as many that do not
    scorer_check_windows: int = positive(5)


@dataclass(frozen=True)
class CheckResult:
    """A scorer's result on the known answers: `value` [`lo`, `hi`] (95%) against `chance`."""

    name: str  # the statistic's metric name, e.g. "scorer_check_balanced_acc"
    value: float
    stderr: float
    chance: float
    n: int  # windows (or pairs) it was measured on

    @property
    def lo(self) -> float:
        return self.value - Z * self.stderr

    @property
    def hi(self) -> float:
        return self.value + Z * self.stderr

    @property
    def passed(self) -> bool:
        return math.isfinite(self.value) and math.isfinite(self.stderr) and self.lo > self.chance

    @property
    def passed_metric(self) -> str:
        return self.name.rsplit("_check_", 1)[0] + "_check_passed"

    def metrics(self) -> dict:
        """Per-doc values: the statistic with its own standard error (aggregations.Shared), and
        passed (1/0)."""
        return {
            self.name: {"value": self.value, "stderr": self.stderr},
            self.passed_metric: float(self.passed),
        }

    def describe(self) -> str:
        return (
            f"{self.name} {self.value:.3f} [{self.lo:.3f}, {self.hi:.3f}] on {self.n}; chance "
            f"{self.chance:g}"
        )


def check_metrics(name: str) -> dict:
    """The task metrics a check adds: name -> (aggregation, higher_is_better)."""
    return {name: (Shared(), True), name.rsplit("_check_", 1)[0] + "_check_passed": (nanmean, True)}


def announce(
    task: str,
    scorer: str,
    result: CheckResult,
    instead: str,
    cannot: str = "cannot tell a right explanation from a wrong one",
) -> None:
    if not result.passed:
        log.warning(
            "%s: the scorer %s failed its known-answer check (%s): its %s scores %s; %s",
            task,
            scorer,
            result.describe(),
            task,
            cannot,
            instead,
        )


# --- the known answers
# -----------------------------------------------------------------------------
def pool_windows(state) -> list[np.ndarray]:
    """The token ids of the activation pass's shared sample of windows (pass_state.PassState), in
    the state's canonical order: the same windows in the same order however the pass was split
    across processes."""
    return [tokens.numpy().astype(np.int64) for tokens in state.shared_windows()]


def build_check_set(
    windows: list[np.ndarray], decode: Callable[[list[int]], str], cfg: CheckConfig, seed: int
) -> tuple[list[ExampleSplit], dict[int, Explanation]]:
    """Pseudo-latents 0..n-1, each a frequent word with windows that contain it (every token that
    spells the word marked, activation 1) and windows that do not; the explanation names the
    word."""
    rng = random.Random(f"{seed}:scorer-check")
    need = cfg.scorer_check_windows
    spelled = {tok: decode([tok]) for tok in {t for ids in windows for t in ids.tolist()}}
    words = {tok: text.strip() for tok, text in spelled.items() if _is_word(text)}
    holding: dict[str, set[int]] = {}
    for w, ids in enumerate(windows):
        for tok in set(ids.tolist()):
            if tok in words:
                holding.setdefault(words[tok], set()).add(w)
    counts = Counter(
        {word: len(ws) for word, ws in holding.items() if need <= len(ws) <= len(windows) - need}
    )
    chosen = rng.sample(
        [word for word, _ in counts.most_common(CANDIDATES)],
        min(cfg.scorer_check_words, len(counts)),
    )
    splits, explanations = [], {}
    for i, word in enumerate(chosen):
        inside = rng.sample(sorted(holding[word]), need)
        outside = rng.sample([w for w in range(len(windows)) if w not in holding[word]], need)
        marked = [
            Example(
                windows[w],
                np.array([spelled[t].strip() == word for t in windows[w].tolist()], np.float32),
                decile=10,
                window_id=w,
            )
            for w in inside
        ]
        quiet = [
            Example(windows[w], np.zeros(len(windows[w]), dtype=np.float32), window_id=w)
            for w in outside
        ]
        splits.append(
            ExampleSplit(latent=i, train=[], test_activating=marked, test_non_activating=quiet)
        )
        explanations[i] = Explanation(i, f'the word "{word}"', "scorer-check")
    return splits, explanations


def _is_word(text: str) -> bool:
    word = text.strip()
    return len(word) >= 4 and word.isalpha()


# --- statistics with a standard error
# ---------------------------------------------------------------
def balanced_accuracy(judgements: list[WindowJudgement], name: str) -> CheckResult:
    """Balanced accuracy over every window answered; stderr of the mean of the two class rates."""
    done = [j for j in judgements if j.prediction is not None]
    labels, predictions = [j.label for j in done], [j.prediction for j in done]
    value = stats.balanced_accuracy(labels, predictions)
    se = stats.balanced_accuracy_stderr(labels, predictions)
    return CheckResult(name, value, se, 0.5, len(done))


def auroc(labels: list[bool], scores: list[float], name: str) -> CheckResult:
    """AUROC with the Hanley-McNeil standard error."""
    read = [
        (lab, s)
        for lab, s in zip(labels, scores, strict=True)
        if s is not None and math.isfinite(s)
    ]
    value = metrics.auroc([lab for lab, _ in read], [s for _, s in read])
    n1, n0 = sum(lab for lab, _ in read), sum(not lab for lab, _ in read)
    if not math.isfinite(value) or not n1 or not n0:
        return CheckResult(name, math.nan, math.nan, 0.5, len(read))
    # a perfect AUROC still gets the interval its sample size allows
    a = min(max(value, 1e-6), 1 - 1e-6)
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    se = math.sqrt((a * (1 - a) + (n1 - 1) * (q1 - a * a) + (n0 - 1) * (q2 - a * a)) / (n1 * n0))
    return CheckResult(name, value, max(se, 0.5 / (n1 * n0)), 0.5, len(read))


def correlation(true: np.ndarray, predicted: np.ndarray, name: str) -> CheckResult:
    """Pearson's r with the standard error of its Fisher transform mapped back at r."""
    n = len(true)
    if n < 4 or np.std(true) == 0 or np.std(predicted) == 0:
        return CheckResult(name, math.nan, math.nan, 0.0, n)
    r = float(np.corrcoef(true, predicted)[0, 1])
    return CheckResult(name, r, (1 - min(r * r, 0.999999)) / math.sqrt(n - 3), 0.0, n)


def mean_gain(values: list[float], name: str) -> CheckResult:
    """A mean (e.g. log-probability gained) against zero, with its standard error."""
    value, se, n = stats.mean_and_stderr(values)
    if n < 2:
        return CheckResult(name, math.nan, math.nan, 0.0, n)
    return CheckResult(name, value, se, 0.0, n)


def accuracy(hits: list[float], chance: float, name: str) -> CheckResult:
    """The share of right answers (NaN: unanswered, left out) against `chance`; binomial standard
    error."""
    kept = [h for h in hits if math.isfinite(h)]
    if not kept:
        return CheckResult(name, math.nan, math.nan, chance, 0)
    p = float(np.mean(kept))
    return CheckResult(
        name, p, math.sqrt(max(p * (1 - p), 0.25 / len(kept)) / len(kept)), chance, len(kept)
    )
