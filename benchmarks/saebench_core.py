"""Our sae_core against SAEBench's own core eval, on the demo SAE and the same tokens.

Both read the same contexts of the stdlib corpus (n_chunks x 8 contexts of 256 tokens, seed 1234:
the contexts sae_core's chunks hold): ours through `stages/core.py` as sae_core runs it; SAEBench's
through
`sae_bench.evals.core.main.run_evals` (installed with --no-deps beside the venv by
scripts/setup.sh, its pins clash with ours), fed those contexts by a stand-in for sae_lens's
ActivationsStore. Special tokens (BOS, EOS) are left out of both, as sae_core does. Prints both
sets of shared metrics with our 95% intervals (percentile bootstrap over chunks), and the wall time
of each in this one run.

    python benchmarks/saebench_core.py --chunks 8
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
import _common

PEER = Path(sys.prefix) / "peers" / "sae-bench"
SHARED = {  # SAEBench category/metric -> ours: every metric of its core eval
    ("model_behavior_preservation", "kl_div_score"): "kl_div_score",
    ("model_behavior_preservation", "kl_div_with_ablation"): "kl_div_with_ablation",
    ("model_behavior_preservation", "kl_div_with_sae"): "kl_div_with_sae",
    ("model_performance_preservation", "ce_loss_score"): "ce_loss_recovered",
    ("model_performance_preservation", "ce_loss_with_ablation"): "ce_loss_zero_ablation",
    ("model_performance_preservation", "ce_loss_with_sae"): "ce_loss_spliced",
    ("model_performance_preservation", "ce_loss_without_sae"): "ce_loss_clean",
    ("reconstruction_quality", "explained_variance"): "explained_variance",
    ("reconstruction_quality", "explained_variance_legacy"): "explained_variance_legacy",
    ("reconstruction_quality", "mse"): "mse_saebench",  # its batch-scaled mse
    ("reconstruction_quality", "cossim"): "cossim",
    ("shrinkage", "l2_norm_in"): "l2_norm_in",
    ("shrinkage", "l2_norm_out"): "l2_norm_out",
    ("shrinkage", "l2_ratio"): "l2_ratio",
    ("shrinkage", "relative_reconstruction_bias"): "relative_reconstruction_bias",
    ("sparsity", "l0"): "l0",
    ("sparsity", "l1"): "l1",
    ("token_stats", "total_tokens_eval_reconstruction"): "tokens_read",
    ("token_stats", "total_tokens_eval_sparsity_variance"): "tokens_read",
    ("misc_metrics", "freq_over_1_percent"): "freq_over_1_percent",
    ("misc_metrics", "freq_over_10_percent"): "dense_fraction",
    ("misc_metrics", "normalized_freq_over_1_percent"): "normalized_freq_over_1_percent",
    ("misc_metrics", "normalized_freq_over_10_percent"): "normalized_freq_over_10_percent",
    ("misc_metrics", "average_max_encoder_cosine_sim"): "average_max_encoder_cosine_sim",
    ("misc_metrics", "average_max_decoder_cosine_sim"): "average_max_decoder_cosine_sim",
    ("misc_metrics", "frac_alive"): "frac_alive",
}


class Contexts:
    """What SAEBench's run_evals asks of sae_lens's ActivationsStore, over a fixed list of
    contexts."""

    def __init__(self, contexts: torch.Tensor, batch: int):
        self.contexts, self.store_batch_size_prompts, self.context_size = (
            contexts,
            batch,
            contexts.shape[1],
        )
        self.at = 0

    def get_batch_tokens(self, n: int) -> torch.Tensor:
        out = self.contexts[self.at : self.at + n]
        self.at += n
        return out

    def reset_input_dataset(self) -> None:
        self.at = 0

    def shuffle_input_dataset(
        self, *args, **kwargs
    ) -> None:  # the same contexts in the same order as ours
        self.at = 0


class LegacyConfig:
    """sae-bench 0.6.0 reads sae_lens 5's config fields (hook_name, hook_layer, hook_head_index on
    `sae.cfg`); sae_lens 6 keeps them in `cfg.metadata`. This hands SAEBench the same SAE with
    those fields in place."""

    def __init__(self, sae, info):
        import re
        from types import SimpleNamespace

        layer = int(re.search(r"blocks\.(\d+)\.", info.hook_name).group(1))
        self.sae, self.device = sae, sae.device
        self.cfg = SimpleNamespace(
            hook_name=info.hook_name,
            hook_layer=layer,
            hook_head_index=None,
            d_sae=info.d_sae,
            architecture_str=info.architecture,
        )

    def __getattr__(self, name: str):  # the weights (W_enc, W_dec, b_enc, ...) are the SAE's
        return getattr(self.sae, name)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.sae.encode(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.sae.decode(z)


def ours(model, sae, info, contexts: torch.Tensor, chunk_contexts: int):
    from sae_interp_tasks.stages import core, core_features

    special = core.special_ids(model.tokenizer)
    zero = core.zero_ablation_logits(model, info.hook_name)
    stats = []
    for start in range(0, len(contexts), chunk_contexts):
        tokens = contexts[start : start + chunk_contexts]
        reference = core.chunk_reference(model, info.hook_name, tokens, special, None, zero)
        stats.append(core.chunk_stats(model, sae, info.hook_name, tokens, reference, special))
    features = core_features.feature_metrics(sae, stats)
    weights = core_features.averages(features)
    values = {name: value(stats, name, weights) for name in set(SHARED.values())}
    return values, stats, features, weights


def value(stats, name: str, weights: dict) -> float:
    """Our metric over these chunks, as lm-eval aggregates sae_core's."""
    from sae_interp_tasks.registry import lookup
    from sae_interp_tasks.stages import core_metrics

    if name in weights:  # a property of the weights: the same for every chunk
        return weights[name]
    agg = lookup("core").metrics[name][0]
    if hasattr(agg, "expression"):
        return float(agg(stats))
    return float(agg([core_metrics.per_chunk_metrics(s)[name] for s in stats]))


def bootstrap(stats, name: str, rng, weights: dict, resamples: int = 2000):
    """Our 95% percentile interval over chunks (resampled with replacement)."""
    from sae_interp_tasks.reports.resampling import percentile_interval

    if name in weights:
        return weights[name], weights[name]
    draws = [
        value([stats[i] for i in rng.integers(0, len(stats), len(stats))], name, weights)
        for _ in range(resamples)
    ]
    return percentile_interval(np.array(draws), 0.95)


def theirs(model, sae, info, contexts: torch.Tensor, batch: int):
    assert (PEER / "sae_bench").is_dir(), f"{PEER} is missing: run scripts/setup.sh"
    sys.path.insert(0, str(PEER))
    from sae_bench.evals.core.eval_config import CoreEvalConfig
    from sae_bench.evals.core.main import calculate_misc_metrics, run_evals

    from sae_interp_tasks.stages import core

    n_batches = len(contexts) // batch
    cfg = CoreEvalConfig(
        model_name="",
        batch_size_prompts=batch,
        n_eval_reconstruction_batches=n_batches,
        n_eval_sparsity_variance_batches=n_batches,
        compute_kl=True,
        compute_ce_loss=True,
        compute_l2_norms=True,
        compute_sparsity_metrics=True,
        compute_variance_metrics=True,
        compute_featurewise_density_statistics=True,
        compute_featurewise_weight_based_metrics=True,
        exclude_special_tokens_from_reconstruction=True,
        context_size=contexts.shape[1],
    )
    metrics, features = run_evals(
        LegacyConfig(sae, info),
        Contexts(contexts, batch),
        model,
        cfg,
        ignore_tokens=set(core.special_ids(model.tokenizer)),
    )
    # its misc metrics, as its main() computes them from the per-latent ones
    return {**metrics, "misc_metrics": calculate_misc_metrics(features)}, features


def main() -> None:
    from sae_interp_tasks.stages.corpus import CorpusSpec, token_contexts

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=8, help="chunks of 8 contexts of 256 tokens")
    args = parser.parse_args()
    model, sae, info = _common.demo()
    n = args.chunks * 8
    contexts = torch.stack(
        list(token_contexts(CorpusSpec(), model.tokenizer, n * 256, 256, True, 1234))
    )
    start = time.perf_counter()
    mine, stats, features, weights = ours(model, sae, info, contexts, 8)
    ours_s = time.perf_counter() - start
    start = time.perf_counter()
    other, their_features = theirs(model, sae, info, contexts, 8)
    theirs_s = time.perf_counter() - start
    rng = np.random.default_rng(0)
    rows = []
    print(
        f"sae_core vs SAEBench core eval, demo SAE, the same {n * 256} tokens ({n} contexts of "
        f"256); {_common.machine()}\n"
    )
    print("| metric (SAEBench name) | ours [95% bootstrap over chunks] | SAEBench | within ours |")
    print("|---|---|---|---|")
    for (category, name), our_name in SHARED.items():
        lo, hi = bootstrap(stats, our_name, rng, weights)
        got = other.get(category, {}).get(name)
        # a zero-width interval (token counts, weights) must match to float precision
        inside = got is not None and lo - 1e-5 * abs(lo) <= got <= hi + 1e-5 * abs(hi)
        rows.append(
            {
                "metric": f"{category}.{name}",
                "ours": mine[our_name],
                "lo": lo,
                "hi": hi,
                "saebench": got,
                "within": inside,
            }
        )
        print(
            f"| {category}.{name} | {mine[our_name]:.6g} [{lo:.6g}, {hi:.6g}] | "
            f"{'n/a' if got is None else f'{got:.6g}'} | {'yes' if inside else 'no'} |"
        )
    print("\n| per-latent metric | latents | largest difference from SAEBench's |")
    print("|---|---:|---:|")
    per_latent = {}
    from sae_interp_tasks.stages.core_features import NAMES

    for name in NAMES:  # the per-latent metrics, compared latent by latent
        a = np.array(features[name], dtype=float)
        b = np.array(their_features[name], dtype=float)
        both = np.isfinite(a) & np.isfinite(b)
        same_nan = bool((np.isnan(a) == np.isnan(b)).all())
        per_latent[name] = {
            "max_abs_diff": float(np.abs(a[both] - b[both]).max()),
            "nan_agree": same_nan,
        }
        note = "" if same_nan else " (NaN differ)"
        print(f"| {name} | {len(a)} | {per_latent[name]['max_abs_diff']:.2e}{note} |")
    print(
        f"\nwall seconds: ours {ours_s:.1f}, SAEBench {theirs_s:.1f} (SAEBench / ours = "
        f"{theirs_s / ours_s:.2f}x; model loading excluded)"
    )
    _common.save(
        "saebench_core",
        {
            "tokens": n * 256,
            "rows": rows,
            "per_latent": per_latent,
            "ours_seconds": ours_s,
            "saebench_seconds": theirs_s,
            "machine": _common.machine(),
        },
    )


if __name__ == "__main__":
    main()
