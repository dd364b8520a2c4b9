"""Which latents fill a task's doc slots, and each chosen latent's train/test example split.

Slots are filled, in a seeded order of all latents, by the first latents that are live: those
with at least `min_examples` activating windows in the activation pass. Dead or rare latents
passed over are counted per slot (`skipped_before`). With `latents: [...]` exactly those are
used, a dead one leaving its slot empty. The pass runs over a pool of candidates (at least 128,
so runs asking for up to 64 latents share one cached pass), widened until enough are live.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from sae_interp_tasks.config import StageConfig, option, positive
from sae_interp_tasks.errors import SaeInterpError
from sae_interp_tasks.records import ExampleSplit
from sae_interp_tasks.stages import activations
from sae_interp_tasks.stages.corpus import CorpusSpec
from sae_interp_tasks.stages.embedder import hard_negatives
from sae_interp_tasks.stages.examples import ExampleConfig, split_examples

log = logging.getLogger(__name__)

MIN_POOL = 128


@dataclass(frozen=True)
class SelectionConfig(StageConfig):
    n_latents: int = positive(64)  # docs: latent slots, filled with a seeded sample of live latents
    latents: list | None = None  # or exactly these latent ids
    seed: int | None = option(None, min=0)  # None: the harness's --seed

    def check(self) -> None:
        if self.latents is not None and (
            not self.latents
            or not all(isinstance(lat, int) and not isinstance(lat, bool) for lat in self.latents)
        ):
            raise SaeInterpError(
                f"latents must be a non-empty list of latent ids, got {self.latents!r}"
            )

    @property
    def n_slots(self) -> int:
        return len(self.latents) if self.latents is not None else self.n_latents


@dataclass(frozen=True)
class Selection:
    """Which latent fills each doc slot (None: a named latent that is dead or rare), and how many
    dead-or-rare latents were passed over for it."""

    latents: list[int | None]
    skipped_before: list[int]
    state: activations.PassState

    @property
    def live(self) -> list[int]:
        return [lat for lat in self.latents if lat is not None]


def candidate_order(
    d_sae: int, latents: list | None, seed: int, allowed: frozenset | None = None
) -> list[int]:
    """The named latents, or a seeded order of all latents (of those `allowed`, when given)."""
    if latents is not None:
        bad = [lat for lat in latents if not 0 <= lat < d_sae]
        if bad:
            raise SaeInterpError(f"latents {bad} are not latent ids of this SAE (0..{d_sae - 1})")
        return list(latents)
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(d_sae, generator=gen).tolist()
    if allowed is None:
        return order
    order = [lat for lat in order if lat in allowed]
    if not order:
        raise SaeInterpError("the explanations cover none of the SAE's latents")
    return order


def select_latents(
    model,
    sae,
    info,
    spec: CorpusSpec,
    pass_cfg: activations.PassConfig,
    cfg: SelectionConfig,
    min_examples: int,
    n_slots: int,
    seed: int,
    batch_size: int,
    read=None,
    forward: str = "tl",
    group=None,
    allowed: frozenset | None = None,
) -> Selection:
    """The first n_slots live latents of a seeded order of all latents (or exactly the named
    ones). `allowed` (the latents an explanations file covers): only those are drawn, and a named
    latent outside it leaves its slot empty, as a dead one does."""
    order = candidate_order(info.d_sae, cfg.latents, seed, allowed)
    explicit = cfg.latents is not None
    size = len(order) if explicit else min(len(order), max(2 * n_slots, MIN_POOL))
    while True:
        pool = order[:size]
        state = activations.run_activation_pass(
            model,
            sae,
            info,
            spec,
            pass_cfg,
            seed,
            batch_size,
            latents=torch.tensor(sorted(pool)),
            read=read,
            forward=forward,
            group=group,
        )
        filled = torch.isfinite(state.sample_key).sum(1)
        live = {
            int(lat)
            for lat, n in zip(state.latents.tolist(), filled.tolist(), strict=True)
            if n >= min_examples and (allowed is None or int(lat) in allowed)
        }
        if explicit or sum(lat in live for lat in pool) >= n_slots or size == len(order):
            break
        size = min(len(order), size * 4)
    chosen, skipped = fill_slots(pool, live, n_slots, explicit)
    if len(chosen) < n_slots:
        log.warning(
            "only %d live latents for %d slots (min_examples=%d over %d tokens)",
            len(chosen),
            n_slots,
            min_examples,
            pass_cfg.n_tokens,
        )
        chosen += [None] * (n_slots - len(chosen))
        skipped += [0] * (n_slots - len(skipped))
    return Selection(chosen, skipped, state)


def fill_slots(
    pool: list[int], live: set[int], n_slots: int, explicit: bool
) -> tuple[list[int | None], list[int]]:
    """The pool's live latents in order, up to n_slots, each with the number of dead or rare ones
    passed over before it; a named latent that is not live keeps its slot, unscored (None)."""
    chosen: list[int | None] = []
    skipped: list[int] = []
    passed = 0
    for lat in pool:
        if len(chosen) == n_slots:
            break
        if lat in live:
            chosen.append(lat)
            skipped.append(passed)
            passed = 0
        elif explicit:
            chosen.append(None)  # a named latent that is dead or rare: reported, not scored
            skipped.append(1)
        else:
            passed += 1
    return chosen, skipped


def make_splits(
    selection: Selection,
    cfg: ExampleConfig,
    seed: int,
    decode,
    embedder=None,
    embedding_batch_size: int = 64,
) -> dict[int, ExampleSplit]:
    """Each live latent's split; with `non_activating: hard` the non-activating pool is first
    narrowed to the windows nearest its top windows by `embedder`."""
    splits = {}
    # embeds every latent's windows: seconds per latent, so a bar
    hard = cfg.non_activating == "hard"
    for lat in tqdm(selection.live, unit="latents", desc="hard negatives", disable=not hard):
        record = selection.state.record(lat)
        if cfg.non_activating == "hard":
            chosen = hard_negatives(
                record.top,
                list(record.non_activating),
                embedder,
                decode,
                cfg.n_test_non_activating,
                embedding_batch_size,
            )
            record = dataclasses.replace(record, non_activating=chosen)
        splits[lat] = split_examples(record, cfg, seed)
    return splits
