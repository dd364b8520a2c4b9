"""sae_core: reconstruction and sparsity of the SAE over corpus chunks (no LLM); one doc = one chunk.

The statistics and their caches are `stages/core.py`; explained variance and CE loss recovered are
pooled over the chunks' statistics (aggregations.Pooled), so reports can resample them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from lm_eval.api.metrics import mean

from sae_interp_tasks.config import Settings
from sae_interp_tasks.harness.context import RunContext
from sae_interp_tasks.harness.task import SAETask
from sae_interp_tasks.records import Response
from sae_interp_tasks.registry import Report, settings_for, task_kind
from sae_interp_tasks.stages import core
from sae_interp_tasks.stages.core import CoreConfig
from sae_interp_tasks.stages.corpus import CorpusConfig

KIND = "core"


@dataclass(frozen=True)
class CoreSettings(Settings):
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    core: CoreConfig = field(default_factory=CoreConfig)


def serve_core(ctx: RunContext, payloads: list[dict]) -> list[Response]:
    """Chunk statistics for sae_core docs, one pass over the chunks per group of equal settings and seed."""
    groups: dict[str, list[int]] = {}
    for i, p in enumerate(payloads):
        groups.setdefault(json.dumps([p["settings"], p["seed"]], sort_keys=True), []).append(i)
    results: list = [None] * len(payloads)
    for key, indices in groups.items():
        settings, seed = json.loads(key)
        s: CoreSettings = settings_for(KIND, settings)
        wanted = sorted({payloads[i]["doc"]["chunk"] for i in indices})
        stats = core.chunk_statistics(ctx.model, ctx.sae, ctx.info, ctx.reader, ctx.forward_name,
                                      s.corpus.spec(ctx.info.dataset_path), s.core, seed, wanted, ctx.device,
                                      desc=payloads[indices[0]]["task"])
        for i in indices:
            chunk = payloads[i]["doc"]["chunk"]
            chunk_stats, sha = stats[chunk]
            results[i] = Response(metrics=core.per_chunk_metrics(chunk_stats), chunk=chunk, stats=chunk_stats,
                                  detail={"tokens_sha256": sha})
    return results


@task_kind(KIND, settings=CoreSettings, serve=serve_core, report=Report(
    headline="ce_loss_recovered", columns=("l0", "explained_variance", "ce_loss_recovered"), doc_id="chunk",
    pair_on="tokens_sha256", plotted=("ce_loss_recovered", "explained_variance"), axis="l0", position=0,
    labels={"l0": "L0", "explained_variance": "explained variance", "ce_loss_recovered": "CE loss recovered"}))
class SAECoreTask(SAETask):
    """Reconstruction and sparsity of the SAE over corpus chunks; no LLM."""

    METRICS = {
        "l0": (mean, False),
        "mse": (mean, False),
        "explained_variance": (core.explained_variance, True),
        "dead_fraction": (core.dead_fraction, False),
        "dense_fraction": (core.dense_fraction, False),
        "ce_loss_recovered": (core.ce_loss_recovered, True),
        "ce_loss_clean": (mean, False),
        "ce_loss_spliced": (mean, False),
        "ce_loss_zero_ablation": (mean, False),
    }

    def make_docs(self) -> list[dict]:
        return [{"chunk": i} for i in range(self.settings.core.n_chunks)]
