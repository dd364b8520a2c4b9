"""What the activation pass keeps, per latent, as it streams over the corpus (`PassState`), and the
pass's settings (`PassConfig`); the pass itself is `activations.py`.

Each latent keeps its top windows and its sample as unordered sets of slots: a batch writes only
the windows that enter a set, into the slots of those that leave, so a batch costs what changes
rather than a sort and copy of every kept window (`_keep`). Reading a record orders the slots
canonically (top: strongest first; sample: by hash key; ties to the earlier window), so results do
not depend on arrival order, and `merge` folds one process's shard into another's exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from sae_interp_tasks.config import StageConfig, option, positive
from sae_interp_tasks.errors import SaeInterpError
from sae_interp_tasks.records import Example, LatentRecord


@dataclass(frozen=True)
class PassConfig(StageConfig):
    """The activation pass's settings (task metadata keys)."""

    n_tokens: int = positive(262_144)
    context_size: int = option(256, min=2)
    window: int = positive(32)
    n_top: int = positive(40)  # strongest windows kept per latent
    n_sample: int = positive(200)  # uniform sample of activating windows kept per latent
    # shared uniform sample of all windows (non-activating examples)
    n_random: int = positive(2_000)
    pass_batch_size: int = positive(8)  # at least this many contexts per forward

    def check(self) -> None:
        if self.context_size % self.window:
            raise SaeInterpError(
                f"context_size ({self.context_size}) must be a multiple of window ({self.window})"
            )

    def batch_size(self, requested: int) -> int:
        """Contexts per forward: lm-eval's default --batch_size of 1 would make the pass several
        times slower."""
        return max(int(requested), self.pass_batch_size)


@dataclass
class PassState:
    """The running (and, at the end, final) per-latent summaries. Tensors on CPU."""

    latents: torch.Tensor  # [L] latent ids
    n_tokens: int = 0
    n_contexts: int = 0
    firing: torch.Tensor = None  # [L] int64 tokens with act > 0
    max_act: torch.Tensor = None  # [L]
    top_key: torch.Tensor = None  # [L, n_top] window max act (-inf = empty)
    top_id: torch.Tensor = None  # [L, n_top] window id
    top_tokens: torch.Tensor = None  # [L, n_top, W]
    top_acts: torch.Tensor = None  # [L, n_top, W]
    sample_key: torch.Tensor = None  # [L, n_sample] random key (+inf = empty)
    sample_id: torch.Tensor = None
    sample_tokens: torch.Tensor = None
    sample_acts: torch.Tensor = None
    random_key: torch.Tensor = None  # [G] random key (+inf = empty)
    random_id: torch.Tensor = None  # [G]
    random_tokens: torch.Tensor = None  # [G, W]
    random_max: torch.Tensor = None  # [G, L] each latent's max act on the window
    seed: int = 0
    extra: dict = field(default_factory=dict)

    @classmethod
    def empty(cls, latents: torch.Tensor, cfg: PassConfig, seed: int) -> PassState:
        n, w = len(latents), cfg.window
        return cls(
            latents=latents.clone(),
            firing=torch.zeros(n, dtype=torch.long),
            max_act=torch.zeros(n),
            top_key=torch.full((n, cfg.n_top), -torch.inf),
            top_id=torch.full((n, cfg.n_top), -1),
            top_tokens=torch.zeros(n, cfg.n_top, w, dtype=torch.int32),
            top_acts=torch.zeros(n, cfg.n_top, w),
            sample_key=torch.full((n, cfg.n_sample), torch.inf, dtype=torch.float64),
            sample_id=torch.full((n, cfg.n_sample), -1),
            sample_tokens=torch.zeros(n, cfg.n_sample, w, dtype=torch.int32),
            sample_acts=torch.zeros(n, cfg.n_sample, w),
            random_key=torch.full((cfg.n_random,), torch.inf, dtype=torch.float64),
            random_id=torch.full((cfg.n_random,), -1),
            random_tokens=torch.zeros(cfg.n_random, w, dtype=torch.int32),
            random_max=torch.zeros(cfg.n_random, n),
            seed=seed,
        )

    # --- the streaming update -------------------------------------------------------------
    def update(
        self, tokens: torch.Tensor, acts: torch.Tensor, window: int, context_ids: torch.Tensor
    ) -> None:
        """Fold one batch in. tokens: [B, T]; acts: [B, T, L] (already zeroed where not counted);
        context_ids: [B] each context's index in the corpus (window ids derive from it)."""
        b, t, n = acts.shape
        nw = t // window
        self.n_tokens += b * t
        self.n_contexts += b
        self.firing += (acts > 0).sum(dim=(0, 1))
        self.max_act = torch.maximum(self.max_act, acts.amax(dim=(0, 1)))

        win_tokens = tokens.reshape(b * nw, window).to(torch.int32)  # [N, W]
        win_acts = acts.reshape(b * nw, window, n).permute(2, 0, 1)  # [L, N, W]
        win_max = win_acts.amax(dim=2)  # [L, N]
        ids = (context_ids.to(torch.long)[:, None] * nw + torch.arange(nw)).flatten()

        # top windows: keep the n_top largest window maxima
        self.top_key, self.top_id, self.top_tokens, self.top_acts = _keep(
            self.top_key,
            self.top_id,
            self.top_tokens,
            self.top_acts,
            torch.where(win_max > 0, win_max, -torch.inf),
            ids,
            win_tokens,
            win_acts,
            largest=True,
        )
        # uniform sample of activating windows: the n_sample smallest random keys
        keys = hash_uniform(self.latents, ids, self.seed)
        self.sample_key, self.sample_id, self.sample_tokens, self.sample_acts = _keep(
            self.sample_key,
            self.sample_id,
            self.sample_tokens,
            self.sample_acts,
            torch.where(win_max > 0, keys, torch.inf),
            ids,
            win_tokens,
            win_acts,
            largest=False,
        )
        # shared uniform sample of all windows, for non-activating examples (one row of _keep)
        rkeys = hash_uniform(torch.tensor([-1]), ids, self.seed)
        # one row, slots x (window | latents)
        pool_tokens, pool_max = self.random_tokens[None], self.random_max[None]
        key, ident, _, _ = _keep(
            self.random_key[None],
            self.random_id[None],
            pool_tokens,
            pool_max,
            rkeys,
            ids,
            win_tokens,
            win_max.T[None],
            largest=False,
        )
        self.random_key, self.random_id = key[0], ident[0]

    # --- reading records out ------------------------------------------------------------------
    def index_of(self, latent: int) -> int:
        hits = (self.latents == latent).nonzero()
        if len(hits) == 0:
            raise KeyError(f"latent {latent} was not in this pass")
        return int(hits[0, 0])

    def n_firing(self, latent: int) -> int:
        """Tokens of the pass on which the latent fired."""
        return int(self.firing[self.index_of(latent)])

    def record(self, latent: int) -> LatentRecord:
        """One latent's examples: top windows strongest first, the sample by its keys (ties:
        earlier window)."""
        i = self.index_of(latent)
        top = [
            _example(self.top_tokens[i, j], self.top_acts[i, j], self.top_id[i, j])
            for j in _slot_order(self.top_key[i], self.top_id[i], largest=True)
            if torch.isfinite(self.top_key[i, j])
        ]
        sample = [
            _example(self.sample_tokens[i, j], self.sample_acts[i, j], self.sample_id[i, j])
            for j in _slot_order(self.sample_key[i], self.sample_id[i], largest=False)
            if torch.isfinite(self.sample_key[i, j])
        ]
        quiet = [
            g
            for g in _slot_order(self.random_key, self.random_id, largest=False)
            if self.random_max[g, i] <= 0 and torch.isfinite(self.random_key[g])
        ]
        non_act = [
            Example(
                tokens=self.random_tokens[g].numpy().astype(np.int64),
                acts=np.zeros(self.random_tokens.shape[1], dtype=np.float32),
                window_id=int(self.random_id[g]),
            )
            for g in quiet
        ]
        return LatentRecord(
            latent=latent,
            n_firing=int(self.firing[i]),
            n_tokens=self.n_tokens,
            max_act=float(self.max_act[i]),
            top=top,
            activating=sample,
            non_activating=non_act,
        )

    def merge(self, other: PassState) -> None:
        """Fold in a pass over other contexts (another rank's shard): the same state one pass over
        both would give, since every kept set is the k best by (key, window id)."""
        self.n_tokens += other.n_tokens
        self.n_contexts += other.n_contexts
        self.firing += other.firing
        self.max_act = torch.maximum(self.max_act, other.max_act)
        for prefix, largest in (("top", True), ("sample", False)):
            mine = [getattr(self, f"{prefix}_{n}") for n in ("key", "id", "tokens", "acts")]
            theirs = [getattr(other, f"{prefix}_{n}") for n in ("key", "id", "tokens", "acts")]
            _keep(*mine, *theirs, largest=largest)
        _keep(
            self.random_key[None],
            self.random_id[None],
            self.random_tokens[None],
            self.random_max[None],
            other.random_key[None],
            other.random_id[None],
            other.random_tokens[None],
            other.random_max[None],
            largest=False,
        )

    def shared_windows(self) -> list[torch.Tensor]:
        """The token ids of the shared sample's windows in record order (by hash key): the same
        list however the pass was split across processes."""
        order = _slot_order(self.random_key, self.random_id, largest=False)
        return [self.random_tokens[g] for g in order if torch.isfinite(self.random_key[g])]

    def canonical(self) -> PassState:
        """The same state with every latent's slots in record order: states that keep the same
        windows are equal tensor for tensor, whatever order the windows arrived in."""
        out = PassState.from_dict(dict(self.__dict__))
        for prefix, largest in (("top", True), ("sample", False)):
            key, ids = getattr(self, f"{prefix}_key"), getattr(self, f"{prefix}_id")
            order = _rank(key, torch.where(ids < 0, _LAST, ids), largest)
            for name in ("key", "id"):
                setattr(out, f"{prefix}_{name}", getattr(self, f"{prefix}_{name}").gather(1, order))
            for name in ("tokens", "acts"):
                values = getattr(self, f"{prefix}_{name}")
                setattr(
                    out,
                    f"{prefix}_{name}",
                    values.gather(1, order[..., None].expand(-1, -1, values.shape[2])),
                )
        order = _slot_order(self.random_key, self.random_id, largest=False)
        for name in ("random_key", "random_id", "random_tokens", "random_max"):
            setattr(out, name, getattr(self, name)[order])
        return out

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items()}

    @classmethod
    def from_dict(cls, d: dict) -> PassState:
        return cls(**d)


def _slot_order(key: torch.Tensor, ids: torch.Tensor, largest: bool) -> list[int]:
    return _rank(key[None], torch.where(ids < 0, _LAST, ids)[None], largest)[0].tolist()


def hash_uniform(latents: torch.Tensor, window_ids: torch.Tensor, seed: int) -> torch.Tensor:
    """Uniform [0, 1) keys [L, N], a fixed function of (seed, latent, window).

    Sampling by these keys makes a latent's sample independent of which other latents share
    the pass and of the batch layout, so `--limit` and resumes never change its examples.
    """
    mask = (1 << 62) - 1  # int64 arithmetic wraps; masking keeps every value non-negative
    salt = (int(seed) * 0x232BE59BD9B4E019) & mask
    x = (
        latents.to(torch.int64)[:, None] * 0x2545F4914F6CDD1D
        + window_ids.to(torch.int64)[None, :] * 0x1E3779B97F4A7C15
        + salt
    ) & mask
    for shift, mult in ((31, 0x3C79AC492BA7B653), (29, 0x1C69B3F74AC4AE35), (32, 1)):
        x = ((x ^ (x >> shift)) * mult) & mask
    return (x >> 9).to(torch.float64) / float(1 << 53)


def _example(tokens: torch.Tensor, acts: torch.Tensor, window_id: torch.Tensor) -> Example:
    return Example(
        tokens=tokens.numpy().astype(np.int64),
        acts=acts.numpy().astype(np.float32),
        window_id=int(window_id),
    )


_LAST = torch.iinfo(torch.long).max


def _rank(keys: torch.Tensor, ids: torch.Tensor, largest: bool) -> torch.Tensor:
    """Indices ordering each row best key first; equal keys go to the earlier window, and entries
    whose id is _LAST (empty slots, windows that cannot enter) go last, in their given order."""
    by_id = torch.argsort(ids, dim=1, stable=True)
    return by_id.gather(
        1, torch.sort(keys.gather(1, by_id), dim=1, descending=largest, stable=True).indices
    )


def _keep(key, ids, toks, acts, new_key, new_ids, new_toks, new_acts, largest: bool):
    """Per latent, keep the k best of the kept and the new windows by key (ties: the earlier
    window).

    Slots are an unordered set (`PassState.canonical` orders them): only the new windows that enter
    are written, into the slots of those that leave, so a batch costs what changes, not k x window
    per latent. key/ids: [L, k]; toks/acts: [L, k, W]; new_key: [L, N]; new_ids: [N] (one batch) or
    [L, N] (another state's kept windows); new_toks: [N, W] or [L, N, W]; new_acts: [L, N, W].
    Updated in place; returned for convenience.
    """
    k = key.shape[1]
    if new_ids.dim() == 1:  # one batch's windows, the same for every latent
        new_ids, new_toks = new_ids.expand(len(key), -1), new_toks.expand(len(key), -1, -1)
    worst = key.min(1).values if largest else key.max(1).values  # empty slots hold the worst key
    # a window ties the worst kept one and may still win on its earlier id (when merging shards):
    # ties are candidates and the ranking decides; empty slots and non-firing windows never enter
    beats = new_key >= worst[:, None] if largest else new_key <= worst[:, None]
    can_enter = beats & torch.isfinite(new_key) & (new_ids >= 0)
    rows = can_enter.any(1).nonzero().flatten()
    if len(rows) == 0:
        return key, ids, toks, acts
    old_ids = torch.where(ids[rows] < 0, _LAST, ids[rows])
    cand_ids = torch.where(can_enter[rows], new_ids[rows], _LAST)
    order = _rank(
        torch.cat([key[rows], new_key[rows]], 1), torch.cat([old_ids, cand_ids], 1), largest
    )
    chosen = torch.zeros(len(rows), k + new_key.shape[1], dtype=torch.bool).scatter_(
        1, order[:, :k], True
    )
    enter_row, enter_col = chosen[:, k:].nonzero(as_tuple=True)  # row-major: rows in the same order
    leave_row, leave_slot = (~chosen[:, :k]).nonzero(as_tuple=True)
    lat = rows[enter_row]
    key[lat, leave_slot] = new_key[lat, enter_col]
    ids[lat, leave_slot] = new_ids[lat, enter_col]
    toks[lat, leave_slot] = new_toks[lat, enter_col]
    acts[lat, leave_slot] = new_acts[lat, enter_col]
    return key, ids, toks, acts
