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
import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from sae_interp_tasks.aggregations import Pooled
from sae_interp_tasks.caching import cache_key, cache_root
from sae_interp_tasks.config import StageConfig, option, positive
from sae_interp_tasks.stages.corpus import CorpusSpec, fingerprint, token_contexts
from sae_interp_tasks.stages.saved import atomic_save
from sae_interp_tasks.stages.subject import model_fingerprint

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CoreConfig(StageConfig):
    """sae_core's settings: docs are chunks of `chunk_contexts` contexts of `context_size`
    tokens."""

    n_tokens: int = positive(32_768)
    context_size: int = option(256, min=2)
    chunk_contexts: int = positive(8)
    seed: int | None = option(None, min=0)  # None: the harness's --seed

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
) -> ChunkReference:
    """The chunk's hooked activation and its clean and zero-ablated losses: one clean forward (the
    Hugging Face model's when `reader` is given), and no zero-ablated forward for residual hooks."""
    keep = _keep_mask(tokens, special)
    if reader is not None:
        x, logits = reader.activations_and_logits(tokens)
    else:
        logits, cache = model.run_with_cache(tokens, names_filter=hook_name)
        x = cache[hook_name]
    if zero_logits is not None:
        row = zero_logits.to(tokens.device)
        losses = torch.logsumexp(row, -1) - row[tokens[:, 1:]]
        ce_zero = float(losses[keep[:, :-1]].mean())
    else:
        zeroed = model.run_with_hooks(
            tokens, fwd_hooks=[(hook_name, lambda a, hook: torch.zeros_like(a))]
        )
        ce_zero = _next_token_ce(zeroed, tokens, keep)
    return ChunkReference(
        x=x.detach().cpu(), ce_clean=_next_token_ce(logits, tokens, keep), ce_zero=ce_zero
    )


@torch.no_grad()
def chunk_stats(
    model,
    sae,
    hook_name: str,
    tokens: torch.Tensor,
    reference: ChunkReference,
    special: list[int] | None = None,
) -> CoreStats:
    """One chunk's statistics for one SAE: one encode, and the spliced forward from the hook on."""
    special = special_ids(model.tokenizer) if special is None else special
    keep = _keep_mask(tokens, special)
    x = reference.x.to(tokens.device)
    acts = sae.encode(x.to(sae.W_dec.dtype))
    recon = sae.decode(acts)
    mask = keep.view(*keep.shape, *([1] * (x.dim() - 2)))
    spliced = torch.where(mask, recon.to(x.dtype), x)
    start = resid_start(hook_name)
    if start is not None:
        logits = model(spliced, start_at_layer=start)
    else:
        logits = model.run_with_hooks(
            tokens, fwd_hooks=[(hook_name, lambda a, hook: spliced.to(a.dtype))]
        )
    return _stats(
        x.to(sae.W_dec.dtype)[keep],
        acts[keep],
        recon[keep],
        reference.ce_clean,
        _next_token_ce(logits, tokens, keep),
        reference.ce_zero,
    )


def _stats(
    x: torch.Tensor,
    acts: torch.Tensor,
    recon: torch.Tensor,
    ce_clean: float,
    ce_spliced: float,
    ce_zero: float,
) -> CoreStats:
    """A chunk's statistics from its kept positions' activations [N, d_in], codes and
    reconstructions."""
    xd, rd = x.double(), recon.double()
    norm_in, norm_out = xd.norm(dim=-1), rd.norm(dim=-1)
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
    )


@torch.no_grad()
def three_forward_chunk_stats(
    model, sae, hook_name: str, tokens: torch.Tensor, special: list[int] | None = None
) -> CoreStats:
    """One chunk's statistics from three full hooked forwards (clean, spliced, zero-ablated): the
    plain method, kept as the reference the tests compare `chunk_stats` with and the benchmark's
    baseline."""
    special = special_ids(model.tokenizer) if special is None else special
    keep = ~torch.isin(tokens, torch.tensor(special, dtype=tokens.dtype, device=tokens.device))
    captured = {}

    def capture(x, hook):
        captured["x"] = x.detach()
        return x

    def splice(x, hook):
        recon = sae.decode(sae.encode(x.to(sae.W_dec.dtype))).to(x.dtype)
        return torch.where(keep[..., None], recon, x)

    def zero(x, hook):
        return torch.zeros_like(x)

    clean = model.run_with_hooks(tokens, fwd_hooks=[(hook_name, capture)])
    spliced = model.run_with_hooks(tokens, fwd_hooks=[(hook_name, splice)])
    zeroed = model.run_with_hooks(tokens, fwd_hooks=[(hook_name, zero)])

    x = captured["x"].to(sae.W_dec.dtype)[keep]
    acts = sae.encode(x)
    return _stats(
        x,
        acts,
        sae.decode(acts),
        _next_token_ce(clean, tokens, keep),
        _next_token_ce(spliced, tokens, keep),
        _next_token_ce(zeroed, tokens, keep),
    )


def per_chunk_metrics(s: CoreStats) -> dict[str, float]:
    n = max(s.n_tokens, 1)
    return {
        "l0": s.l0_sum / n,
        "mse": s.sq_err_sum / n,
        "ce_loss_clean": s.ce_clean,
        "ce_loss_spliced": s.ce_spliced,
        "ce_loss_zero_ablation": s.ce_zero,
    }


# --- corpus-level aggregations (lm-eval calls each with the list of per-chunk stats) -------------
# explained variance about the pooled mean (as sae_lens's fixed run_evals), and CE loss recovered
# as a ratio
# of total losses; both recomputable from the chunk statistics the samples log (aggregations.Pooled)
explained_variance = Pooled(
    "1 - sum(sq_err_sum) / (sum(x_sq_sum) - sqnorm(sum(x_sum)) / sum(n_tokens))"
)
ce_loss_recovered = Pooled("(sum(ce_zero) - sum(ce_spliced)) / (sum(ce_zero) - sum(ce_clean))")


def firing_frequency(stats: list[CoreStats]) -> np.ndarray:
    return sum(s.firing for s in stats) / sum(s.n_tokens for s in stats)


def _dead_fraction(stats: list[CoreStats]) -> float:
    return float((firing_frequency(stats) == 0).mean())


DENSE_THRESHOLD = 0.1  # a latent firing on more than 10% of tokens is "dense"


def _dense_fraction(stats: list[CoreStats]) -> float:
    return float((firing_frequency(stats) > DENSE_THRESHOLD).mean())


def _over(threshold: float, normalized: bool):
    def fraction(stats: list[CoreStats]) -> float:
        freq = firing_frequency(stats)
        over = freq > threshold
        return (
            float(freq[over].sum() / max(freq.sum(), 1e-12)) if normalized else float(over.mean())
        )

    fraction.__name__ = f"{'normalized_' if normalized else ''}freq_over_{threshold:g}"
    return fraction


# pooled too, but from each chunk's per-latent firing counts, which the samples do not log
dead_fraction = Pooled(compute=_dead_fraction)
frac_alive = Pooled(compute=lambda stats: 1.0 - _dead_fraction(stats))
dense_fraction = Pooled(compute=_dense_fraction)  # firing on more than 10% of tokens
freq_over_1_percent = Pooled(compute=_over(0.01, False))
normalized_freq_over_1_percent = Pooled(compute=_over(0.01, True))  # their share of all firing
normalized_freq_over_10_percent = Pooled(compute=_over(0.1, True))
EXTRA_SUMS = (
    "l1_sum",
    "cos_sum",
    "norm_in_sum",
    "norm_out_sum",
    "ratio_sum",
    "xhat_sq_sum",
    "dot_sum",
)
# per token means over all chunks, as SAEBench's core eval reports them (its relative
# reconstruction bias is
# E|x_hat|^2 / E[x . x_hat], Wright & Sharkey's gamma)
l1 = Pooled("sum(l1_sum) / sum(n_tokens)")
cossim = Pooled("sum(cos_sum) / sum(n_tokens)")
l2_norm_in = Pooled("sum(norm_in_sum) / sum(n_tokens)")
l2_norm_out = Pooled("sum(norm_out_sum) / sum(n_tokens)")
l2_ratio = Pooled("sum(ratio_sum) / sum(n_tokens)")
relative_reconstruction_bias = Pooled("sum(xhat_sq_sum) / sum(dot_sum)")
tokens = Pooled("sum(n_tokens)")


# --- the chunk loop and its caches ---------------------------------------------------------------
CACHE_FORMAT = (
    3  # chunk entries are saved as plain dicts (no pickled classes); 3: SAEBench's extra sums
)


def chunk_statistics(
    model,
    sae,
    info,
    reader,
    forward_name: str,
    spec: CorpusSpec,
    cfg: CoreConfig,
    seed: int,
    wanted: list[int],
    device: str,
    desc: str = "chunks",
) -> dict[int, tuple[CoreStats, str]]:
    """{chunk: (statistics, sha256 of its tokens)} for the chunks `wanted`.

    Each chunk's SAE-independent part (the hooked activation, the clean and zero-ablated losses) is
    cached per subject model, hook, corpus and seed (`core_reference/`); each SAE's statistics per
    SAE (`core_stats/`). An interrupted run resumes; a second SAE at the same hook pays only for
    its encode and the spliced forward from the hook on."""
    special = special_ids(model.tokenizer)
    where = {
        "model": model.cfg.model_name,
        "weights": model_fingerprint(model),
        "hook": info.hook_name,
        "bos": info.prepend_bos,
        "corpus": spec,
        "corpus_fp": fingerprint(spec),
        "config": cfg,
        "seed": seed,
        "forward": forward_name,
        "format": CACHE_FORMAT,
    }
    ref_folder, sae_folder = (
        _folder("core_reference", where),
        _folder("core_stats", {**where, "sae": info.fingerprint}),
    )
    contexts = token_contexts(
        spec,
        model.tokenizer,
        (max(wanted) + 1) * cfg.chunk_tokens,
        cfg.context_size,
        info.prepend_bos,
        seed,
    )
    zero: list = []  # the zero-ablated logits, computed once when a chunk needs them
    out = {}
    bar = tqdm(total=len(wanted), unit="chunks", desc=desc)
    for chunk in range(max(wanted) + 1):
        batch = [next(contexts) for _ in range(cfg.chunk_contexts)]
        if chunk not in wanted:
            continue
        stats = _load(sae_folder / f"chunk{chunk}.pt", CoreStats)
        if stats is None:
            tokens = torch.stack(batch).to(device)
            reference = _load(ref_folder / f"chunk{chunk}.pt", ChunkReference)
            if reference is None:
                if not zero:
                    zero.append(zero_ablation_logits(model, info.hook_name))
                reference = chunk_reference(model, info.hook_name, tokens, special, reader, zero[0])
                atomic_save(dataclasses.asdict(reference), ref_folder / f"chunk{chunk}.pt")
            stats = chunk_stats(model, sae, info.hook_name, tokens, reference, special)
            atomic_save(dataclasses.asdict(stats), sae_folder / f"chunk{chunk}.pt")
        out[chunk] = (stats, tokens_sha256(batch))
        bar.update(1)
    bar.close()
    return out


def tokens_sha256(contexts: list[torch.Tensor]) -> str:
    """A chunk's token ids, hashed: `sae-interp compare` pairs two runs' chunks only where these
    agree (the same settings can read different text, e.g. `corpus: sae` is each SAE's own training
    set)."""
    ids = torch.stack(contexts).to(torch.int64).cpu().numpy()
    return hashlib.sha256(ids.tobytes()).hexdigest()[:16]


def _folder(kind: str, key: dict) -> Path:
    folder = cache_root() / kind / cache_key(key)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _load(path: Path, record: type):
    """A cached chunk entry as `record`, or None when absent or unreadable (then it is computed
    again)."""
    if not path.exists():
        return None
    try:
        return record(**torch.load(path, weights_only=False))
    except Exception as err:  # a truncated or foreign file is a cache miss, never a crash
        log.warning(
            "cache entry %s is unreadable (%s); computing it again", path, type(err).__name__
        )
        return None
