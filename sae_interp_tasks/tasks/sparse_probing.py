"""sae_sparse_probing: SAEBench's sparse probing; one doc = one class of the dataset (the binary
task: that class against the others).

Per task, logistic probes on the k latents that differ most between the two sides (k from
`probe_k`) against a probe on the whole hooked activation, each scored by test accuracy
(`stages/probing.py`, docs/methods.md, "Sparse probing"). The texts come from `probe_dataset`
(`stages/probe_data.py`): offline, which standard-library package a piece of code comes from; or a
Hugging Face dataset with its text and label fields named. The activations of a run are cached per
subject model, hook, SAE, settings and seed, so a rerun reads them back.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from sae_interp_tasks.aggregations import nanmean, total
from sae_interp_tasks.config import Settings
from sae_interp_tasks.harness.context import RunContext
from sae_interp_tasks.harness.request import InterpretRequest, grouped
from sae_interp_tasks.harness.task import SAETask
from sae_interp_tasks.records import Response
from sae_interp_tasks.registry import ReportSpec, task_kind
from sae_interp_tasks.stages import probe_cache, probing
from sae_interp_tasks.stages.core import special_ids
from sae_interp_tasks.stages.probe_data import K_CHOICES, ProbeConfig, load_probe_data

log = logging.getLogger(__name__)
KIND = "sparse_probing"


@dataclass(frozen=True)
class ProbingSettings(Settings):
    probing: ProbeConfig = field(default_factory=ProbeConfig)


def metrics_for(ks: list[int]) -> dict:
    """The per-task metrics for these k: name -> (aggregation, higher_is_better)."""
    return {
        **{f"sae_top_{k}_test_accuracy": (nanmean, True) for k in ks},
        "llm_test_accuracy": (nanmean, True),
        **{f"llm_top_{k}_test_accuracy": (nanmean, True) for k in ks},
        "test_chance": (nanmean, False),
        "skipped_classes": (total, False),
    }


def serve_probing(ctx: RunContext, requests: list[InterpretRequest]) -> list[Response]:
    """Every class's task, once per group of equal settings and seed."""
    out: list = [None] * len(requests)
    for indices in grouped(requests, lambda r: (r.settings, r.seed)).values():
        first = requests[indices[0]]
        cfg: ProbeConfig = first.settings.probing
        data, scores = ctx.store.compute_once(
            ("sparse-probing", cfg, first.seed),
            lambda cfg=cfg, seed=first.seed: _score_all(ctx, cfg, seed),
        )
        for i in indices:
            slot = requests[i].doc["slot"]
            if slot >= len(data.classes):  # fewer classes than slots: an empty doc, counted
                out[i] = Response(metrics={}, detail={"probe_class": None})
                continue
            metrics = {k: v for k, v in scores[slot].items() if not k.startswith("_")}
            # the classes skipped for too few texts are counted once, on the first doc
            metrics["skipped_classes"] = float(len(data.skipped)) if slot == 0 else 0.0
            out[i] = Response(
                metrics=metrics,
                detail={
                    "probe_class": f"{cfg.probe_dataset}:{data.classes[slot]}",
                    "latents": scores[slot]["_chosen"]["sae"],
                    "sizes": scores[slot]["_sizes"],
                    **({"skipped": data.skipped} if slot == 0 and data.skipped else {}),
                },
            )
    return out


def _score_all(ctx: RunContext, cfg: ProbeConfig, seed: int):
    data = load_probe_data(cfg, seed)
    if data.skipped:
        log.warning(
            "sparse probing: %d classes have too few texts and are skipped (%s); lower "
            "probe_train_per_class / probe_test_per_class to score them",
            len(data.skipped),
            ", ".join(f"{c}: {n}" for c, n in data.skipped.items()),
        )
    acts = probe_cache.cached_activations(
        ctx,
        cfg,
        seed,
        lambda: probing.probe_activations(
            ctx.read_activations,
            ctx.sae,
            ctx.tokenizer,
            data,
            cfg,
            ctx.info.prepend_bos,
            special_ids(ctx.tokenizer),
        ),
    )
    scores = [
        probing.score_class(acts, i, sorted(cfg.probe_k), seed) for i in range(len(data.classes))
    ]
    return data, scores


# SAEBench's sparse_probing result files: its metrics are ours by name (every k it knows; a run
# writes those of its probe_k), one detail row per dataset; its probe on every latent
# (sae_test_accuracy) is not computed here
SAEBENCH = {
    "eval_type_id": "sparse_probing",
    "task": "sae_sparse_probing",
    "metrics": {
        "llm": {
            "llm_test_accuracy": "llm_test_accuracy",
            **{f"llm_top_{k}_test_accuracy": f"llm_top_{k}_test_accuracy" for k in K_CHOICES},
        },
        "sae": {f"sae_top_{k}_test_accuracy": f"sae_top_{k}_test_accuracy" for k in K_CHOICES},
    },
    "left_out": {"sae": ["sae_test_accuracy"]},
    "details": "dataset",
}


@task_kind(
    KIND,
    settings=ProbingSettings,
    serve=serve_probing,
    report=ReportSpec(
        headline="sae_top_1_test_accuracy",
        extra=("llm_test_accuracy",),
        chance={"sae_top_1_test_accuracy": "test_chance"},
        doc_id="probe_class",
        pair_on="probe_class",
        position=70,
        saebench=SAEBENCH,
    ),
)
class SAESparseProbingTask(SAETask):
    """Logistic probes on the k most discriminative latents against one on the hooked activation,
    per class of a labelled dataset."""

    METRICS = metrics_for([1, 2, 5])

    def metric_specs(self) -> dict:
        """This run's metrics: those of its probe_k."""
        return metrics_for(sorted(self.settings.probing.probe_k))

    def make_docs(self) -> list[dict]:
        return [{"slot": i} for i in range(self.settings.probing.n_slots)]
