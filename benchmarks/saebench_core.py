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
SHARED = {  # SAEBench category/metric -> ours
    ("reconstruction_quality", "explained_variance"): "explained_variance",
    (
        "reconstruction_quality",
        "mse",
    ): "mse",  # not the same quantity: SAEBench divides by the batch's tokens
    ("reconstruction_quality", "cossim"): "cossim",
    ("sparsity", "l0"): "l0",
    ("sparsity", "l1"): "l1",
    ("model_performance_preservation", "ce_loss_score"): "ce_loss_recovered",
    ("model_performance_preservation", "ce_loss_without_sae"): "ce_loss_clean",
    ("model_performance_preservation", "ce_loss_with_sae"): "ce_loss_spliced",
    ("model_performance_preservation", "ce_loss_with_ablation"): "ce_loss_zero_ablation",
    ("shrinkage", "l2_ratio"): "l2_ratio",
    ("shrinkage", "relative_reconstruction_bias"): "relative_reconstruction_bias",
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
            hook_name=info.hook_name, hook_layer=layer, hook_head_index=None, d_sae=info.d_sae
        )

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.sae.encode(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.sae.decode(z)


def ours(model, sae, info, contexts: torch.Tensor, chunk_contexts: int):
    from sae_interp_tasks.registry import lookup
    from sae_interp_tasks.stages import core, core_metrics

    special = core.special_ids(model.tokenizer)
    zero = core.zero_ablation_logits(model, info.hook_name)
    stats = []
    for start in range(0, len(contexts), chunk_contexts):
        tokens = contexts[start : start + chunk_contexts]
        reference = core.chunk_reference(model, info.hook_name, tokens, special, None, zero)
        stats.append(core.chunk_stats(model, sae, info.hook_name, tokens, reference, special))
    metrics = lookup("core").metrics
    values = {
        name: float(
            agg(
                stats
                if hasattr(agg, "expression")
                else [core_metrics.per_chunk_metrics(s)[name] for s in stats]
            )
        )
        for name, (agg, _) in metrics.items()
        if name in SHARED.values()
    }
    return values, stats


def bootstrap(stats, name: str, rng, resamples: int = 2000) -> tuple[float, float]:
    from sae_interp_tasks.registry import lookup
    from sae_interp_tasks.reports.resampling import percentile_interval, resample_weights
    from sae_interp_tasks.stages import core_metrics

    agg = lookup("core").metrics[name][0]
    weights = resample_weights(rng, len(stats), resamples)
    if getattr(agg, "expression", None):
        arrays = {k: np.array([s.to_json()[k] for s in stats], dtype=float) for k in agg.stats}
        draws = agg.resampled(arrays, weights)
    else:
        per = np.array([core_metrics.per_chunk_metrics(s)[name] for s in stats])
        draws = weights @ per / len(stats)
    return percentile_interval(draws, 0.95)


def theirs(model, sae, info, contexts: torch.Tensor, batch: int):
    assert (PEER / "sae_bench").is_dir(), f"{PEER} is missing: run scripts/setup.sh"
    sys.path.insert(0, str(PEER))
    from sae_bench.evals.core.eval_config import CoreEvalConfig
    from sae_bench.evals.core.main import run_evals

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
        exclude_special_tokens_from_reconstruction=True,
        context_size=contexts.shape[1],
    )
    metrics, _ = run_evals(
        LegacyConfig(sae, info),
        Contexts(contexts, batch),
        model,
        cfg,
        ignore_tokens=set(core.special_ids(model.tokenizer)),
    )
    return metrics


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
    mine, stats = ours(model, sae, info, contexts, 8)
    ours_s = time.perf_counter() - start
    start = time.perf_counter()
    other = theirs(model, sae, info, contexts, 8)
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
        lo, hi = bootstrap(stats, our_name, rng)
        value = other.get(category, {}).get(name)
        # a zero-width interval too
        inside = value is not None and lo - 1e-6 * abs(lo) <= value <= hi + 1e-6 * abs(hi)
        rows.append(
            {
                "metric": f"{category}.{name}",
                "ours": mine[our_name],
                "lo": lo,
                "hi": hi,
                "saebench": value,
                "within": inside,
            }
        )
        print(
            f"| {category}.{name} | {mine[our_name]:.4f} [{lo:.4f}, {hi:.4f}] | "
            f"{'n/a' if value is None else f'{value:.4f}'} | {'yes' if inside else 'no'} |"
        )
    print(
        f"\nwall seconds: ours {ours_s:.1f}, SAEBench {theirs_s:.1f} (SAEBench / ours = "
        f"{theirs_s / ours_s:.2f}x; "
        "model loading excluded)"
    )
    _common.save(
        "saebench_core",
        {
            "tokens": n * 256,
            "rows": rows,
            "ours_seconds": ours_s,
            "saebench_seconds": theirs_s,
            "machine": _common.machine(),
        },
    )


if __name__ == "__main__":
    main()
