"""Reconstruction and sparsity of an SAE over corpus chunks (the sae_core task): no LLM.

Per corpus chunk (one doc) we collect sufficient statistics; the suite-level numbers are
computed from their sums, so explained variance is about the corpus mean (not about zero,
the bug sae_lens fixed in its issue #659) and CE loss recovered is a ratio of total losses:
    (CE_zero_ablation - CE_spliced) / (CE_zero_ablation - CE_clean).
Special-token positions (BOS, EOS separators, PAD: sae_lens's `get_special_token_ids`) are
handled as sae_lens's `run_evals` does by default, so the numbers compare with published ones:
they are left out of the activation statistics, the SAE is not spliced in there, and losses
predicted from them are dropped. Zero ablation covers every position.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from dataclasses import dataclass

import numpy as np
import torch

from sae_interp_tasks.config import StageConfig, option, positive
from sae_interp_tasks.stages.core_kl import _with_unembed_input, clean_kl_terms, spliced_kl
from sae_interp_tasks.stages.saes import MAX_CODE_FLOATS, reconstruct

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CoreConfig(StageConfig):
    """sae_core's settings: docs are chunks of `chunk_contexts` contexts of `context_size`
    tokens."""

    n_tokens: int = positive(32_768)
    context_size: int = option(256, min=2)
    chunk_contexts: int = positive(8)
    seed: int | None = option(None, min=0)  # None: the harness's --seed
    # SAEBench's per-latent metrics (density, consistent activation heuristic, encoder bias and
    # norm, encoder-decoder cosine, max cosines to the other latents) in the results, for its core
    # file; the max cosines cost width^2 x d_in: false for very wide SAEs on a CPU
    feature_metrics: bool = True

    @property
    def chunk_tokens(self) -> int:
        return self.chunk_contexts * self.context_size

    @property
    def n_chunks(self) -> int:
        return max(1, self.n_tokens // self.chunk_tokens)


@dataclass(frozen=True)
class CoreStats:
    n_tokens: int
    l0_sum: float
    sq_err_sum: float
    x_sum: np.ndarray  # [d_in]
    x_sq_sum: float  # sum of ||x||^2
    firing: np.ndarray  # [d_sae] tokens each latent fired on
    ce_clean: float  # mean next-token CE of this chunk
    ce_spliced: float
    ce_zero: float
    # sums over the chunk's tokens of what SAEBench's core eval also reports
    l1_sum: float = 0.0  # |acts|_1
    cos_sum: float = 0.0  # cosine(x, x_hat)
    norm_in_sum: float = 0.0  # |x|
    norm_out_sum: float = 0.0  # |x_hat|
    ratio_sum: float = 0.0  # |x_hat| / |x|
    xhat_sq_sum: float = 0.0  # |x_hat|^2
    dot_sum: float = 0.0  # x . x_hat
    # SAEBench's KL divergences of the next-token distribution from the clean one, summed over the
    # chunk's kept positions (kl_tokens of them): with the SAE spliced in, with the hook zeroed
    kl_sae_sum: float = 0.0
    kl_zero_sum: float = 0.0
    kl_tokens: int = 0
    # SAEBench's legacy explained variance, per token 1 - |x - x_hat|^2 / |x - mean|^2 with the
    # chunk's mean (its batch's in SAEBench), summed
    ev_legacy_sum: float = 0.0
    # per latent, the contexts of the chunk it fired in (SAEBench's consistent activation
    # heuristic divides firing tokens by these); like `firing`, not logged
    contexts_firing: np.ndarray | None = None
    positions: int = 0  # every position of the chunk, special tokens too (SAEBench's token count)

    def to_json(self) -> dict:
        """The sufficient statistics of the pooled metrics, as --log_samples writes them (not
        `firing`: d_sae counts a chunk), so `sae-interp compare` can bootstrap explained variance
        and CE loss recovered."""
        sums = {name: float(getattr(self, name)) for name in EXTRA_SUMS}
        return {
            "n_tokens": int(self.n_tokens),
            "l0_sum": float(self.l0_sum),
            "sq_err_sum": float(self.sq_err_sum),
            "x_sq_sum": float(self.x_sq_sum),
            "x_sum": np.asarray(self.x_sum, dtype=float).tolist(),
            "ce_clean": float(self.ce_clean),
            "ce_spliced": float(self.ce_spliced),
            "ce_zero": float(self.ce_zero),
            **sums,
        }

    def __repr__(self) -> str:  # logged samples stay readable
        return (
            f"CoreStats(n_tokens={self.n_tokens}, l0={self.l0_sum / max(self.n_tokens, 1):.2f}, "
            f"mse={self.sq_err_sum / max(self.n_tokens, 1):.4g}, ce_clean={self.ce_clean:.4f}, "
            f"ce_spliced={self.ce_spliced:.4f}, ce_zero={self.ce_zero:.4f})"
        )


def _next_token_ce(logits: torch.Tensor, tokens: torch.Tensor, keep: torch.Tensor) -> float:
    """Mean next-token loss over the positions `keep` [B, T] marks (the prediction's source
    position). logsumexp minus the target's logit: reads the logits once, writes no [B, T, vocab]
    log-softmax."""
    body = logits[:, :-1].float()
    losses = torch.logsumexp(body, -1) - body.gather(
        -1, tokens[:, 1:, None].to(body.device)
    ).squeeze(-1)
    return float(losses[keep[:, :-1]].mean())


def special_ids(tokenizer) -> list[int]:
    from sae_lens.util import get_special_token_ids

    return get_special_token_ids(tokenizer)


@dataclass(frozen=True, eq=False)
class ChunkReference:
    """What sae_core needs from a chunk that does not depend on the SAE: computed once per subject
    model, hook, corpus and seed, and cached, so every further SAE at that hook pays only for its
    encode and the spliced forward from the hook on."""

    x: torch.Tensor  # the hooked activation [B, T, ...] (the subject model's dtype, on the CPU)
    ce_clean: float
    ce_zero: float
    # what the KL divergences need of the clean next-token distribution p at each position, so no
    # [B, T, vocab] is kept: sum p log p [B, T], the expected unembedding row p @ W_U^T
    # [B, T, d_model] and p @ b_U [B, T] (see clean_kl_terms), and the KL to the zero-ablated
    # distribution [B, T]
    neg_entropy: torch.Tensor
    expected_row: torch.Tensor
    expected_bias: torch.Tensor
    kl_zero: torch.Tensor
    y: torch.Tensor | None = None  # a transcoder's output-hook activation (its target), else None


_RESID = re.compile(r"^blocks\.(\d+)\.hook_resid_(pre|post)$")


def resid_start(hook_name: str) -> int | None:
    """The TransformerLens `start_at_layer` that continues the model from a residual-stream hook
    (None for hooks inside a block, which need a hooked full forward)."""
    match = _RESID.match(hook_name)
    if match is None:
        return None
    return int(match.group(1)) + (match.group(2) == "post")


@torch.no_grad()
def zero_ablation_logits(model, hook_name: str) -> torch.Tensor | None:
    """The logits with the whole residual stream zeroed at a residual-stream hook, [vocab].

    With the same vector at every position nothing after the hook can tell positions apart:
    attention mixes identical values, so its output is the same whatever the pattern, and the
    normalisations and MLPs act per position. The zero-ablated logits are one row, computed from a
    single position. None for other hooks (zeroing them leaves the residual stream
    position-dependent)."""
    start = resid_start(hook_name)
    if start is None:
        return None
    zeros = torch.zeros(1, 1, model.cfg.d_model, device=model.cfg.device, dtype=model.cfg.dtype)
    return model(zeros, start_at_layer=start)[0, 0].float()


def _keep_mask(tokens: torch.Tensor, special: list[int]) -> torch.Tensor:
    return ~torch.isin(tokens, torch.tensor(special, dtype=tokens.dtype, device=tokens.device))


@torch.no_grad()
def chunk_reference(
    model,
    hook_name: str,
    tokens: torch.Tensor,
    special: list[int],
    reader=None,
    zero_logits: torch.Tensor | None = None,
    out_hook: str | None = None,
) -> ChunkReference:
    """The chunk's hooked activation, its clean and zero-ablated losses and what the KL divergences
    need of its clean distribution: one clean forward (the Hugging Face model's when `reader` is
    given), and no zero-ablated forward for residual hooks. A transcoder's (`out_hook`): its output
    hook's activation too, and the losses with that hook zeroed."""
    keep = _keep_mask(tokens, special)
    y = None
    if reader is not None:
        x, logits = reader.activations_and_logits(tokens)
    else:
        names = [hook_name, out_hook] if out_hook else [hook_name]
        logits, cache = model.run_with_cache(tokens, names_filter=names)
        x, y = cache[hook_name], cache[out_hook] if out_hook else None
    zeroed = None
    if zero_logits is not None:
        row = zero_logits.to(tokens.device)
        losses = torch.logsumexp(row, -1) - row[tokens[:, 1:]]
        ce_zero = float(losses[keep[:, :-1]].mean())
    else:
        zeroed = model.run_with_hooks(
            tokens, fwd_hooks=[(out_hook or hook_name, lambda a, hook: torch.zeros_like(a))]
        )
        ce_zero = _next_token_ce(zeroed, tokens, keep)
    neg_entropy, expected_row, expected_bias, kl_zero = clean_kl_terms(
        logits, model, zero_logits, zeroed
    )
    return ChunkReference(
        x=x.detach().cpu(),
        ce_clean=_next_token_ce(logits, tokens, keep),
        ce_zero=ce_zero,
        neg_entropy=neg_entropy,
        expected_row=expected_row,
        expected_bias=expected_bias,
        kl_zero=kl_zero,
        y=None if y is None else y.detach().cpu(),
    )


@torch.no_grad()
def chunk_stats(
    model,
    sae,
    hook_name: str,
    tokens: torch.Tensor,
    reference: ChunkReference,
    special: list[int] | None = None,
    out_hook: str | None = None,
) -> CoreStats:
    """One chunk's statistics for one SAE: one encode, and the spliced forward from the hook on. A
    transcoder (`out_hook`) is measured against its output hook's activation, spliced in there."""
    special = special_ids(model.tokenizer) if special is None else special
    keep = _keep_mask(tokens, special)
    x = reference.x.to(tokens.device)
    target = x if reference.y is None else reference.y.to(tokens.device)
    if keep.numel() * sae.cfg.d_sae > MAX_CODE_FLOATS and x.dim() == 3:
        return _blocked_stats(model, sae, hook_name, tokens, reference, keep, out_hook)
    acts = sae.encode(x.to(sae.W_dec.dtype))
    recon = reconstruct(sae, x.to(sae.W_dec.dtype), acts)
    logits, kl_sae = _spliced(model, hook_name, tokens, reference, keep, recon, out_hook)
    return _stats(
        target.to(sae.W_dec.dtype)[keep],
        acts[keep],
        recon[keep],
        reference.ce_clean,
        _next_token_ce(logits, tokens, keep),
        reference.ce_zero,
        kl=(kl_sae[keep], reference.kl_zero.to(keep.device)[keep]),
        contexts_firing=_contexts_firing(acts, keep),
        positions=int(tokens.numel()),
    )


def _spliced(model, hook_name, tokens, reference, keep, recon, out_hook):
    """(logits, KL from the clean distribution [B, T]) with `recon` spliced in at the kept positions
    of the hook the dictionary writes, the model run from there on."""
    target = reference.x if reference.y is None else reference.y
    target = target.to(tokens.device)
    mask = keep.view(*keep.shape, *([1] * (target.dim() - 2)))
    spliced = torch.where(mask, recon.to(target.dtype), target)
    hook_name = out_hook or hook_name
    start = resid_start(hook_name)
    if start is not None:
        logits, h = _with_unembed_input(model, lambda: model(spliced, start_at_layer=start))
    else:
        logits, h = _with_unembed_input(
            model,
            lambda: model.run_with_hooks(
                tokens, fwd_hooks=[(hook_name, lambda a, hook: spliced.to(a.dtype))]
            ),
        )
    return logits, spliced_kl(reference, logits, h)


def _blocked_stats(model, sae, hook_name, tokens, reference, keep, out_hook) -> CoreStats:
    """chunk_stats for a wide SAE: encoded `MAX_CODE_FLOATS // width` positions at a time, so no
    [positions, width] code outlives its block; the block sums add up to the chunk's (the legacy
    explained variance centred on the chunk's mean, as in one piece)."""
    b, t = keep.shape
    dtype = sae.W_dec.dtype
    x = reference.x.reshape(b * t, -1).to(dtype)
    target = (reference.x if reference.y is None else reference.y).reshape(b * t, -1).to(dtype)
    flat_keep = keep.reshape(-1).cpu()
    mean = target[flat_keep].double().mean(0)
    recon = torch.empty_like(target)
    fired = torch.zeros(b, sae.cfg.d_sae, dtype=torch.bool)
    step, parts = max(1, MAX_CODE_FLOATS // sae.cfg.d_sae), []
    for start in range(0, b * t, step):
        rows = torch.arange(start, min(start + step, b * t))
        acts = sae.encode(x[rows])
        recon[rows] = reconstruct(sae, x[rows], acts)
        kept = flat_keep[rows]
        for context in (rows // t).unique().tolist():
            fired[context] |= (acts[kept & (rows // t == context)] > 0).any(0)
        parts.append(_stats(target[rows][kept], acts[kept], recon[rows][kept], 0, 0, 0, mean=mean))
    logits, kl_sae = _spliced(
        model, hook_name, tokens, reference, keep, recon.reshape(b, t, -1), out_hook
    )
    sums = {
        f.name: sum(getattr(p, f.name) for p in parts)
        for f in dataclasses.fields(CoreStats)
        if f.name in BLOCK_SUMS
    }
    return dataclasses.replace(
        parts[0],
        **sums,
        ce_clean=reference.ce_clean,
        ce_spliced=_next_token_ce(logits, tokens, keep),
        ce_zero=reference.ce_zero,
        kl_sae_sum=float(kl_sae[keep].double().sum()),
        kl_zero_sum=float(reference.kl_zero.to(keep.device)[keep].double().sum()),
        kl_tokens=int(keep.sum()),
        contexts_firing=fired.sum(0).numpy().astype(np.int64),
        positions=int(tokens.numel()),
    )


def _contexts_firing(acts: torch.Tensor, keep: torch.Tensor) -> np.ndarray:
    """Per latent, the contexts in which it fires at a kept position."""
    fired = (acts > 0) & keep[..., None]
    return fired.any(1).sum(0).cpu().numpy().astype(np.int64)


def _stats(
    x: torch.Tensor,
    acts: torch.Tensor,
    recon: torch.Tensor,
    ce_clean: float,
    ce_spliced: float,
    ce_zero: float,
    kl: tuple[torch.Tensor, torch.Tensor] | None = None,
    contexts_firing: np.ndarray | None = None,
    positions: int = 0,
    mean: torch.Tensor | None = None,
) -> CoreStats:
    """A chunk's statistics from its kept positions' activations [N, d_in], codes and
    reconstructions, and the KL divergences at those positions (with the SAE, with the hook
    zeroed); the legacy explained variance about `mean` (default: these positions')."""
    xd, rd = x.double(), recon.double()
    norm_in, norm_out = xd.norm(dim=-1), rd.norm(dim=-1)
    sq_err = ((rd - xd) ** 2).sum(-1)
    spread = ((xd - (xd.mean(0) if mean is None else mean)) ** 2).sum(-1)
    kl_sae, kl_zero = kl if kl is not None else (torch.zeros(0), torch.zeros(0))
    return CoreStats(
        n_tokens=x.shape[0],
        l0_sum=float((acts > 0).sum()),
        sq_err_sum=float(((recon - x) ** 2).sum()),
        x_sum=x.sum(0).double().cpu().numpy(),
        x_sq_sum=float((xd**2).sum()),
        firing=(acts > 0).sum(0).cpu().numpy().astype(np.int64),
        ce_clean=ce_clean,
        ce_spliced=ce_spliced,
        ce_zero=ce_zero,
        l1_sum=float(acts.abs().sum()),
        cos_sum=float(((xd * rd).sum(-1) / (norm_in * norm_out).clamp_min(1e-12)).sum()),
        norm_in_sum=float(norm_in.sum()),
        norm_out_sum=float(norm_out.sum()),
        ratio_sum=float(
            (norm_out / torch.where(norm_in < 1e-4, torch.ones_like(norm_in), norm_in)).sum()
        ),
        xhat_sq_sum=float((rd**2).sum()),
        dot_sum=float((xd * rd).sum()),
        kl_sae_sum=float(kl_sae.double().sum()),
        kl_zero_sum=float(kl_zero.double().sum()),
        kl_tokens=int(kl_sae.numel()),
        ev_legacy_sum=float((1 - sq_err / spread).sum()),
        contexts_firing=contexts_firing,
        positions=positions,
    )


# what a chunk's blocks add up (the rest is the chunk's own: losses, KL, contexts, positions)
BLOCK_SUMS = frozenset(
    {"n_tokens", "l0_sum", "sq_err_sum", "x_sum", "x_sq_sum", "firing", "l1_sum", "cos_sum"}
    | {"norm_in_sum", "norm_out_sum", "ratio_sum", "xhat_sq_sum", "dot_sum", "ev_legacy_sum"}
)

# the per-token sums SAEBench's extra metrics pool (stages.core_metrics)
EXTRA_SUMS = (
    "l1_sum",
    "cos_sum",
    "norm_in_sum",
    "norm_out_sum",
    "ratio_sum",
    "xhat_sq_sum",
    "dot_sum",
    "kl_sae_sum",
    "kl_zero_sum",
    "kl_tokens",
    "ev_legacy_sum",
    "positions",
)
