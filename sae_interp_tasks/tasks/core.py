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
from sae_interp_tasks.harness.task import SAETask
from sae_interp_tasks.records import Response
from sae_interp_tasks.registry import ReportSpec, task_kind
from sae_interp_tasks.stages import core_chunks, core_metrics
from sae_interp_tasks.stages.core import CoreConfig
from sae_interp_tasks.stages.corpus import CorpusConfig

KIND = "core"


@dataclass(frozen=True)
class CoreSettings(Settings):
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    core: CoreConfig = field(default_factory=CoreConfig)


def serve_core(ctx: RunContext, requests: list[InterpretRequest]) -> list[Response]:
    """Chunk statistics for sae_core docs, one pass over the chunks per group of equal settings and
    seed."""
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
        for i in indices:
            chunk = requests[i].chunk
            chunk_stats, sha = stats[chunk]
            results[i] = Response(
                metrics=core_metrics.per_chunk_metrics(chunk_stats),
                chunk=chunk,
                stats=chunk_stats,
                detail={"tokens_sha256": sha},
            )
    return results


# SAEBench's core eval: where our numbers go in its result files, and what it reports that we do not
# compute (KL divergences need every token's clean logits, which sae_core does not keep; the legacy
# explained variance is a formula SAEBench itself calls incorrect; the decoder/encoder cosine
# similarities are weights, not results)
SAEBENCH = {
    "eval_type_id": "core",
    "task": "sae_core",
    "metrics": {
        "model_performance_preservation": {
            "ce_loss_score": "ce_loss_recovered",
            "ce_loss_with_ablation": "ce_loss_zero_ablation",
            "ce_loss_with_sae": "ce_loss_spliced",
            "ce_loss_without_sae": "ce_loss_clean",
        },
        "reconstruction_quality": {"explained_variance": "explained_variance", "cossim": "cossim"},
        "shrinkage": {
            "l2_norm_in": "l2_norm_in",
            "l2_norm_out": "l2_norm_out",
            "l2_ratio": "l2_ratio",
            "relative_reconstruction_bias": "relative_reconstruction_bias",
        },
        "sparsity": {"l0": "l0", "l1": "l1"},
        "token_stats": {
            "total_tokens_eval_reconstruction": "tokens",
            "total_tokens_eval_sparsity_variance": "tokens",
        },
        "misc_metrics": {
            "freq_over_1_percent": "freq_over_1_percent",
            "freq_over_10_percent": "dense_fraction",
            "normalized_freq_over_1_percent": "normalized_freq_over_1_percent",
            "normalized_freq_over_10_percent": "normalized_freq_over_10_percent",
            "frac_alive": "frac_alive",
        },
    },
    "left_out": {
        "model_behavior_preservation": ["kl_div_score", "kl_div_with_ablation", "kl_div_with_sae"],
        # SAEBench's mse divides each token's squared error by its batch's token count
        # (benchmarks/README)
        "reconstruction_quality": ["explained_variance_legacy", "mse"],
        "misc_metrics": ["average_max_encoder_cosine_sim", "average_max_decoder_cosine_sim"],
    },
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
    }

    def make_docs(self) -> list[dict]:
        return [{"chunk": i} for i in range(self.settings.core.n_chunks)]
