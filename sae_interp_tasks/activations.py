"""The activation pass: one streaming pass over the corpus that keeps, per latent, what later stages need.

The subject model runs only up to the SAE's hook layer (`stop_at_layer`), the SAE encodes
only the requested latents where that is exact for its architecture (a sliced copy of the
SAE, so sae_lens's own `encode` does the math), and per latent we keep:
  - firing count (tokens) and max activation,
  - the top `n_top` windows by max activation,
  - a uniform sample of `n_sample` activating windows (bottom-k of random keys),
and, shared by all latents, a uniform sample of `n_random` windows with each latent's max
activation on them (the pool non-activating examples are drawn from).
Windows are the `window`-token slices of each context; token-level activations are kept
for every stored window. Memory is latents x (n_top + n_sample) x window, whatever the
corpus length. The state is checkpointed to disk as it goes, so an interrupted pass
resumes; the finished pass is cached under a key of everything that determines it.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from sae_interp_tasks import corpus as corpus_mod
from sae_interp_tasks.caching import atomic_save, cache_key, cache_root
from sae_interp_tasks.config import StageConfig, option, positive
from sae_interp_tasks.errors import SaeInterpError
from sae_interp_tasks.records import Example, LatentRecord
from sae_interp_tasks.subject import stop_layer

log = logging.getLogger(__name__)

CACHE_VERSION = 1
# Architectures whose latents are computed independently of each other, so encoding a
# subset is exact. TopK-style ones couple latents through the top-k and need the full encode.
SUBSET_EXACT = {"standard", "jumprelu", "gated"}


@dataclass(frozen=True)
class PassConfig(StageConfig):
    """The activation pass's settings (task metadata keys)."""

    n_tokens: int = positive(262_144)
    context_size: int = option(256, min=2)
    window: int = positive(32)
    n_top: int = positive(40)  # strongest windows kept per latent
    n_sample: int = positive(200)  # uniform sample of activating windows kept per latent
    n_random: int = positive(2_000)  # shared uniform sample of all windows (non-activating examples)
    pass_batch_size: int = positive(8)  # at least this many contexts per forward

    def check(self) -> None:
        if self.context_size % self.window:
            raise SaeInterpError(f"context_size ({self.context_size}) must be a multiple of window ({self.window})")

    def batch_size(self, requested: int) -> int:
        """Contexts per forward: lm-eval's default --batch_size of 1 would make the pass several times slower."""
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
            firing=torch.zeros(n, dtype=torch.long), max_act=torch.zeros(n),
            top_key=torch.full((n, cfg.n_top), -torch.inf), top_id=torch.full((n, cfg.n_top), -1),
            top_tokens=torch.zeros(n, cfg.n_top, w, dtype=torch.int32), top_acts=torch.zeros(n, cfg.n_top, w),
            sample_key=torch.full((n, cfg.n_sample), torch.inf, dtype=torch.float64), sample_id=torch.full((n, cfg.n_sample), -1),
            sample_tokens=torch.zeros(n, cfg.n_sample, w, dtype=torch.int32),
            sample_acts=torch.zeros(n, cfg.n_sample, w),
            random_key=torch.full((cfg.n_random,), torch.inf, dtype=torch.float64), random_id=torch.full((cfg.n_random,), -1),
            random_tokens=torch.zeros(cfg.n_random, w, dtype=torch.int32),
            random_max=torch.zeros(cfg.n_random, n),
            seed=seed,
        )

    # --- the streaming update -------------------------------------------------------------
    def update(self, tokens: torch.Tensor, acts: torch.Tensor, window: int, context_ids: torch.Tensor) -> None:
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
            self.top_key, self.top_id, self.top_tokens, self.top_acts,
            torch.where(win_max > 0, win_max, -torch.inf), ids, win_tokens, win_acts, largest=True)
        # uniform sample of activating windows: the n_sample smallest random keys
        keys = hash_uniform(self.latents, ids, self.seed)
        self.sample_key, self.sample_id, self.sample_tokens, self.sample_acts = _keep(
            self.sample_key, self.sample_id, self.sample_tokens, self.sample_acts,
            torch.where(win_max > 0, keys, torch.inf), ids, win_tokens, win_acts, largest=False)
        # shared uniform sample of all windows, for non-activating examples (one row of _keep)
        rkeys = hash_uniform(torch.tensor([-1]), ids, self.seed)
        pool_tokens, pool_max = self.random_tokens[None], self.random_max[None]  # one row, slots x (window | latents)
        key, ident, _, _ = _keep(self.random_key[None], self.random_id[None], pool_tokens, pool_max, rkeys, ids,
                                 win_tokens, win_max.T[None], largest=False)
        self.random_key, self.random_id = key[0], ident[0]

    # --- reading records out ------------------------------------------------------------------
    def index_of(self, latent: int) -> int:
        hits = (self.latents == latent).nonzero()
        if len(hits) == 0:
            raise KeyError(f"latent {latent} was not in this pass")
        return int(hits[0, 0])

    def record(self, latent: int) -> LatentRecord:
        """One latent's examples: top windows strongest first, the sample by its keys (ties: earlier window)."""
        i = self.index_of(latent)
        top = [_example(self.top_tokens[i, j], self.top_acts[i, j], self.top_id[i, j])
               for j in _slot_order(self.top_key[i], self.top_id[i], largest=True) if torch.isfinite(self.top_key[i, j])]
        sample = [_example(self.sample_tokens[i, j], self.sample_acts[i, j], self.sample_id[i, j])
                  for j in _slot_order(self.sample_key[i], self.sample_id[i], largest=False)
                  if torch.isfinite(self.sample_key[i, j])]
        quiet = [g for g in _slot_order(self.random_key, self.random_id, largest=False)
                 if self.random_max[g, i] <= 0 and torch.isfinite(self.random_key[g])]
        non_act = [Example(tokens=self.random_tokens[g].numpy().astype(np.int64),
                           acts=np.zeros(self.random_tokens.shape[1], dtype=np.float32),
                           window_id=int(self.random_id[g])) for g in quiet]
        return LatentRecord(latent=latent, n_firing=int(self.firing[i]), n_tokens=self.n_tokens,
                            max_act=float(self.max_act[i]), top=top, activating=sample, non_activating=non_act)

    def merge(self, other: PassState) -> None:
        """Fold in a pass over other contexts (another rank's shard): the same state one pass over both
        would give, since every kept set is the k best by (key, window id)."""
        self.n_tokens += other.n_tokens
        self.n_contexts += other.n_contexts
        self.firing += other.firing
        self.max_act = torch.maximum(self.max_act, other.max_act)
        for prefix, largest in (("top", True), ("sample", False)):
            mine = [getattr(self, f"{prefix}_{n}") for n in ("key", "id", "tokens", "acts")]
            theirs = [getattr(other, f"{prefix}_{n}") for n in ("key", "id", "tokens", "acts")]
            _keep(*mine, *theirs, largest=largest)
        _keep(self.random_key[None], self.random_id[None], self.random_tokens[None], self.random_max[None],
              other.random_key[None], other.random_id[None], other.random_tokens[None], other.random_max[None],
              largest=False)

    def canonical(self) -> PassState:
        """The same state with every latent's slots in record order: states that keep the same windows
        are equal tensor for tensor, whatever order the windows arrived in."""
        out = PassState.from_dict(dict(self.__dict__))
        for prefix, largest in (("top", True), ("sample", False)):
            key, ids = getattr(self, f"{prefix}_key"), getattr(self, f"{prefix}_id")
            order = _rank(key, torch.where(ids < 0, _LAST, ids), largest)
            for name in ("key", "id"):
                setattr(out, f"{prefix}_{name}", getattr(self, f"{prefix}_{name}").gather(1, order))
            for name in ("tokens", "acts"):
                values = getattr(self, f"{prefix}_{name}")
                setattr(out, f"{prefix}_{name}", values.gather(1, order[..., None].expand(-1, -1, values.shape[2])))
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
    x = (latents.to(torch.int64)[:, None] * 0x2545F4914F6CDD1D + window_ids.to(torch.int64)[None, :] * 0x1E3779B97F4A7C15
         + salt) & mask
    for shift, mult in ((31, 0x3C79AC492BA7B653), (29, 0x1C69B3F74AC4AE35), (32, 1)):
        x = ((x ^ (x >> shift)) * mult) & mask
    return (x >> 9).to(torch.float64) / float(1 << 53)


def _example(tokens: torch.Tensor, acts: torch.Tensor, window_id: torch.Tensor) -> Example:
    return Example(tokens=tokens.numpy().astype(np.int64), acts=acts.numpy().astype(np.float32),
                   window_id=int(window_id))


_LAST = torch.iinfo(torch.long).max


def _rank(keys: torch.Tensor, ids: torch.Tensor, largest: bool) -> torch.Tensor:
    """Indices ordering each row best key first; equal keys go to the earlier window, and entries whose
    id is _LAST (empty slots, windows that cannot enter) go last, in their given order."""
    by_id = torch.argsort(ids, dim=1, stable=True)
    return by_id.gather(1, torch.sort(keys.gather(1, by_id), dim=1, descending=largest, stable=True).indices)


def _keep(key, ids, toks, acts, new_key, new_ids, new_toks, new_acts, largest: bool):
    """Per latent, keep the k best of the kept and the new windows by key (ties: the earlier window).

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
    # a window ties the worst kept one and may still win on its earlier id (when merging shards): ties
    # are candidates and the ranking decides; empty slots and non-firing windows never enter
    beats = new_key >= worst[:, None] if largest else new_key <= worst[:, None]
    can_enter = beats & torch.isfinite(new_key) & (new_ids >= 0)
    rows = can_enter.any(1).nonzero().flatten()
    if len(rows) == 0:
        return key, ids, toks, acts
    old_ids = torch.where(ids[rows] < 0, _LAST, ids[rows])
    cand_ids = torch.where(can_enter[rows], new_ids[rows], _LAST)
    order = _rank(torch.cat([key[rows], new_key[rows]], 1), torch.cat([old_ids, cand_ids], 1), largest)
    chosen = torch.zeros(len(rows), k + new_key.shape[1], dtype=torch.bool).scatter_(1, order[:, :k], True)
    enter_row, enter_col = chosen[:, k:].nonzero(as_tuple=True)  # row-major: rows in the same order
    leave_row, leave_slot = (~chosen[:, :k]).nonzero(as_tuple=True)
    lat = rows[enter_row]
    key[lat, leave_slot] = new_key[lat, enter_col]
    ids[lat, leave_slot] = new_ids[lat, enter_col]
    toks[lat, leave_slot] = new_toks[lat, enter_col]
    acts[lat, leave_slot] = new_acts[lat, enter_col]
    return key, ids, toks, acts


# --- encoding only some latents ---------------------------------------------------------------
def subset_encoder(sae, latents: torch.Tensor):
    """A function x -> acts[..., len(latents)], exact for the SAE's architecture.

    For architectures in SUBSET_EXACT this encodes with a sliced copy of the SAE (every
    parameter with a latent dimension cut to `latents`); otherwise it runs the full encode
    and selects columns.
    """
    d_sae = sae.cfg.d_sae
    full = len(latents) == d_sae and bool((latents == torch.arange(d_sae, device=latents.device)).all())
    if full:
        return sae.encode
    if sae.cfg.architecture() not in SUBSET_EXACT:
        idx = latents.to(sae.W_dec.device)
        return lambda x: sae.encode(x)[..., idx]
    import copy

    sliced = copy.deepcopy(sae)
    idx = latents.to(sae.W_dec.device)
    with torch.no_grad():
        for name, param in list(sliced.named_parameters(recurse=False)):
            if name == "b_dec":
                continue
            if name.startswith("W_enc") or (param.ndim == 2 and param.shape[1] == d_sae and param.shape[0] != d_sae):
                new = param.data[:, idx]
            elif param.shape and param.shape[0] == d_sae:
                new = param.data[idx]
            else:
                continue
            setattr(sliced, name, torch.nn.Parameter(new.clone(), requires_grad=False))
    sliced.cfg = copy.copy(sae.cfg)
    sliced.cfg.d_sae = len(latents)
    return sliced.encode


# --- the pass itself --------------------------------------------------------------------------
def pass_key(info, spec: corpus_mod.CorpusSpec, cfg: PassConfig, seed: int, latents: torch.Tensor,
             forward: str = "tl") -> str:
    """Everything that determines a pass's content (not the batch size: results do not depend on it)."""
    return cache_key({"forward": forward,
        "v": CACHE_VERSION, "sae": info.fingerprint, "model": info.model_name, "hook": info.hook_name,
        "bos": info.prepend_bos, "corpus": asdict(spec), "corpus_fp": corpus_mod.fingerprint(spec),
        "cfg": {k: v for k, v in asdict(cfg).items() if k != "pass_batch_size"}, "seed": seed,
        "latents": hashlib.sha256(latents.numpy().astype(np.int64).tobytes()).hexdigest(),
    })


def hook_activations(model, hook_name: str, tokens: torch.Tensor) -> torch.Tensor:
    """The hooked activation [B, T, d_in], running the model no further than needed."""
    _, cache = model.run_with_cache(tokens, names_filter=hook_name, stop_at_layer=stop_layer(hook_name),
                                    return_type=None)
    return cache[hook_name]


def run_activation_pass(model, sae, info, spec: corpus_mod.CorpusSpec, cfg: PassConfig, seed: int,
                        batch_size: int = 8, latents: torch.Tensor | None = None, cache_dir: Path | None = None,
                        progress: bool = True, checkpoint_seconds: float = 60.0, read=None,
                        forward: str = "tl", group=None) -> PassState:
    """The pass for `latents` (default: all), from the cache when it has it, resuming a partial one.

    `batch_size` contexts go through the model at once (at least cfg.pass_batch_size). `read(tokens)`
    gives the hooked activation (default: TransformerLens, stopping after the hook's layer); `forward`
    names it in the cache key. With a `group` of several processes (rank, world_size,
    all_gather_object: the backend), each rank reads every world_size-th context and the states are
    merged, so every rank holds what one process over the whole corpus would.
    """
    if latents is None:
        latents = torch.arange(info.d_sae)
    latents = latents.to(torch.long).cpu()
    if len(latents) == 0 or int(latents.min()) < 0 or int(latents.max()) >= info.d_sae:
        raise SaeInterpError(f"latent ids must lie in 0..{info.d_sae - 1} (the SAE has d_sae={info.d_sae})")
    rank, world = (group.rank, group.world_size) if group is not None else (0, 1)
    folder = Path(cache_dir or cache_root() / "activations") / pass_key(info, spec, cfg, seed, latents, forward)
    done = folder / "pass.pt"
    partial = folder / ("partial.pt" if world == 1 else f"partial.rank{rank}of{world}.pt")
    cached = done.exists()
    if world > 1:  # all ranks load, or all run their shard: a rank alone would wait in the merge for ever
        cached = all(group.all_gather_object(cached))
    if cached:
        log.info("activation pass: cached at %s", folder)
        return PassState.from_dict(torch.load(done, weights_only=False))
    folder.mkdir(parents=True, exist_ok=True)
    state = (PassState.from_dict(torch.load(partial, weights_only=False)) if partial.exists()
             else PassState.empty(latents, cfg, seed))
    if state.n_contexts:
        log.info("activation pass: resuming after %d contexts", state.n_contexts)

    encode = subset_encoder(sae, latents)
    device = next(sae.parameters()).device
    read = read or (lambda t: hook_activations(model, info.hook_name, t))
    batch_size = cfg.batch_size(batch_size)
    bar = tqdm(total=cfg.n_tokens // world, initial=state.n_tokens, unit="tokens", unit_scale=True,
               desc="activation pass" if world == 1 else f"activation pass (rank {rank})", disable=not progress)
    last_save = time.monotonic()
    batch: list[torch.Tensor] = []
    batch_ids: list[int] = []

    def flush():
        tokens = torch.stack(batch)
        with torch.no_grad():
            acts = encode(read(tokens.to(device)).to(sae.W_dec.dtype)).float().cpu()
        if info.prepend_bos:
            acts[:, 0] = 0  # BOS is not text: its activations would swamp every statistic
        state.update(tokens, acts, cfg.window, torch.tensor(batch_ids))
        bar.update(tokens.numel())
        batch.clear()
        batch_ids.clear()

    contexts = corpus_mod.token_contexts(spec, model.tokenizer, cfg.n_tokens, cfg.context_size, info.prepend_bos, seed)
    mine = (i for i in enumerate(contexts) if i[0] % world == rank)
    for _ in range(state.n_contexts):  # resume: skip what the checkpoint holds
        next(mine)
    for index, ctx in mine:
        batch.append(ctx)
        batch_ids.append(index)
        if len(batch) == batch_size:
            flush()
            if time.monotonic() - last_save > checkpoint_seconds:
                atomic_save(state.to_dict(), partial)
                last_save = time.monotonic()
    if batch:
        flush()
    bar.close()
    if world > 1:
        atomic_save(state.to_dict(), partial)  # a rank that dies in the merge resumes from here
        merged = PassState.empty(latents, cfg, seed)
        for part in group.all_gather_object(state.to_dict()):
            merged.merge(PassState.from_dict(part))
        state = merged
    atomic_save(state.to_dict(), done)
    partial.unlink(missing_ok=True)
    return state
