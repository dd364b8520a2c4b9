"""Feature absorption (SAEBench's first-letter protocol, the sae_absorption task; docs/methods.md,
"Feature absorption"), per letter L:

1. The ground-truth probe: a logistic probe for "starts with L" on the hooked activations of the
   train words, one output per letter trained together as SAEBench trains its multi-probe
   (`train_probes`: binary cross-entropy with positives weighted by negatives/positives, Adam with
   weight decay 1e-4, 50 epochs of batches of 64, the learning rate decaying from 1e-2 to 1e-5).
   Its test F1 (logit > 0) says whether the model carries the letter at all; at or below
   `absorption_min_probe_f1` the letter is skipped and counted.
2. The latents that carry L: the same training on the SAE codes with an L1 term `absorption_l1`
   (batches of 4,096, weight decay 1e-6: SAEBench's k-sparse selection probe), its largest positive
   weights ranked; for k = 1..`absorption_max_k` a scikit-learn logistic probe on the top k
   (balanced classes, 500 iterations: SAEBench's); the split latents are the top k up to the last
   k whose test F1 rose by more than `absorption_f1_jump` over the previous one kept. Like
   SAEBench's, 50 Adam steps from a random start do not reach the L1 optimum: the ranking is
   SAEBench's, seeded by the run's seed.
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
from sae_interp_tasks.stages.saes import MAX_CODE_FLOATS

END_LR = 1e-5  # SAEBench's probes: the learning rate decays to this over the epochs
# SAEBench's two probe trainings (its train_and_save_probes and train_k_sparse_probes defaults)
GROUND_TRUTH = {"epochs": 50, "batch": 64, "lr": 1e-2, "weight_decay": 1e-4, "l1": 0.0}
SELECTION = {"epochs": 50, "batch": 4096, "lr": 1e-2, "weight_decay": 1e-6}
FULL_COS = 0.025  # full absorption: the top projecting latent's cos with the probe, at least
FRACTION_COS = 0.1  # absorption fraction: each absorbing latent's cos with the probe, at least
PROJECTION_SHARE = 0.4  # both: the absorbing latents' share of the probe projection, at least
MAX_ABSORBERS = 3  # absorption fraction: latents that may share the absorbed projection
TOP_PROJECTING = 10  # latents recorded per word, by projection
SILENT = 1e-8  # a split latent below this activation is silent


@dataclass(frozen=True)
class Probes:
    """One logistic probe per letter (rows of `weight`, in `letters` order), as SAEBench trains its
    multi-probe."""

    letters: list[int]
    weight: np.ndarray  # [letters, d]
    bias: np.ndarray  # [letters]

    def scores(self, x, letter: int) -> np.ndarray:
        row = self.letters.index(letter)
        return np.asarray(x @ self.weight[row]).ravel() + self.bias[row]

    def direction(self, letter: int) -> np.ndarray:
        w = self.weight[self.letters.index(letter)].astype(np.float64)
        return w / np.linalg.norm(w)


@torch.no_grad()
def encode_sparse(sae, acts: np.ndarray) -> sparse.csr_matrix:
    """The SAE codes of the activations, as a sparse [words, width] matrix."""
    step = max(1, MAX_CODE_FLOATS // sae.cfg.d_sae)
    dtype = sae.W_dec.dtype
    rows = [
        sparse.csr_matrix(
            sae.encode(torch.from_numpy(acts[i : i + step]).to(dtype)).float().numpy()
        )
        for i in range(0, len(acts), step)
    ]
    return sparse.vstack(rows).tocsr() if rows else sparse.csr_matrix((0, sae.cfg.d_sae))


def _rows(x, idx: np.ndarray) -> torch.Tensor:
    if sparse.issparse(x):
        coo = x[idx].tocoo()
        indices = torch.from_numpy(np.vstack([coo.row, coo.col]).astype(np.int64))
        return torch.sparse_coo_tensor(indices, torch.from_numpy(coo.data).float(), coo.shape)
    return torch.from_numpy(np.ascontiguousarray(x[idx])).float()


def train_probes(x, labels: np.ndarray, spec: dict, seed: int, init=None) -> Probes:
    """SAEBench's `train_multi_probe`: one output per letter present, initialised as torch's
    nn.Linear, binary cross-entropy with positives weighted by negatives/positives, an L1 term
    `spec["l1"]` x the mean over letters of the summed |weights|, Adam (weight decay
    `spec["weight_decay"]`) over `spec["epochs"]` epochs of shuffled batches of `spec["batch"]`,
    the learning rate decaying exponentially from `spec["lr"]` to 1e-5. `x` dense or sparse;
    `init` (weight, bias) replaces the seeded start."""
    letters = sorted(set(labels.tolist()))
    gen = torch.Generator().manual_seed(seed)
    n, d = x.shape
    bound = 1 / math.sqrt(d)
    weight = (torch.rand(len(letters), d, generator=gen) * 2 - 1) * bound
    bias = (torch.rand(len(letters), generator=gen) * 2 - 1) * bound
    if init is not None:
        weight, bias = (torch.as_tensor(t, dtype=torch.float32).clone() for t in init)
    weight.requires_grad_()
    bias.requires_grad_()
    target = torch.from_numpy(labels[:, None] == np.array(letters)[None, :]).float()
    positives = target.sum(0).clamp_min(1)
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=(n - positives) / positives)
    opt = torch.optim.Adam([weight, bias], lr=spec["lr"], weight_decay=spec["weight_decay"])
    decay = math.exp(math.log(END_LR / spec["lr"]) / spec["epochs"])
    schedule = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=decay)
    with torch.enable_grad():
        for _ in range(spec["epochs"]):
            order = torch.randperm(n, generator=gen).numpy()
            for start in range(0, n, spec["batch"]):
                idx = order[start : start + spec["batch"]]
                batch = _rows(x, idx)
                logits = batch @ weight.T + bias
                loss = loss_fn(logits, target[idx]) + spec["l1"] * weight.abs().sum(-1).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
            schedule.step()
    return Probes(letters, weight.detach().numpy(), bias.detach().numpy())


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


def score_letters(data: WordActivations, codes, sae, cfg: AbsorptionConfig, seed: int) -> dict:
    """Every letter present: {letter index: its result}. The two multi-probes (ground truth on the
    activations, selection on the codes) are trained once, over all letters, as SAEBench does."""
    train = data.train
    truth = train_probes(data.acts[train], data.labels[train], GROUND_TRUTH, seed)
    selection = train_probes(
        codes[train], data.labels[train], {**SELECTION, "l1": cfg.absorption_l1}, seed
    )
    return {
        letter: score_letter(data, codes, sae, letter, cfg, truth, selection)
        for letter in truth.letters
    }


def score_letter(data, codes, sae, letter: int, cfg: AbsorptionConfig, truth, selection) -> dict:
    """One letter's probe F1, split latents and absorption; `skip` names why it is not scored."""
    y = (data.labels == letter).astype(int)
    train = data.train
    test_scores = truth.scores(data.acts[~train], letter)
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
    weights = selection.weight[selection.letters.index(letter)]
    f1s = k_sparse_f1s(codes, y, train, weights, cfg.absorption_max_k)
    main = split_latents(f1s, cfg.absorption_f1_jump)
    out["k_sparse_f1"] = [score for _, score in f1s]
    out["split_latents"] = main
    test_rows = np.flatnonzero(~train)
    positives = test_rows[(y[~train] == 1) & (test_scores > 0)]
    if not len(positives):
        out["skip"] = f"no test word of {LETTERS[letter]!r} is a probe true positive"
        return out
    direction = truth.direction(letter)
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
