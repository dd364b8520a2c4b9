"""sae_core's metrics: per chunk (L0, MSE, the three CE losses) and over the corpus, pooled from
the chunks' statistics (`stages.core.CoreStats`) the way lm-eval aggregates them and the reports
recompute them for resamples."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from sae_interp_tasks.aggregations import Pooled

if TYPE_CHECKING:
    from sae_interp_tasks.stages.core import CoreStats


def per_chunk_metrics(s: CoreStats) -> dict[str, float]:
    n = max(s.n_tokens, 1)
    return {
        "l0": s.l0_sum / n,
        "mse": s.sq_err_sum / n,
        "ce_loss_clean": s.ce_clean,
        "ce_loss_spliced": s.ce_spliced,
        "ce_loss_zero_ablation": s.ce_zero,
        # SAEBench's mse: each token's squared error divided by its batch's token count (here the
        # chunk is the batch), averaged; it scales with 1 / tokens per batch
        "mse_saebench": s.sq_err_sum / n / n,
    }


# --- corpus-level aggregations (lm-eval calls each with the list of per-chunk stats) -------------
# explained variance about the pooled mean (as sae_lens's fixed run_evals), and CE loss recovered as
# a ratio of total losses; both recomputable from the chunk statistics the samples log
# (aggregations.Pooled)
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
# per token means over all chunks, as SAEBench's core eval reports them (its relative
# reconstruction bias is E|x_hat|^2 / E[x . x_hat], Wright & Sharkey's gamma)
l1 = Pooled("sum(l1_sum) / sum(n_tokens)")
cossim = Pooled("sum(cos_sum) / sum(n_tokens)")
l2_norm_in = Pooled("sum(norm_in_sum) / sum(n_tokens)")
l2_norm_out = Pooled("sum(norm_out_sum) / sum(n_tokens)")
l2_ratio = Pooled("sum(ratio_sum) / sum(n_tokens)")
relative_reconstruction_bias = Pooled("sum(xhat_sq_sum) / sum(dot_sum)")
tokens = Pooled("sum(n_tokens)")  # the kept tokens the statistics are over
tokens_read = Pooled("sum(positions)")  # every position read, special tokens too (SAEBench's count)
# SAEBench's KL divergences of the next-token distribution from the clean model's, per token over
# the kept positions: with the SAE spliced in, with the hook zero-ablated, and the score
# (1 - KL with the SAE / KL with the hook zeroed)
kl_div_with_sae = Pooled("sum(kl_sae_sum) / sum(kl_tokens)")
kl_div_with_ablation = Pooled("sum(kl_zero_sum) / sum(kl_tokens)")
kl_div_score = Pooled("(sum(kl_zero_sum) - sum(kl_sae_sum)) / sum(kl_zero_sum)")
# its legacy explained variance: the per-token ratio, about each chunk's (batch's) mean, averaged
explained_variance_legacy = Pooled("sum(ev_legacy_sum) / sum(n_tokens)")
