"""SAEBench's per-latent core metrics: from the chunks' firing counts, each latent's density (the
share of tokens it fires on) and consistent activation heuristic (its firing tokens per context it
fires in); from the weights, its encoder bias and norm, the cosine of its encoder and decoder
directions, and the largest cosine of its decoder (encoder) direction with any other latent's,
through the one max-cosine implementation (`stages.similarity.top_cosines`, which sae_similarity
uses and which equals SAEBench's `calculate_max_cosine_sim`)."""

from __future__ import annotations

import math

import numpy as np
import torch

from sae_interp_tasks.stages.core import CoreStats
from sae_interp_tasks.stages.similarity import top_cosines, unit_rows

BLOCK = 4096  # rows of cosines computed at a time
NAMES = (
    "feature_density",
    "consistent_activation_heuristic",
    "encoder_bias",
    "encoder_norm",
    "encoder_decoder_cosine_sim",
    "max_decoder_cosine_sim",
    "max_encoder_cosine_sim",
)


@torch.no_grad()
def feature_metrics(sae, stats: list[CoreStats]) -> dict[str, list]:
    """name -> per latent values (NaN where undefined: a latent that never fired has no consistent
    activation heuristic), over the chunks `stats`."""
    firing = np.sum([s.firing for s in stats], axis=0).astype(np.float64)
    contexts = np.sum([s.contexts_firing for s in stats], axis=0).astype(np.float64)
    n_tokens = sum(s.n_tokens for s in stats)
    with np.errstate(divide="ignore", invalid="ignore"):
        cah = np.where(contexts > 0, firing / contexts, np.nan)
    w_enc, w_dec = sae.W_enc.detach().float().cpu(), sae.W_dec.detach().float().cpu()
    enc, dec = unit_rows(w_enc.T), unit_rows(w_dec)
    bias = getattr(sae, "b_mag", None)  # gated SAEs: the magnitude path's bias, as SAEBench
    bias = getattr(sae, "b_enc", None) if bias is None else bias
    bias = torch.zeros(w_dec.shape[0]) if bias is None else bias.detach().float().cpu()
    return {
        "feature_density": (firing / max(n_tokens, 1)).tolist(),
        "consistent_activation_heuristic": cah.tolist(),
        "encoder_bias": bias.tolist(),
        "encoder_norm": w_enc.norm(dim=0).tolist(),
        "encoder_decoder_cosine_sim": (enc * dec).sum(-1).tolist()
        if "transcoder" not in sae.cfg.architecture() and enc.shape == dec.shape
        else [float("nan")] * dec.shape[0],
        "max_decoder_cosine_sim": top_cosines(dec, dec, 1, BLOCK, exclude_self=True)[0][:, 0]
        .astype(float)
        .tolist(),
        "max_encoder_cosine_sim": top_cosines(enc, enc, 1, BLOCK, exclude_self=True)[0][:, 0]
        .astype(float)
        .tolist(),
    }


def averages(metrics: dict[str, list]) -> dict[str, float]:
    """SAEBench's misc metrics over the latents: the mean max encoder and decoder cosines."""
    return {
        f"average_{name}": float(np.mean(metrics[name])) if metrics else math.nan
        for name in ("max_encoder_cosine_sim", "max_decoder_cosine_sim")
    }
