"""Sparse probing's activations cached on disk, per subject model, hook, SAE, forward, settings and
seed (`probe_activations/`), saved whole (`stages.saved.atomic_save`): a rerun reads them back, and
an interrupted run computes them again from the start (one forward over a few thousand texts)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

import numpy as np
import torch
from scipy import sparse

from sae_interp_tasks.caching import cache_key, cache_root
from sae_interp_tasks.stages.probe_data import ProbeConfig
from sae_interp_tasks.stages.probing import ProbeActivations
from sae_interp_tasks.stages.saved import atomic_save
from sae_interp_tasks.stages.subject import model_fingerprint

log = logging.getLogger(__name__)
CACHE_FORMAT = 1


def cached_activations(
    ctx, cfg: ProbeConfig, seed: int, compute: Callable[[], ProbeActivations]
) -> ProbeActivations:
    key = {
        "model": ctx.model.cfg.model_name,
        "weights": model_fingerprint(ctx.model),
        "hook": ctx.info.hook_name,
        "bos": ctx.info.prepend_bos,
        "sae": ctx.info.fingerprint,
        "forward": ctx.forward_name,
        "config": cfg,
        "seed": seed,
        # the stdlib texts differ between Python versions
        "python": sys.version_info[:3] if cfg.probe_dataset == "stdlib" else None,
        "format": CACHE_FORMAT,
    }
    path = cache_root() / "probe_activations" / cache_key(key) / "activations.pt"
    if path.exists():
        try:
            saved = torch.load(path, weights_only=False)
            return ProbeActivations(
                llm=saved["llm"],
                sae=sparse.csr_matrix(
                    (saved["data"], saved["indices"], saved["indptr"]), shape=saved["shape"]
                ),
                labels=saved["labels"],
                train=saved["train"],
            )
        except Exception as err:  # a truncated or foreign file is a cache miss, never a crash
            log.warning("cache entry %s is unreadable (%s); computing it again", path, err)
    acts = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_save(
        {
            "llm": acts.llm,
            "data": acts.sae.data,
            "indices": acts.sae.indices,
            "indptr": acts.sae.indptr,
            "shape": acts.sae.shape,
            "labels": np.asarray(acts.labels),
            "train": np.asarray(acts.train),
        },
        path,
    )
    return acts
