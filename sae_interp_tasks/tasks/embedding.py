"""sae_embedding: AUROC of cosine(explanation, window) for activating vs non-activating windows.

No LLM scorer; the explanations are those every latent task of the run shares (docs/methods.md,
"Embedding"). The scorer is `scorers/embedding.py`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sae_interp_tasks.aggregations import nanmean
from sae_interp_tasks.harness import run_stages
from sae_interp_tasks.harness.run_stages import LatentRun, LatentSettings
from sae_interp_tasks.harness.serve import serve_latents
from sae_interp_tasks.harness.task import LatentTask
from sae_interp_tasks.registry import ReportSpec, task_kind
from sae_interp_tasks.scorers.embedding import EmbeddingScoreConfig, score_embedding


@dataclass(frozen=True)
class EmbeddingSettings(LatentSettings):
    embedding_score: EmbeddingScoreConfig = field(default_factory=EmbeddingScoreConfig)


def score_by_embedding(run: LatentRun):
    s: EmbeddingSettings = run.settings
    return score_embedding(
        [run.splits[lat] for lat in run.latents],
        run.explanations,
        run_stages.embedder(run.context, s.embedding),
        run.decode,
        run.seed,
        s.embedding.embedding_batch_size,
        owned=set(run.owned),
        span=s.embedding_score.embedding_span,
    )


@task_kind(
    "embedding",
    settings=EmbeddingSettings,
    serve=serve_latents,
    scorer=score_by_embedding,
    report=ReportSpec(headline="auroc", position=30),
)
class SAEEmbeddingTask(LatentTask):
    """AUROC of cosine(explanation, window) for activating vs non-activating windows."""

    METRICS = {"auroc": (nanmean, True), "auroc_shuffled": (nanmean, False)}
