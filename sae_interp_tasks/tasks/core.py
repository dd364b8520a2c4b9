"""sae_core: reconstruction and sparsity of the SAE over corpus chunks (no LLM); one doc = one chunk."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from lm_eval.api.metrics import mean
from tqdm.auto import tqdm

from sae_interp_tasks import core
from sae_interp_tasks.caching import atomic_save, cache_key, cache_root
from sae_interp_tasks.config import Settings
from sae_interp_tasks.corpus import CorpusConfig, fingerprint, token_contexts
from sae_interp_tasks.core import CoreConfig
from sae_interp_tasks.records import Response
from sae_interp_tasks.subject import model_fingerprint
from sae_interp_tasks.registry import settings_for, task_kind
from sae_interp_tasks.tasks.base import SAETask


@dataclass(frozen=True)
class CoreSettings(Settings):
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    core: CoreConfig = field(default_factory=CoreConfig)


@task_kind("core", settings=CoreSettings, headline="ce_loss_recovered")
class SAECoreTask(SAETask):
    """Reconstruction and sparsity of the SAE over corpus chunks; no LLM."""

    HANDLER = "sae_interp_tasks.tasks.core:serve_core"
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

    def process_results(self, doc, results) -> dict:
        stats = results[0].stats
        scalars = core.per_chunk_metrics(stats)
        return {name: scalars.get(name, stats) for name in self.METRICS}


def serve_core(backend, payloads: list[dict]) -> list[Response]:
    """Chunk statistics for sae_core docs. Each chunk's SAE-independent part (the hooked activation, the
    clean and zero-ablated losses) is cached per subject model, hook, corpus and seed; each SAE's
    statistics are cached per SAE. An interrupted run resumes; a second SAE at the same hook pays
    only for its encode and the spliced forward from the hook on."""
    groups: dict[str, list[int]] = {}
    for i, p in enumerate(payloads):
        groups.setdefault(json.dumps([p["settings"], p["seed"]], sort_keys=True), []).append(i)
    results: list = [None] * len(payloads)
    model, info = backend.model, backend.info
    special = core.special_ids(model.tokenizer)
    for key, indices in groups.items():
        settings, seed = json.loads(key)
        s: CoreSettings = settings_for("core", settings)
        corpus = s.corpus.spec(info.dataset_path)
        wanted = sorted({payloads[i]["doc"]["chunk"] for i in indices})
        where = {"model": model.cfg.model_name, "weights": model_fingerprint(model), "hook": info.hook_name,
                 "bos": info.prepend_bos, "corpus": corpus, "corpus_fp": fingerprint(corpus), "core": s.core,
                 "seed": seed, "forward": backend.forward_name}
        ref_folder = _folder("core_reference", where)
        sae_folder = _folder("core", {**where, "sae": info.fingerprint})
        contexts = token_contexts(corpus, backend.tokenizer, (max(wanted) + 1) * s.core.chunk_tokens,
                                  s.core.context_size, info.prepend_bos, seed)
        zero = None
        stats, token_sha = {}, {}
        bar = tqdm(total=len(wanted), unit="chunks", desc="sae_core")
        for chunk in range(max(wanted) + 1):
            batch = [next(contexts) for _ in range(s.core.chunk_contexts)]
            if chunk not in wanted:
                continue
            token_sha[chunk] = tokens_sha256(batch)
            path = sae_folder / f"chunk{chunk}.pt"
            if path.exists():
                stats[chunk] = torch.load(path, weights_only=False)
            else:
                tokens = torch.stack(batch).to(backend.device)
                ref_path = ref_folder / f"chunk{chunk}.pt"
                if ref_path.exists():
                    reference = torch.load(ref_path, weights_only=False)
                else:
                    if zero is None:
                        zero = [core.zero_ablation_logits(model, info.hook_name)]
                    reference = core.chunk_reference(model, info.hook_name, tokens, special, backend.reader, zero[0])
                    atomic_save(reference, ref_path)
                stats[chunk] = core.chunk_stats(model, backend.sae, info.hook_name, tokens, reference, special)
                atomic_save(stats[chunk], path)
            bar.update(1)
        bar.close()
        for i in indices:
            chunk = payloads[i]["doc"]["chunk"]
            results[i] = Response(metrics=core.per_chunk_metrics(stats[chunk]), chunk=chunk, stats=stats[chunk],
                                  detail={"tokens_sha256": token_sha[chunk]})
    return results


def tokens_sha256(contexts: list[torch.Tensor]) -> str:
    """A chunk's token ids, hashed: `sae-interp compare` pairs two runs' chunks only where these agree
    (the same settings can read different text, e.g. `corpus: sae` is each SAE's own training set)."""
    ids = torch.stack(contexts).to(torch.int64).cpu().numpy()
    return hashlib.sha256(ids.tobytes()).hexdigest()[:16]


def _folder(kind: str, key: dict) -> Path:
    folder = cache_root() / kind / cache_key(key)
    folder.mkdir(parents=True, exist_ok=True)
    return folder
