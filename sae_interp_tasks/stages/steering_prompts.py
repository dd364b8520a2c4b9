"""The steering stage's settings and its prompts: corpus windows stratified by quintile of the
latent's max activation, each cut just after the latent's first activating token (docs/methods.md,
"Intervention"); split into the scoring prompts and those the output explainer reads."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from sae_interp_tasks.config import StageConfig, option, positive
from sae_interp_tasks.errors import SaeInterpError
from sae_interp_tasks.records import LatentRecord
from sae_interp_tasks.stages.examples import assign_deciles


@dataclass(frozen=True)
class InterventionConfig(StageConfig):
    # a number, or a list: each target gets its own search, continuations and scores
    target_kl: float | list = 1.0
    n_intervention_prompts: int = positive(30)  # scoring prompts per latent
    n_output_prompts: int = positive(10)  # prompts whose promoted tokens the output explainer reads
    # context kept before (and including) the first activating token
    prompt_tokens: int = positive(64)
    # prompts are drawn equally from these quantiles of the latent's activation
    n_strata: int = positive(5)
    strength_start: float = option(100.0, above=0.0)
    strength_min: float = option(1e-3, above=0.0)
    strength_max: float = option(1e4, above=0.0)
    search_steps: int = positive(10)
    kl_tolerance: float = option(0.1, above=0.0, below=1.0)  # relative to the target
    continuation_tokens: int = positive(8)
    continuation_temperature: float = option(1.0, above=0.0)
    n_promoted_tokens: int = positive(5)
    intervention_batch_size: int = positive(120)  # prompt rows per forward

    def check(self) -> None:
        bad = [
            t
            for t in self.targets
            if not (isinstance(t, (int, float)) and not isinstance(t, bool) and t > 0)
        ]
        if bad or not self.targets:
            raise SaeInterpError(
                f"target_kl must be a positive number or a list of them, got {self.target_kl!r}"
            )
        if not self.strength_min < self.strength_start < self.strength_max:
            raise SaeInterpError(
                f"need strength_min < strength_start < strength_max, got {self.strength_min}, "
                f"{self.strength_start}, {self.strength_max}"
            )

    @property
    def targets(self) -> list[float]:
        values = self.target_kl if isinstance(self.target_kl, list) else [self.target_kl]
        return [
            float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v
            for v in values
        ]

    @property
    def n_prompts(self) -> int:
        return self.n_intervention_prompts + self.n_output_prompts


@dataclass(frozen=True, eq=False)
class SteeringPrompt:
    tokens: np.ndarray  # int64: ends with the latent's first activating token in its window
    window_id: int
    max_act: float
    stratum: int  # 1 (weakest) .. n_strata (strongest)


def intervention_prompts(
    record: LatentRecord,
    cfg: InterventionConfig,
    seed: int,
    context_of: Callable[[int], np.ndarray],
    window: int,
    windows_per_context: int,
) -> tuple[list[SteeringPrompt], list[SteeringPrompt]] | None:
    """(scoring prompts, explainer prompts), drawn equally from each stratum of the latent's sampled
    activating windows; None when the latent has too few windows to fill them."""
    candidates = [
        ex
        for ex in assign_deciles(record.activating, cfg.n_strata)
        if _first_firing(ex, window, windows_per_context) is not None
    ]
    if len(candidates) < cfg.n_prompts:
        return None
    rng = random.Random(f"{seed}:intervention:{record.latent}")
    strata: dict[int, list] = {d: [] for d in range(cfg.n_strata, 0, -1)}
    for ex in candidates:
        strata[ex.decile].append(ex)
    for group in strata.values():
        rng.shuffle(group)
    chosen = []  # round robin, strongest stratum first, so any prefix spans the strata
    depth = 0
    while len(chosen) < cfg.n_prompts:
        for group in strata.values():
            if depth < len(group) and len(chosen) < cfg.n_prompts:
                chosen.append(group[depth])
        depth += 1
    prompts = []
    for ex in chosen:
        context, k = divmod(ex.window_id, windows_per_context)
        cut = k * window + _first_firing(ex, window, windows_per_context)
        tokens = np.asarray(context_of(context))[
            max(0, cut + 1 - cfg.prompt_tokens) : cut + 1
        ].astype(np.int64)
        prompts.append(SteeringPrompt(tokens, ex.window_id, ex.max_act, ex.decile))
    # every k-th goes to the output explainer, so both sets span the strata
    every = max(1, round(cfg.n_prompts / cfg.n_output_prompts))
    explain = [p for i, p in enumerate(prompts) if i % every == every - 1][: cfg.n_output_prompts]
    taken = {id(p) for p in explain}
    score = [p for p in prompts if id(p) not in taken][: cfg.n_intervention_prompts]
    return score, explain


def _first_firing(example, window: int, windows_per_context: int) -> int | None:
    """Position in the window of the first activating token that is not the context's first
    (BOS)."""
    k = example.window_id % windows_per_context
    for pos in np.flatnonzero(example.acts > 0).tolist():
        if k * window + pos > 0:
            return pos
    return None


def check_prompts(latents: list[int], skipped: set[int], cfg: InterventionConfig) -> None:
    """A run where no latent could be given its prompts has nothing to score: say what to change."""
    if latents and skipped >= set(latents):
        raise SaeInterpError(
            f"no latent has the {cfg.n_prompts} activating windows (each cut after its first "
            "activating token) that n_intervention_prompts + n_output_prompts ask for; raise "
            "n_tokens or lower n_intervention_prompts and n_output_prompts"
        )
