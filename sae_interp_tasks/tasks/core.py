"""sae_core: reconstruction and sparsity of the SAE over corpus chunks (no LLM); one doc = one
chunk.

The statistics and their caches are `stages/core.py`; explained variance and CE loss recovered are
pooled over the chunks' statistics (aggregations.Pooled), so reports can resample them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lm_eval.api.metrics import mean

from sae_interp_tasks.config import Settings
from sae_interp_tasks.harness.context import RunContext
from sae_interp_tasks.harness.request import InterpretRequest, grouped
from sae_interp_tasks.harness.run_stages import gathered
from sae_interp_tasks.harness.task import SAETask
from sae_interp_tasks.records import Response
from sae_interp_tasks.registry import ReportSpec, task_kind
from sae_interp_tasks.stages import core_chunks, core_features, core_metrics
from sae_interp_tasks.stages.core import CoreConfig
from sae_interp_tasks.stages.corpus import CorpusConfig

KIND = "core"


@dataclass(frozen=True)
class CoreSettings(Settings):
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    core: CoreConfig = field(default_factory=CoreConfig)


def serve_core(ctx: RunContext, requests: list[InterpretRequest]) -> list[Response]:
    """Chunk statistics for sae_core docs, one pass over the chunks per group of equal settings and
    seed; with `feature_metrics`, SAEBench's per-latent metrics over the group's chunks go into the
    results (`config.sae_feature_metrics`) and their averages beside each chunk's metrics."""
    results: list = [None] * len(requests)
    for indices in grouped(requests, lambda r: (r.settings, r.seed)).values():
        first = requests[indices[0]]
        s: CoreSettings = first.settings
        seed = first.seed
        wanted = sorted({requests[i].chunk for i in indices})
        stats = core_chunks.chunk_statistics(
            ctx.model,
            ctx.sae,
            ctx.info,
            ctx.reader,
            ctx.forward_name,
            s.corpus.spec(ctx.info.dataset_path),
            s.core,
            seed,
            wanted,
            ctx.device,
            desc=first.task,
        )
        extra = _feature_metrics(ctx, first.task, stats) if s.core.feature_metrics else {}
        for i in indices:
            chunk = requests[i].chunk
            chunk_stats, sha = stats[chunk]
            results[i] = Response(
                metrics={**core_metrics.per_chunk_metrics(chunk_stats), **extra},
                chunk=chunk,
                stats=chunk_stats,
                detail={"tokens_sha256": sha},
            )
    return results


def _feature_metrics(ctx: RunContext, task: str, stats: dict) -> dict:
    """SAEBench's per-latent metrics over every process's chunks, noted for the results; their
    averages as metrics."""
    every = gathered(ctx, {chunk: chunk_stats for chunk, (chunk_stats, _) in stats.items()})
    per_latent = core_features.feature_metrics(ctx.sae, list(every.values()))
    ctx.store.notes.setdefault("feature_metrics", {})[task] = {
        "chunks": len(every),
        **{
            name: [None if v != v else round(float(v), 6) for v in values]
            for name, values in per_latent.items()
        },
    }
    return core_features.averages(per_latent)


# SAEBench's core eval: where our numbers go in its result files (all of its metrics; its `mse`
# is ours under `mse_saebench`, since it divides by the batch's token count; its per-latent
# metrics come from the results' sae_feature_metrics, reports/saebench.py)
SAEBENCH = {
    "eval_type_id": "core",
    "task": "sae_core",
    "metrics": {
        "model_behavior_preservation": {
            "kl_div_score": "kl_div_score",
            "kl_div_with_ablation": "kl_div_with_ablation",
            "kl_div_with_sae": "kl_div_with_sae",
        },
        "model_performance_preservation": {
            "ce_loss_score": "ce_loss_recovered",
            "ce_loss_with_ablation": "ce_loss_zero_ablation",
            "ce_loss_with_sae": "ce_loss_spliced",
            "ce_loss_without_sae": "ce_loss_clean",
        },
        "reconstruction_quality": {
            "explained_variance": "explained_variance",
            "explained_variance_legacy": "explained_variance_legacy",
            "mse": "mse_saebench",
            "cossim": "cossim",
        },
        "shrinkage": {
            "l2_norm_in": "l2_norm_in",
            "l2_norm_out": "l2_norm_out",
            "l2_ratio": "l2_ratio",
            "relative_reconstruction_bias": "relative_reconstruction_bias",
        },
        "sparsity": {"l0": "l0", "l1": "l1"},
        "token_stats": {
            "total_tokens_eval_reconstruction": "tokens_read",
            "total_tokens_eval_sparsity_variance": "tokens_read",
        },
        "misc_metrics": {
            "freq_over_1_percent": "freq_over_1_percent",
            "freq_over_10_percent": "dense_fraction",
            "normalized_freq_over_1_percent": "normalized_freq_over_1_percent",
            "normalized_freq_over_10_percent": "normalized_freq_over_10_percent",
            "average_max_encoder_cosine_sim": "average_max_encoder_cosine_sim",
            "average_max_decoder_cosine_sim": "average_max_decoder_cosine_sim",
            "frac_alive": "frac_alive",
        },
    },
    "left_out": {},
    "details": "feature_metrics",
}


@task_kind(
    KIND,
    settings=CoreSettings,
    serve=serve_core,
    report=ReportSpec(
        headline="ce_loss_recovered",
        columns=("l0", "explained_variance", "ce_loss_recovered"),
        doc_id="chunk",
        pair_on="tokens_sha256",
        plotted=("ce_loss_recovered", "explained_variance"),
        axis="l0",
        position=0,
        labels={
            "l0": "L0",
            "explained_variance": "explained variance",
            "ce_loss_recovered": "CE loss recovered",
        },
        saebench=SAEBENCH,
    ),
)
class SAECoreTask(SAETask):
    """Reconstruction and sparsity of the SAE over corpus chunks; no LLM."""

    METRICS = {
        "l0": (mean, False),
        "mse": (mean, False),
        "explained_variance": (core_metrics.explained_variance, True),
        "dead_fraction": (core_metrics.dead_fraction, False),
        "dense_fraction": (core_metrics.dense_fraction, False),
        "ce_loss_recovered": (core_metrics.ce_loss_recovered, True),
        "ce_loss_clean": (mean, False),
        "ce_loss_spliced": (mean, False),
        "ce_loss_zero_ablation": (mean, False),
        # SAEBench's core eval reports these too (see SAEBENCH)
        "cossim": (core_metrics.cossim, True),
        "l1": (core_metrics.l1, False),
        "l2_norm_in": (core_metrics.l2_norm_in, True),
        "l2_norm_out": (core_metrics.l2_norm_out, True),
        "l2_ratio": (core_metrics.l2_ratio, True),
        "relative_reconstruction_bias": (core_metrics.relative_reconstruction_bias, True),
        "freq_over_1_percent": (core_metrics.freq_over_1_percent, False),
        "normalized_freq_over_1_percent": (core_metrics.normalized_freq_over_1_percent, False),
        "normalized_freq_over_10_percent": (core_metrics.normalized_freq_over_10_percent, False),
        "frac_alive": (core_metrics.frac_alive, True),
        "tokens": (core_metrics.tokens, True),
        "tokens_read": (core_metrics.tokens_read, True),
        "kl_div_score": (core_metrics.kl_div_score, True),
        "kl_div_with_sae": (core_metrics.kl_div_with_sae, False),
        "kl_div_with_ablation": (core_metrics.kl_div_with_ablation, False),
        "explained_variance_legacy": (core_metrics.explained_variance_legacy, True),
        "mse_saebench": (mean, False),
        # over the latents, from the weights (every chunk carries the same value)
        "average_max_encoder_cosine_sim": (mean, False),
        "average_max_decoder_cosine_sim": (mean, False),
    }

    def make_docs(self) -> list[dict]:
        return [{"chunk": i} for i in range(self.settings.core.n_chunks)]
