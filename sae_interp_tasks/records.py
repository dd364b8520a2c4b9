"""Typed records passed between pipeline stages (corpus -> activations -> examples -> explain ->
score)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# what a task's LLM calls cost, as per-doc metrics that sum to the task's totals (harness.costs)
USAGE_METRICS = ("llm_calls", "llm_cached_calls", "llm_prompt_tokens", "llm_completion_tokens")


@dataclass(frozen=True, eq=False)
class Example:
    """One example window: its tokens and one latent's activation on each token.

    `decile` is 1 (weakest) .. 10 (strongest) for activating windows, 0 for non-activating ones.
    """

    tokens: np.ndarray  # int64 [window]
    acts: np.ndarray  # float32 [window]
    decile: int = 0
    window_id: int = -1  # position of the window in the pass (context * windows_per_context + k)

    @property
    def max_act(self) -> float:
        return float(self.acts.max()) if self.acts.size else 0.0

    @property
    def is_activating(self) -> bool:
        return self.max_act > 0


@dataclass(frozen=True, eq=False)
class LatentRecord:
    """What the activation pass keeps for one latent (bounded by the sampling sizes, not the
    corpus)."""

    latent: int
    n_firing: int  # tokens with a nonzero activation
    n_tokens: int  # tokens in the pass
    max_act: float
    top: list[Example]  # strongest windows, strongest first
    activating: list[Example]  # uniform sample of activating windows
    non_activating: list[Example]  # uniform sample of windows where the latent never fires

    @property
    def frequency(self) -> float:
        return self.n_firing / max(self.n_tokens, 1)


@dataclass(frozen=True, eq=False)
class ExampleSplit:
    """Disjoint explanation (train) and scoring (test) examples of one latent."""

    latent: int
    train: list[Example]
    test_activating: list[Example]
    test_non_activating: list[Example]

    @property
    def test(self) -> list[Example]:
        return self.test_activating + self.test_non_activating


@dataclass(frozen=True)
class Explanation:
    latent: int
    text: str
    explainer: str  # e.g. "tokens", "hf:<model>", "openai:<model>", "selfexplain"


@dataclass(frozen=True)
class WindowJudgement:
    """A scorer's verdict on one test window; `prediction` is None when its batch could not be
    parsed."""

    label: bool  # the truth: does the latent fire here (or: is this the true marking)
    prediction: bool | None
    probability: float | None = None  # P(yes), when the client gives logprobs
    decile: int = 0


@dataclass(frozen=True)
class ScoredLatent:
    """A scorer's verdict on one latent: its per-latent metrics, what --log_samples shows (prompts,
    raw answers), and, for a kind with pooled metrics, the latent's statistics they pool
    (aggregations.Pooled)."""

    latent: int
    explanation: str
    judgements: list[WindowJudgement]
    metrics: dict[str, float] = field(default_factory=dict)
    detail: dict = field(default_factory=dict)
    stats: dict | None = None


def _jsonable(value):
    if hasattr(value, "to_json"):  # e.g. core.CoreStats: its statistics, not its repr
        return _jsonable(value.to_json())
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.floating, np.integer, np.bool_)):
        return _jsonable(value.item())
    return value


@dataclass(frozen=True, eq=False)
class Response:
    """The backend's answer to one doc: its metrics, and what --log_samples shows about it.

    lm-eval writes `str(response)` into the samples files, so the string form is JSON (NaN as
    null), flat: the doc's id (`latent` or `chunk`), `skipped_before`, the detail fields, `metrics`.
    `stats` carries what a custom aggregation needs (sae_core's chunk statistics); objects with a
    `to_json()` are written through it.
    """

    metrics: dict
    latent: int | None = None
    chunk: int | None = None
    skipped_before: int = 0
    detail: dict = field(default_factory=dict)
    stats: object = None

    def to_json(self) -> dict:
        ident = (
            {"chunk": self.chunk}
            if self.chunk is not None
            else {"latent": self.latent, "skipped_before": self.skipped_before}
        )
        extra = {"stats": self.stats} if self.stats is not None else {}
        return {**ident, **self.detail, **extra, "metrics": self.metrics}

    def __str__(self) -> str:
        return json.dumps(_jsonable(self.to_json()), ensure_ascii=False, default=str)


@dataclass(frozen=True)
class SAESource:
    """Which SAE to evaluate, as named in --model_args."""

    release: str | None = None
    sae_id: str | None = None
    path: str | None = None
    control: str | None = None  # None | "random" | "neurons"
    control_k: int | None = None
    hookpoint: str | None = (
        None  # a sparsify folder (or hub repo) with several hookpoints: which one
    )
    model: str | None = (
        None  # the subject model, when given (model=): a sparsify SAE names none itself
    )

    @property
    def label(self) -> str:
        """How results, leaderboards and messages name this SAE: release/sae_id, the folder, or
        "demo"; with its hookpoint where a folder holds several, and +control=... for a control."""
        base = (
            f"{self.release}/{self.sae_id or self.hookpoint}"
            if self.release
            else self.path
            if self.path
            else "demo"
        )
        if self.path and self.hookpoint and Path(self.path).name != self.hookpoint:
            base = f"{base}/{self.hookpoint}"
        return f"{base}+control={self.control}" if self.control else base

    @property
    def weights_label(self) -> str:
        """The label of the SAE whose weights these are (a control of it is labelled alike)."""
        return SAESource(release=self.release, sae_id=self.sae_id, path=self.path).label
