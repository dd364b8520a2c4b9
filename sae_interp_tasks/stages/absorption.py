"""Feature absorption (SAEBench's first-letter protocol, the sae_absorption task; docs/methods.md,
"Feature absorption"), per letter L:

1. The ground-truth probe: a logistic probe for "starts with L" on the hooked activations of the
   train words (one against the rest, positives weighted by negatives/positives as SAEBench's
   BCE `pos_weight`, L2 as its weight decay of 1e-4 on a 26-letter probe). Its test F1 (logit > 0)
   says whether the model carries the letter at all; below `absorption_min_probe_f1` the letter is
   skipped and counted.
2. The latents that carry L: an L1 logistic probe on the SAE codes of the train words (strength
   `absorption_l1`: SAEBench's loss, minimised exactly by scikit-learn where SAEBench takes 50 Adam
   steps), its largest positive weights ranked; for k = 1..`absorption_max_k` a logistic probe on
   the top k (scikit-learn, balanced classes, SAEBench's); the split latents are the top k up to
   the last k whose test F1 rose by more than `absorption_f1_jump` over the previous one.
3. Per test word of L that the ground-truth probe calls L (a probe true positive), with the unit
   probe direction p, the activation a and the SAE code c, each latent's projection onto p is
   c_i cos(d_i, p) (d_i its decoder row). The absorption fraction is the share of a.p that latents
   other than the split ones carry (at most 3 of them, each at cos >= 0.1 and together at least
   0.4 of a.p; 0 when the split latents carry a.p; 1 when they carry none of it); full absorption:
   the split latents silent, and the top projecting latent at cos >= 0.025 carrying at least 0.4
   of a.p. Per letter: the mean fraction over its true positives, the share fully absorbed, and
   the number of split latents.

Memory stays bounded whatever the width: codes are kept sparse (words x L0 entries), and only the
chosen latents' columns and one word's code at a time become dense.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy import sparse

from sae_interp_tasks.stages.absorption_data import LETTERS, AbsorptionConfig, WordActivations

MAX_BATCH_FLOATS = 2**25  # a batch of codes [words, width] stays under 128 MB
GT_WEIGHT_DECAY = 1e-4  # SAEBench's ground-truth probe
GT_OUTPUTS = 26  # ... a multi-probe whose loss is a mean over its 26 letters
FULL_COS = 0.025  # full absorption: the top projecting latent's cos with the probe, at least
FRACTION_COS = 0.1  # absorption fraction: each absorbing latent's cos with the probe, at least
PROJECTION_SHARE = 0.4  # both: the absorbing latents' share of the probe projection, at least
MAX_ABSORBERS = 3  # absorption fraction: latents that may share the absorbed projection
TOP_PROJECTING = 10  # latents recorded per word, by projection
SILENT = 1e-8  # a split latent below this activation is silent


@dataclass(frozen=True)
class Probe:
    weight: np.ndarray
    bias: float

    def scores(self, x) -> np.ndarray:
        return np.asarray(x @ self.weight).ravel() + self.bias


@torch.no_grad()
def encode_sparse(sae, acts: np.ndarray) -> sparse.csr_matrix:
    """The SAE codes of the activations, as a sparse [words, width] matrix."""
    step = max(1, MAX_BATCH_FLOATS // sae.cfg.d_sae)
    dtype = sae.W_dec.dtype
    rows = [
        sparse.csr_matrix(
            sae.encode(torch.from_numpy(acts[i : i + step]).to(dtype)).float().numpy()
        )
        for i in range(0, len(acts), step)
    ]
    return sparse.vstack(rows).tocsr() if rows else sparse.csr_matrix((0, sae.cfg.d_sae))


def _pos_weight(y: np.ndarray) -> dict:
    return {0: 1.0, 1: float((y == 0).sum()) / max(1, int(y.sum()))}


def ground_truth_probe(x: np.ndarray, y: np.ndarray) -> Probe:
    from sklearn.linear_model import LogisticRegression

    c = 1.0 / (GT_OUTPUTS * GT_WEIGHT_DECAY * len(y))
    fit = LogisticRegression(C=c, class_weight=_pos_weight(y), max_iter=2000).fit(x, y)
    return Probe(fit.coef_[0].astype(np.float64), float(fit.intercept_[0]))


def selection_weights(codes: sparse.csr_matrix, y: np.ndarray, l1: float) -> np.ndarray:
    """The L1 probe's weight per latent (zero for most)."""
    from sklearn.linear_model import LogisticRegression

    fit = LogisticRegression(
        l1_ratio=1.0,
        solver="liblinear",
        C=1.0 / (len(y) * l1),
        class_weight=_pos_weight(y),
        intercept_scaling=100.0,
        max_iter=2000,
    ).fit(codes, y)
    return fit.coef_[0]


def f1(y: np.ndarray, predicted: np.ndarray) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(y, predicted, zero_division=0.0))


def k_sparse_f1s(codes, y, train, weights: np.ndarray, max_k: int) -> list[tuple[list[int], float]]:
    """Per k = 1..max_k: the top-k latents by selection weight and their probe's test F1."""
    from sklearn.linear_model import LogisticRegression

    ranked = np.argsort(-weights, kind="stable")[:max_k]
    out = []
    for k in range(1, max_k + 1):
        cols = ranked[:k]
        x = codes[:, cols].toarray()
        fit = LogisticRegression(max_iter=500, class_weight="balanced").fit(x[train], y[train])
        out.append((cols.tolist(), f1(y[~train], fit.decision_function(x[~train]) > 0)))
    return out


def split_latents(f1s: list[tuple[list[int], float]], jump: float) -> list[int]:
    """The top k latents up to the last k whose F1 rose by more than `jump` over the last kept."""
    best, split = -math.inf, []
    for latents, score in f1s:
        if score > best + jump:
            best, split = score, latents
        else:
            break
    return split


def word_absorption(act, code: np.ndarray, direction, cos: np.ndarray, main: list[int]) -> dict:
    """One probe true positive's absorption (fraction, full) and its top projecting latents."""
    probe_projection = float(act @ direction)
    projection = code * cos
    main_projection = float(projection[main].sum())
    others = projection.copy()
    others[main] = 0.0
    others[(cos < FRACTION_COS) | (others <= 0)] = 0.0
    absorbed = float(np.sort(others)[::-1][:MAX_ABSORBERS].sum())
    with np.errstate(divide="ignore", invalid="ignore"):
        share = absorbed / probe_projection
    if main_projection >= probe_projection or not share >= PROJECTION_SHARE:
        fraction = 0.0
    elif main_projection <= 0.0:
        fraction = 1.0
    else:
        taken = min(absorbed, probe_projection - main_projection)
        fraction = float(np.clip(taken / (taken + main_projection), 0.0, 1.0))
    top = np.argsort(-projection, kind="stable")[:TOP_PROJECTING]
    full = (
        bool(np.all(code[main] < SILENT))
        and cos[top[0]] >= FULL_COS
        and probe_projection >= 0
        and projection[top[0]] / probe_projection >= PROJECTION_SHARE
    )
    return {
        "absorption_fraction": fraction,
        "full_absorption": bool(full),
        "probe_projection": probe_projection,
        "top_latents": top[:3].tolist(),
        "top_projections": [float(projection[i]) for i in top[:3]],
    }


def decoder_cos(sae, direction: np.ndarray) -> np.ndarray:
    """cos(decoder row, direction) per latent."""
    with torch.no_grad():
        dec = sae.W_dec.detach().float()
        d = torch.from_numpy(direction).float()
        return (dec @ d / (dec.norm(dim=-1) * d.norm()).clamp_min(1e-12)).numpy()


def score_letter(data: WordActivations, codes, sae, letter: int, cfg: AbsorptionConfig) -> dict:
    """One letter's probes, split latents and absorption; `skip` names why it is not scored."""
    y = (data.labels == letter).astype(int)
    train = data.train
    probe = ground_truth_probe(data.acts[train], y[train])
    test_scores = probe.scores(data.acts[~train])
    out: dict = {
        "letter": LETTERS[letter],
        "probe_f1": f1(y[~train], test_scores > 0),
        "words": {"train": int(y[train].sum()), "test": int(y[~train].sum())},
    }
    if out["probe_f1"] <= cfg.absorption_min_probe_f1:
        out["skip"] = (
            f"probe F1 {out['probe_f1']:.2f} is not above absorption_min_probe_f1 "
            f"{cfg.absorption_min_probe_f1}"
        )
        return out
    weights = selection_weights(codes[train], y[train], cfg.absorption_l1)
    f1s = k_sparse_f1s(codes, y, train, weights, cfg.absorption_max_k)
    main = split_latents(f1s, cfg.absorption_f1_jump)
    out["k_sparse_f1"] = [score for _, score in f1s]
    out["split_latents"] = main
    test_rows = np.flatnonzero(~train)
    positives = test_rows[(y[~train] == 1) & (test_scores > 0)]
    if not len(positives):
        out["skip"] = f"no test word of {LETTERS[letter]!r} is a probe true positive"
        return out
    direction = probe.weight / np.linalg.norm(probe.weight)
    cos = decoder_cos(sae, direction)
    rows = []
    for i in positives:
        row = word_absorption(data.acts[i], codes[i].toarray().ravel(), direction, cos, main)
        rows.append({"word": data.words[i], **row})
    out["absorbed_words"] = rows
    out["num_probe_true_positives"] = len(rows)
    out["num_full_absorption"] = sum(r["full_absorption"] for r in rows)
    out["absorption_fraction"] = sum(r["absorption_fraction"] for r in rows) / len(rows)
    out["full_absorption_rate"] = out["num_full_absorption"] / len(rows)
    out["num_split_features"] = len(main)
    return out
