"""Intervention: what a latent does to the model's output when it is steered.

For each latent (Paulo et al. 2024, section 3.3.5; docs/methods.md, "Intervention"):
  - prompts: corpus windows stratified by quintile of the latent's max activation, each cut just
    after the latent's first activating token and extended to `prompt_tokens` tokens of context;
  - the edit, at the SAE's hook: h -> h + s * (decode(e_i) - decode(0)), applied at the last
    prompt token and at every generated token;
  - the strength s, searched on a log scale so that the mean KL(clean || steered) of the
    next-token distribution at the last prompt token over the scoring prompts reaches a target;
  - the tokens the edit promotes most (mean probability increase over the explainer prompts);
  - one clean and one steered continuation per scoring prompt, sampled with the same random
    numbers, so the two differ only where the edit changes the distribution.

Everything runs batched across prompts and latents on TransformerLens's KV cache (the engine is
`steering_engine.py`): the clean prompt runs once, each search step reruns only the last prompt
token against the frozen cache of the prompt before it, and generation extends copies of that cache.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from sae_interp_tasks.records import LatentRecord
from sae_interp_tasks.stages.steering_engine import (
    PromptBatch,
    coupled_uniforms,
    generate_pairs,
    group_rows,
    kl_clean_steered,
    naive_steered_generate,
    prepare,
    promoted_tokens,
    sample,
    steered_logp,
)
from sae_interp_tasks.stages.steering_prompts import (
    InterventionConfig,
    SteeringPrompt,
    check_prompts,
    intervention_prompts,
)

__all__ = [
    "InterventionConfig",
    "LatentSteering",
    "Search",
    "SteeringPrompt",
    "coupled_uniforms",
    "intervention_prompts",
    "naive_steered_generate",
    "sample",
    "check_prompts",
    "steer_all",
    "steer_latents",
    "steering_directions",
]


# --- the edit
# ---------------------------------------------------------------------------------------
def steering_directions(sae, latents: list[int]) -> torch.Tensor:
    """decode(e_i) - decode(0) for each latent: the change one unit of the latent makes to the
    reconstruction (decoder row for linear decoders), in the hooked activation's shape."""
    device, dtype = sae.W_dec.device, sae.W_dec.dtype
    with torch.no_grad():
        onehot = torch.zeros(len(latents), sae.cfg.d_sae, device=device, dtype=dtype)
        onehot[torch.arange(len(latents)), torch.tensor(latents)] = 1.0
        return (sae.decode(onehot) - sae.decode(torch.zeros_like(onehot))).float()


# --- the strength search
# ----------------------------------------------------------------------------
@dataclass
class Search:
    """One latent's search for the strength whose mean KL reaches `target`."""

    target: float
    cfg: InterventionConfig
    # (strength, mean KL), in order
    history: list[tuple[float, float]] = field(default_factory=list)

    def done(self) -> bool:
        return (
            self.reached() is not None
            or len(self.history) >= self.cfg.search_steps
            or self._stuck()
        )

    def reached(self) -> tuple[float, float] | None:
        for s, kl in self.history:
            if abs(kl - self.target) <= self.cfg.kl_tolerance * self.target:
                return s, kl
        return None

    def closest(self) -> tuple[float, float]:
        return min(
            self.history, key=lambda h: abs(math.log(max(h[1], 1e-12)) - math.log(self.target))
        )

    def _stuck(self) -> bool:
        """At a bound of the range and still on the wrong side of the target: more steps cannot
        help."""
        if not self.history:
            return False
        s, kl = self.history[-1]
        return (s >= self.cfg.strength_max and kl < self.target) or (
            s <= self.cfg.strength_min and kl > self.target
        )

    def next_strength(self) -> float:
        cfg = self.cfg
        if not self.history:
            return cfg.strength_start
        below = [h for h in self.history if h[1] < self.target]
        above = [h for h in self.history if h[1] > self.target]
        if below and above:  # a bracket: interpolate log KL against log s
            (s0, k0), (s1, k1) = max(below), min(above)
            if k0 <= 0:
                return math.sqrt(s0 * s1)
            t = (math.log(self.target) - math.log(k0)) / (math.log(k1) - math.log(k0))
            guess = math.exp(math.log(s0) + t * (math.log(s1) - math.log(s0)))
        # one side only: extrapolate along the measured log-log slope (2, as KL ~ s^2 for small s)
        else:
            s, kl = self.history[-1]
            slope = 2.0
            same_side = sorted(h for h in (below or above) if h[1] > 0)
            if len(same_side) >= 2:
                (sa, ka), (sb, kb) = same_side[-2], same_side[-1]
                if sb != sa and kb != ka:
                    slope = min(
                        max((math.log(kb) - math.log(ka)) / (math.log(sb) - math.log(sa)), 0.5), 4.0
                    )
            guess = s * 10.0 if kl <= 0 else s * (self.target / kl) ** (1.0 / slope)
        return min(max(guess, cfg.strength_min), cfg.strength_max)


@dataclass
class LatentSteering:
    """What steering found for one latent at one target KL."""

    latent: int
    target: float
    strength: float | None  # None: the target was not reached within the search
    kl: float  # the mean KL reached (at the closest strength tried, when unreached)
    history: list[tuple[float, float]]
    prompts: list[SteeringPrompt] = field(default_factory=list)  # the scoring prompts
    # (token id, mean probability increase)
    promoted: list[tuple[int, float]] = field(default_factory=list)
    clean: list[list[int]] = field(default_factory=list)  # per scoring prompt
    steered: list[list[int]] = field(default_factory=list)

    @property
    def reached(self) -> bool:
        return self.strength is not None


def search_strengths(
    model,
    hook_name: str,
    scoring: PromptBatch,
    rows: dict[int, slice],
    vectors: dict[int, torch.Tensor],
    targets: list[float],
    cfg: InterventionConfig,
) -> dict[tuple[int, float], Search]:
    """Every (latent, target) search, stepping all latents of the batch together; a latent's rows
    are `rows[latent]` of `scoring`. Evaluated (strength, KL) pairs are shared across one latent's
    targets."""
    searches = {(lat, t): Search(t, cfg) for lat in rows for t in targets}
    seen: dict[int, dict[float, float]] = {lat: {} for lat in rows}
    row_vectors = torch.cat(
        [vectors[lat].expand(rows[lat].stop - rows[lat].start, *vectors[lat].shape) for lat in rows]
    ).to(model.cfg.device)
    while True:
        wanted: dict[int, float] = {}
        for (lat, _), search in searches.items():
            for s, kl in seen[lat].items():
                if (s, kl) not in search.history:
                    search.history.append((s, kl))
            if lat not in wanted and not search.done():
                wanted[lat] = search.next_strength()
        wanted = {lat: s for lat, s in wanted.items() if s not in seen[lat]}
        if not wanted:
            return searches
        scales = torch.zeros(len(row_vectors), device=model.cfg.device)
        for lat, s in wanted.items():
            scales[rows[lat]] = s
        kl = kl_clean_steered(
            scoring.clean_logp, steered_logp(model, hook_name, scoring, row_vectors, scales)
        )
        for lat, s in wanted.items():
            seen[lat][s] = float(kl[rows[lat]].mean())


def steer_latents(
    model,
    hook_name: str,
    latents: list[int],
    prompts: dict[int, tuple[list, list]],
    vectors: torch.Tensor,
    cfg: InterventionConfig,
    seed: int,
    stop_ids: set[int],
) -> dict[tuple[int, float], LatentSteering]:
    """The whole intervention stage for a group of latents that fits one batch."""
    vec = {lat: vectors[i] for i, lat in enumerate(latents)}
    score_rows, explain_rows, score_tokens, explain_tokens = {}, {}, [], []
    for lat in latents:
        scoring, explaining = prompts[lat]
        score_rows[lat] = slice(len(score_tokens), len(score_tokens) + len(scoring))
        explain_rows[lat] = slice(len(explain_tokens), len(explain_tokens) + len(explaining))
        score_tokens += [p.tokens for p in scoring]
        explain_tokens += [p.tokens for p in explaining]
    scoring_batch = prepare(model, score_tokens)
    searches = search_strengths(model, hook_name, scoring_batch, score_rows, vec, cfg.targets, cfg)
    out = {}
    for (lat, target), search in searches.items():
        hit = search.reached()
        s, kl = hit if hit is not None else search.closest()
        out[(lat, target)] = LatentSteering(
            lat,
            target,
            s if hit is not None else None,
            kl,
            list(search.history),
            prompts=list(prompts[lat][0]),
        )
    reached = [(lat, t) for (lat, t), res in out.items() if res.reached]
    if not reached:
        return out
    explaining_batch = prepare(model, explain_tokens)
    for target in cfg.targets:
        group = [lat for lat in latents if out[(lat, target)].reached]
        if not group:
            continue
        strengths = {lat: out[(lat, target)].strength for lat in group}
        rows = {lat: out[(lat, target)] for lat in group}
        edit = (model, hook_name, vec, strengths)
        _promote(edit, explaining_batch, explain_rows, group, rows, cfg)
        _continue(edit, scoring_batch, score_rows, group, rows, cfg, seed, stop_ids)
    return out


def _promote(edit, batch, rows_of, group, results, cfg: InterventionConfig) -> None:
    """The tokens each latent's edit promotes most, over its explainer prompts."""
    model, hook_name, vec, strengths = edit
    sub, row_vectors, scales, spans = group_rows(batch, rows_of, group, vec, strengths)
    steered = steered_logp(model, hook_name, sub, row_vectors, scales)
    for lat, span in spans.items():
        results[lat].promoted = promoted_tokens(
            sub.clean_logp[span], steered[span], cfg.n_promoted_tokens
        )


def _continue(edit, batch, rows_of, group, results, cfg, seed: int, stop_ids: set[int]) -> None:
    """One clean and one steered continuation per scoring prompt, with the same random numbers."""
    model, hook_name, vec, strengths = edit
    sub, row_vectors, scales, spans = group_rows(batch, rows_of, group, vec, strengths)
    draws = torch.cat(
        [
            coupled_uniforms(seed, lat, span.stop - span.start, cfg.continuation_tokens)
            for lat, span in spans.items()
        ]
    )
    clean, steered_tokens = generate_pairs(
        model, hook_name, sub, row_vectors, scales, draws, cfg, stop_ids
    )
    for lat, span in spans.items():
        results[lat].clean, results[lat].steered = clean[span], steered_tokens[span]


def steer_all(
    model,
    sae,
    hook_name: str,
    latents: list[int],
    record_of: Callable[[int], LatentRecord],
    context_of: Callable[[int], np.ndarray],
    cfg: InterventionConfig,
    window: int,
    windows_per_context: int,
    seed: int,
    stop_ids: set[int],
) -> tuple[dict[tuple[int, float], LatentSteering], set[int]]:
    """Steering results {(latent, target): LatentSteering} of `latents`, in groups that fit one
    batch, and the latents with too few activating windows for their prompts."""
    prompts, skipped = {}, set()
    for lat in latents:
        chosen = intervention_prompts(
            record_of(lat), cfg, seed, context_of, window, windows_per_context
        )
        if chosen is None:
            skipped.add(lat)
        else:
            prompts[lat] = chosen
    ready = [lat for lat in latents if lat in prompts]
    group_size = max(1, cfg.intervention_batch_size // cfg.n_prompts)
    steered = {}
    bar = tqdm(total=len(ready), unit="latents", desc="steering")
    for start in range(0, len(ready), group_size):
        group = ready[start : start + group_size]
        steered.update(
            steer_latents(
                model,
                hook_name,
                group,
                prompts,
                steering_directions(sae, group),
                cfg,
                seed,
                stop_ids,
            )
        )
        bar.update(len(group))
    bar.close()
    return steered, skipped
