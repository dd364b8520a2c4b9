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
import random
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from sae_interp_tasks.config import StageConfig, option, positive
from sae_interp_tasks.errors import SaeInterpError
from sae_interp_tasks.records import LatentRecord
from sae_interp_tasks.stages.examples import assign_deciles
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


@dataclass(frozen=True)
class InterventionConfig(StageConfig):
    # a number, or a list: each target gets its own search, continuations and scores
    target_kl: float | list = 1.0
    n_intervention_prompts: int = positive(30)  # scoring prompts per latent
    n_output_prompts: int = positive(10)  # prompts whose promoted tokens the output explainer reads
    prompt_tokens: int = positive(
        64
    )  # context kept before (and including) the first activating token
    n_strata: int = positive(
        5
    )  # prompts are drawn equally from these quantiles of the latent's activation
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


# --- prompts
# ----------------------------------------------------------------------------------------
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
    history: list[tuple[float, float]] = field(
        default_factory=list
    )  # (strength, mean KL), in order

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
    promoted: list[tuple[int, float]] = field(
        default_factory=list
    )  # (token id, mean probability increase)
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
        # promoted tokens over the explainer prompts
        sub, row_vectors, scales, spans = group_rows(
            explaining_batch, explain_rows, group, vec, strengths
        )
        steered = steered_logp(model, hook_name, sub, row_vectors, scales)
        for lat, span in spans.items():
            out[(lat, target)].promoted = promoted_tokens(
                sub.clean_logp[span], steered[span], cfg.n_promoted_tokens
            )
        # continuations of the scoring prompts
        sub, row_vectors, scales, spans = group_rows(
            scoring_batch, score_rows, group, vec, strengths
        )
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
            out[(lat, target)].clean, out[(lat, target)].steered = clean[span], steered_tokens[span]
    return out


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


def check_prompts(latents: list[int], skipped: set[int], cfg: InterventionConfig) -> None:
    """A run where no latent could be given its prompts has nothing to score: say what to change."""
    if latents and skipped >= set(latents):
        raise SaeInterpError(
            f"no latent has the {cfg.n_prompts} activating windows (each cut after its first "
            "activating token) that "
            "n_intervention_prompts + n_output_prompts ask for; raise n_tokens or lower "
            "n_intervention_prompts "
            "and n_output_prompts"
        )
