"""lm-eval glue: the Task classes the YAMLs name, and the backend handlers that serve them.

A doc is one latent slot (interpretability tasks) or one corpus chunk (sae_core). Each doc
becomes one `interpret` request whose single argument is a JSON payload naming the task
kind, the doc, the seed and the task's settings; the `sae` backend answers all of a run's
requests together. This module only wires: the work lives in the stage modules.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from pathlib import Path

import torch
from lm_eval.api.instance import Instance
from lm_eval.api.metrics import mean, nanmean
from lm_eval.api.task import Task, TaskConfig
from lm_eval.filters import build_filter_ensemble
from tqdm.auto import tqdm

from sae_interp_tasks import core, pipeline, selfexplain_task  # noqa: F401  (they register their settings)
from sae_interp_tasks.corpus import fingerprint, token_contexts
from sae_interp_tasks.records import Response
from sae_interp_tasks.settings import HARNESS_KEYS, MODEL_ARG_KEYS, settings_for
from sae_interp_tasks.subject import cache_root

log = logging.getLogger(__name__)

DEFAULT_SEED = 1234  # lm-eval's default --seed for the fewshot sampler


class SAETask(Task):
    """Base of every task here; subclasses set KIND, METRICS and make docs."""

    VERSION = 1
    KIND = ""
    # metric -> (aggregation, higher_is_better)
    METRICS: dict = {}

    def __init__(self, config=None, **kwargs):
        config = dict(config or {})
        self._metadata = dict(config.get("metadata") or {})
        self.settings = settings_for(self.KIND, self._metadata)  # bad keys/values fail here, before any work
        self._seed = DEFAULT_SEED
        # Task.__init__ would wrap the whole dict as TaskConfig({...}) (all of it in `task`, the
        # metadata lost from the results file, a generate_until default warned about); build the
        # config field by field instead, with our own output type
        known = {f.name for f in dataclasses.fields(TaskConfig)}
        fields = {k: v for k, v in config.items() if k in known}
        fields["output_type"] = "interpret"  # the backend's request type
        self._config = TaskConfig(**fields)
        self._training_docs = self._fewshot_docs = self._instances = None
        self._filters = [build_filter_ensemble("none", [["take_first", None]])]
        self.fewshot_rnd = None
        if isinstance(self._metadata.get("version"), (int, float)):
            self.VERSION = self._metadata["version"]

    def download(self, *args, **kwargs) -> None:
        pass

    def has_training_docs(self) -> bool:
        return False

    def has_validation_docs(self) -> bool:
        return False

    def has_test_docs(self) -> bool:
        return True

    def test_docs(self):
        return self.make_docs()

    def make_docs(self) -> list[dict]:
        raise NotImplementedError

    def doc_to_text(self, doc) -> str:
        return json.dumps(doc, sort_keys=True)

    def doc_to_target(self, doc) -> str:
        return ""

    def set_fewshot_seed(self, seed: int | None = None) -> None:
        super().set_fewshot_seed(seed)
        self._seed = DEFAULT_SEED if seed is None else int(seed)

    @property
    def seed(self) -> int:
        chosen = self._metadata.get("seed")
        return self._seed if chosen is None else int(chosen)

    def task_settings(self) -> dict:
        return {k: v for k, v in self._metadata.items() if k not in HARNESS_KEYS | MODEL_ARG_KEYS}

    def construct_requests(self, doc, ctx, **kwargs):
        payload = {"kind": self.KIND, "task": self.config.task, "doc": doc, "seed": self.seed,
                   "settings": self.task_settings()}
        return Instance(request_type="interpret", doc=doc, arguments=(json.dumps(payload, sort_keys=True),),
                        idx=0, metadata=kwargs.get("metadata", (self.config.task, None, 1)))

    def process_results(self, doc, results) -> dict:
        response = results[0]
        return {name: response["metrics"][name] for name in self.METRICS}

    def aggregation(self) -> dict:
        return {name: agg for name, (agg, _) in self.METRICS.items()}

    def higher_is_better(self) -> dict:
        return {name: better for name, (_, better) in self.METRICS.items()}


# --- sae_core ------------------------------------------------------------------------------------
class SAECoreTask(SAETask):
    """Reconstruction and sparsity of the SAE over corpus chunks; no LLM."""

    KIND = "core"
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
        s = self.settings["CoreSettings"]
        per_chunk = s.chunk_contexts * s.context_size
        return [{"chunk": i} for i in range(max(1, s.n_tokens // per_chunk))]

    def process_results(self, doc, results) -> dict:
        stats = results[0]["stats"]
        scalars = core.per_chunk_metrics(stats)
        return {name: scalars.get(name, stats) for name in self.METRICS}


def serve_core(backend, payloads: list[dict]) -> list[dict]:
    """Chunk statistics for sae_core docs, each cached on disk so an interrupted run resumes."""
    from sae_interp_tasks.settings import CorpusSettings, CoreSettings, build

    groups: dict[str, list[int]] = {}
    for i, p in enumerate(payloads):
        groups.setdefault(json.dumps([p["settings"], p["seed"]], sort_keys=True), []).append(i)
    results: list = [None] * len(payloads)
    for key, indices in groups.items():
        settings, seed = json.loads(key)
        corpus = build(CorpusSettings, settings).spec(backend.info.dataset_path)
        cs = build(CoreSettings, settings)
        wanted = sorted({payloads[i]["doc"]["chunk"] for i in indices})
        folder = _core_cache_dir(backend, corpus, cs, seed)
        stats = {}
        contexts = token_contexts(corpus, backend.tokenizer, (max(wanted) + 1) * cs.chunk_contexts * cs.context_size,
                                  cs.context_size, backend.info.prepend_bos, seed)
        bar = tqdm(total=len(wanted), unit="chunks", desc="sae_core")
        for chunk in range(max(wanted) + 1):
            batch = [next(contexts) for _ in range(cs.chunk_contexts)]
            if chunk not in wanted:
                continue
            path = folder / f"chunk{chunk}.pt"
            if path.exists():
                stats[chunk] = torch.load(path, weights_only=False)
            else:
                tokens = torch.stack(batch).to(backend.device)
                stats[chunk] = core.chunk_stats(backend.model, backend.sae, backend.info.hook_name, tokens)
                tmp = path.with_suffix(".tmp")
                torch.save(stats[chunk], tmp)
                tmp.replace(path)
            bar.update(1)
        bar.close()
        for i in indices:
            chunk = payloads[i]["doc"]["chunk"]
            results[i] = Response(chunk=chunk, stats=stats[chunk], metrics=core.per_chunk_metrics(stats[chunk]))
    return results


def _core_cache_dir(backend, corpus, cs, seed) -> Path:
    key = json.dumps({"sae": backend.info.fingerprint, "model": backend.model.cfg.model_name,
                      "hook": backend.info.hook_name, "corpus": corpus.__dict__, "corpus_fp": fingerprint(corpus), "cs": cs.__dict__,
                      "seed": seed}, sort_keys=True, default=str)
    folder = cache_root() / "core" / hashlib.sha256(key.encode()).hexdigest()[:24]
    folder.mkdir(parents=True, exist_ok=True)
    return folder


# --- auto-interp: detection, fuzzing, embedding -----------------------------------------------
def total(values) -> float:
    """Aggregation for counts (e.g. dead-or-rare latents passed over): their sum over docs."""
    return float(sum(values))


class SAEInterpTask(SAETask):
    """Docs are latent slots; each is filled by a seeded sample of live latents (or `latents: [...]`)."""

    def make_docs(self) -> list[dict]:
        sel = self.settings["LatentSelection"]
        n = len(sel.latents) if sel.latents is not None else sel.n_latents
        return [{"slot": i} for i in range(n)]

    def process_results(self, doc, results) -> dict:
        response = results[0]
        values = {name: response["metrics"].get(name, float("nan")) for name in self.METRICS}
        values["skipped_dead"] = response["skipped_before"]
        return values


_CLASSIFIER_METRICS = {
    "balanced_acc": (nanmean, True),
    "f1": (nanmean, True),
    "precision": (nanmean, True),
    "recall": (nanmean, True),
    "auroc": (nanmean, True),
    "balanced_acc_shuffled": (nanmean, False),
    "auroc_shuffled": (nanmean, False),
    "answered_frac": (nanmean, True),
    "parse_failures": (total, False),
    **{f"recall_decile{d}": (nanmean, True) for d in range(1, 11)},
    "skipped_dead": (total, False),
}


class SAEDetectionTask(SAEInterpTask):
    KIND = "detection"
    METRICS = _CLASSIFIER_METRICS


class SAEFuzzingTask(SAEInterpTask):
    KIND = "fuzzing"
    METRICS = _CLASSIFIER_METRICS


class SAEEmbeddingTask(SAEInterpTask):
    KIND = "embedding"
    METRICS = {"auroc": (nanmean, True), "auroc_shuffled": (nanmean, False), "skipped_dead": (total, False)}



class SAESelfExplainTask(SAEInterpTask):
    """The subject model explains its own latents; agreement with the auto-interp explanations."""

    KIND = "selfexplain"
    METRICS = {
        "retrieval_auroc": (nanmean, True),
        "top1_match": (nanmean, True),
        "top1_chance": (nanmean, False),
        "matched_similarity": (nanmean, True),
        "judge_agreement": (nanmean, True),
        "selfexplain_balanced_acc": (nanmean, True),
        "autointerp_balanced_acc": (nanmean, True),
        "peak_selfsim": (nanmean, True),
        "selfsim_threshold": (nanmean, False),  # the failure threshold used (calibrated on random directions)
        "selfexplain_failure": (total, False),
        "skipped_dead": (total, False),
    }
