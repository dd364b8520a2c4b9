"""sae_core: reconstruction and sparsity metrics that need no LLM.

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

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from sae_interp_tasks.config import StageConfig, option, positive


@dataclass(frozen=True)
class CoreConfig(StageConfig):
    """sae_core's settings: docs are chunks of `chunk_contexts` contexts of `context_size` tokens."""

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

    def to_json(self) -> dict:
        """The sufficient statistics of the pooled metrics, as --log_samples writes them (not `firing`:
        d_sae counts a chunk), so `sae-interp compare` can bootstrap explained variance and CE loss recovered."""
        return {"n_tokens": int(self.n_tokens), "l0_sum": float(self.l0_sum), "sq_err_sum": float(self.sq_err_sum),
                "x_sq_sum": float(self.x_sq_sum), "x_sum": np.asarray(self.x_sum, dtype=float).tolist(),
                "ce_clean": float(self.ce_clean), "ce_spliced": float(self.ce_spliced), "ce_zero": float(self.ce_zero)}

    def __repr__(self) -> str:  # logged samples stay readable
        return (f"CoreStats(n_tokens={self.n_tokens}, l0={self.l0_sum / max(self.n_tokens, 1):.2f}, "
                f"mse={self.sq_err_sum / max(self.n_tokens, 1):.4g}, ce_clean={self.ce_clean:.4f}, "
                f"ce_spliced={self.ce_spliced:.4f}, ce_zero={self.ce_zero:.4f})")


def _next_token_ce(logits: torch.Tensor, tokens: torch.Tensor, keep: torch.Tensor) -> float:
    """Mean next-token loss over the positions `keep` [B, T] marks (the prediction's source position)."""
    losses = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), tokens[:, 1:].flatten(), reduction="none")
    return float(losses[keep[:, :-1].flatten()].mean())


def special_ids(tokenizer) -> list[int]:
    from sae_lens.util import get_special_token_ids

    return get_special_token_ids(tokenizer)


@torch.no_grad()
def chunk_stats(model, sae, hook_name: str, tokens: torch.Tensor, special: list[int] | None = None) -> CoreStats:
    """Statistics of one chunk of contexts (tokens [B, T]) with three full forwards."""
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
    recon = sae.decode(acts)
    return CoreStats(
        n_tokens=x.shape[0],
        l0_sum=float((acts > 0).sum()),
        sq_err_sum=float(((recon - x) ** 2).sum()),
        x_sum=x.sum(0).double().cpu().numpy(),
        x_sq_sum=float((x.double() ** 2).sum()),
        firing=(acts > 0).sum(0).cpu().numpy().astype(np.int64),
        ce_clean=_next_token_ce(clean, tokens, keep),
        ce_spliced=_next_token_ce(spliced, tokens, keep),
        ce_zero=_next_token_ce(zeroed, tokens, keep),
    )


def per_chunk_metrics(s: CoreStats) -> dict[str, float]:
    n = max(s.n_tokens, 1)
    return {"l0": s.l0_sum / n, "mse": s.sq_err_sum / n, "ce_loss_clean": s.ce_clean,
            "ce_loss_spliced": s.ce_spliced, "ce_loss_zero_ablation": s.ce_zero}


# --- corpus-level aggregations (lm-eval calls each with the list of per-chunk stats) -------------
def explained_variance(stats: list[CoreStats]) -> float:
    n = sum(s.n_tokens for s in stats)
    x_sum = sum(s.x_sum for s in stats)
    total = sum(s.x_sq_sum for s in stats) - float(np.dot(x_sum, x_sum)) / n
    return 1.0 - sum(s.sq_err_sum for s in stats) / total


def ce_loss_recovered(stats: list[CoreStats]) -> float:
    clean = np.mean([s.ce_clean for s in stats])
    spliced = np.mean([s.ce_spliced for s in stats])
    zero = np.mean([s.ce_zero for s in stats])
    return float((zero - spliced) / (zero - clean))


def firing_frequency(stats: list[CoreStats]) -> np.ndarray:
    return sum(s.firing for s in stats) / sum(s.n_tokens for s in stats)


def dead_fraction(stats: list[CoreStats]) -> float:
    return float((firing_frequency(stats) == 0).mean())


DENSE_THRESHOLD = 0.1  # a latent firing on more than 10% of tokens is "dense"


def dense_fraction(stats: list[CoreStats]) -> float:
    return float((firing_frequency(stats) > DENSE_THRESHOLD).mean())
