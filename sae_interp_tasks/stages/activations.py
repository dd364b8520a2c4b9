"""The activation pass: one streaming pass over the corpus that keeps, per latent, what later
stages need.

The subject model runs only up to the SAE's hook layer (`stop_at_layer`), the SAE encodes
only the requested latents where that is exact for its architecture (a sliced copy of the
SAE, so sae_lens's own `encode` does the math), and per latent we keep:
  - firing count (tokens) and max activation,
  - the top `n_top` windows by max activation,
  - a uniform sample of `n_sample` activating windows (bottom-k of random keys),
and, shared by all latents, a uniform sample of `n_random` windows with each latent's max
activation on them (the pool non-activating examples are drawn from).
Windows are the `window`-token slices of each context; token-level activations are kept
for every stored window (`pass_state.PassState`). Memory is latents x (n_top + n_sample) x window,
whatever the corpus length. The state is checkpointed to disk as it goes, so an interrupted pass
resumes; the finished pass is cached under a key of everything that determines it.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from sae_interp_tasks.caching import cache_key, cache_root
from sae_interp_tasks.errors import SaeInterpError
from sae_interp_tasks.stages import corpus as corpus_mod
from sae_interp_tasks.stages.pass_state import PassConfig, PassState
from sae_interp_tasks.stages.saes import MAX_CODE_FLOATS
from sae_interp_tasks.stages.saved import atomic_save
from sae_interp_tasks.stages.subject import stop_layer

__all__ = [
    "PassConfig",
    "PassState",
    "hook_activations",
    "pass_key",
    "run_activation_pass",
    "subset_encoder",
]

log = logging.getLogger(__name__)

CACHE_VERSION = 1
# Architectures whose latents are computed independently of each other, so encoding a
# subset is exact. TopK-style ones couple latents through the top-k and need the full encode.
SUBSET_EXACT = {"standard", "jumprelu", "gated"}


# --- encoding only some latents ---------------------------------------------------------------
def _in_blocks(encode, x: torch.Tensor, width: int) -> torch.Tensor:
    """`encode` ([positions, ...] -> [positions, kept columns]) of x [B, T, ...], a block of
    positions at a time, so a wide SAE's full code never exists for more than one block (each
    position encodes alone: the same codes, to the matmul's rounding)."""
    flat = x.reshape(-1, *x.shape[2:])
    step = max(1, MAX_CODE_FLOATS // width)
    if flat.shape[0] <= step:
        return encode(x)
    out = torch.cat([encode(flat[i : i + step]) for i in range(0, flat.shape[0], step)])
    return out.reshape(*x.shape[:2], -1)


def subset_encoder(sae, latents: torch.Tensor):
    """A function x -> acts[..., len(latents)], exact for the SAE's architecture.

    For architectures in SUBSET_EXACT this encodes with a sliced copy of the SAE (every
    parameter with a latent dimension cut to `latents`); otherwise it runs the full encode
    and selects columns.
    """
    d_sae = sae.cfg.d_sae
    full = len(latents) == d_sae and bool(
        (latents == torch.arange(d_sae, device=latents.device)).all()
    )
    if full:
        return sae.encode
    if sae.cfg.architecture() not in SUBSET_EXACT:
        idx = latents.to(sae.W_dec.device)
        return lambda x: _in_blocks(lambda rows: sae.encode(rows)[..., idx], x, d_sae)
    import copy

    sliced = copy.deepcopy(sae)
    idx = latents.to(sae.W_dec.device)
    with torch.no_grad():
        for name, param in list(sliced.named_parameters(recurse=False)):
            if name == "b_dec":
                continue
            if name.startswith("W_enc") or (
                param.ndim == 2 and param.shape[1] == d_sae and param.shape[0] != d_sae
            ):
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
def pass_key(
    info,
    spec: corpus_mod.CorpusSpec,
    cfg: PassConfig,
    seed: int,
    latents: torch.Tensor,
    forward: str = "tl",
) -> str:
    """Everything that determines a pass's content (not the batch size: results do not depend on
    it)."""
    return cache_key(
        {
            "forward": forward,
            "v": CACHE_VERSION,
            "sae": info.fingerprint,
            "model": info.model_name,
            "hook": info.hook_name,
            "bos": info.prepend_bos,
            "corpus": asdict(spec),
            "corpus_fp": corpus_mod.fingerprint(spec),
            "cfg": {k: v for k, v in asdict(cfg).items() if k != "pass_batch_size"},
            "seed": seed,
            "latents": hashlib.sha256(latents.numpy().astype(np.int64).tobytes()).hexdigest(),
        }
    )


def hook_activations(model, hook_name: str, tokens: torch.Tensor) -> torch.Tensor:
    """The hooked activation [B, T, d_in], running the model no further than needed."""
    _, cache = model.run_with_cache(
        tokens, names_filter=hook_name, stop_at_layer=stop_layer(hook_name), return_type=None
    )
    return cache[hook_name]


def _progress_bar(total: int, done: int, rank: int, world: int, progress: bool) -> tqdm:
    return tqdm(
        total=total,
        initial=done,
        unit="tokens",
        unit_scale=True,
        desc="activation pass" if world == 1 else f"activation pass (rank {rank})",
        disable=not progress,
    )


def _stream(
    model,
    sae,
    info,
    spec: corpus_mod.CorpusSpec,
    cfg: PassConfig,
    seed: int,
    state: PassState,
    latents: torch.Tensor,
    batch_size: int,
    read,
    where: tuple[int, int],
    partial: Path,
    progress: bool,
    checkpoint_seconds: float,
) -> None:
    """Fold this rank's share of the corpus contexts (every world-th) into `state`, past those it
    already holds, checkpointing to `partial` every `checkpoint_seconds`."""
    rank, world = where
    encode = subset_encoder(sae, latents)
    device = next(sae.parameters()).device
    bar = _progress_bar(cfg.n_tokens // world, state.n_tokens, rank, world, progress)
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

    contexts = corpus_mod.token_contexts(
        spec, model.tokenizer, cfg.n_tokens, cfg.context_size, info.prepend_bos, seed
    )
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


def run_activation_pass(
    model,
    sae,
    info,
    spec: corpus_mod.CorpusSpec,
    cfg: PassConfig,
    seed: int,
    batch_size: int = 8,
    latents: torch.Tensor | None = None,
    cache_dir: Path | None = None,
    progress: bool = True,
    checkpoint_seconds: float = 60.0,
    read=None,
    forward: str = "tl",
    group=None,
) -> PassState:
    """The pass for `latents` (default: all), from the cache when it has it, resuming a partial one.

    `batch_size` contexts go through the model at once (at least cfg.pass_batch_size).
    `read(tokens)` gives the hooked activation (default: TransformerLens, stopping after the hook's
    layer); `forward` names it in the cache key. With a `group` of several processes (rank,
    world_size, all_gather_object: the backend), each rank reads every world_size-th context and
    the states are merged, so every rank holds what one process over the whole corpus would.
    """
    latents = _checked_latents(latents, info)
    rank, world = (group.rank, group.world_size) if group is not None else (0, 1)
    folder = Path(cache_dir or cache_root() / "activations")
    folder /= pass_key(info, spec, cfg, seed, latents, forward)
    done, partial = folder / "pass.pt", folder / _partial_name(rank, world)
    cached = done.exists()
    if world > 1:  # all ranks load, or all run their shard: a rank alone would wait in the merge
        cached = all(group.all_gather_object(cached))
    if cached:
        log.info("activation pass: cached at %s", folder)
        return PassState.from_dict(torch.load(done, weights_only=False))
    folder.mkdir(parents=True, exist_ok=True)
    state = _resumed(partial, latents, cfg, seed)
    read = read or (lambda t: hook_activations(model, info.hook_name, t))
    _stream(
        model,
        sae,
        info,
        spec,
        cfg,
        seed,
        state,
        latents,
        cfg.batch_size(batch_size),
        read,
        (rank, world),
        partial,
        progress,
        checkpoint_seconds,
    )
    if world > 1:
        atomic_save(state.to_dict(), partial)  # a rank that dies in the merge resumes from here
        state = _merged(group, state, latents, cfg, seed)
    atomic_save(state.to_dict(), done)
    partial.unlink(missing_ok=True)
    return state


def _partial_name(rank: int, world: int) -> str:
    """The checkpoint of a pass under way: one per rank of a launcher."""
    return "partial.pt" if world == 1 else f"partial.rank{rank}of{world}.pt"


def _checked_latents(latents: torch.Tensor | None, info) -> torch.Tensor:
    latents = torch.arange(info.d_sae) if latents is None else latents
    latents = latents.to(torch.long).cpu()
    if len(latents) == 0 or int(latents.min()) < 0 or int(latents.max()) >= info.d_sae:
        raise SaeInterpError(
            f"latent ids must lie in 0..{info.d_sae - 1} (the SAE has d_sae={info.d_sae})"
        )
    return latents


def _resumed(partial: Path, latents: torch.Tensor, cfg: PassConfig, seed: int) -> PassState:
    """The checkpoint an interrupted pass left, or an empty state."""
    if not partial.exists():
        return PassState.empty(latents, cfg, seed)
    state = PassState.from_dict(torch.load(partial, weights_only=False))
    if state.n_contexts:
        log.info("activation pass: resuming after %d contexts", state.n_contexts)
    return state


def _merged(group, state: PassState, latents, cfg: PassConfig, seed: int) -> PassState:
    """Every rank's state merged, on every rank: what one process over the whole corpus holds."""
    merged = PassState.empty(latents, cfg, seed)
    for part in group.all_gather_object(state.to_dict()):
        merged.merge(PassState.from_dict(part))
    return merged


def check_widths(model, info, sae) -> None:
    """The SAE reads (and a transcoder writes) activations as wide as the model's hooks."""
    probe = torch.tensor([[model.tokenizer.bos_token_id or 0, 1]], device=model.cfg.device)
    width = hook_activations(model, info.hook_name, probe).shape[-1]
    if width != info.d_in:
        raise SaeInterpError(
            f"the SAE reads {info.d_in}-wide activations but {info.hook_name} of "
            f"{model.cfg.model_name} is {width}-wide; pick the subject model the SAE was trained on"
        )
    if info.hook_name_out:
        out = hook_activations(model, info.hook_name_out, probe).shape[-1]
        if out != sae.W_dec.shape[-1]:
            raise SaeInterpError(
                f"the transcoder writes {sae.W_dec.shape[-1]}-wide activations but "
                f"{info.hook_name_out} of {model.cfg.model_name} is {out}-wide; fix its "
                "metadata's hook_name_out or pick the model it was trained on"
            )
