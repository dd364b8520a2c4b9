"""Sparse probing (SAEBench's protocol, the sae_sparse_probing task): per class, a binary task (the
class against the others), logistic probes on the k latents that differ most between its two sides
against probes on the hooked activation.

- Each text is read for `probe_context` tokens; its hooked activation and its SAE code are averaged
  over its tokens, special tokens (BOS, EOS, PAD) left out, as SAEBench's meaned activations are.
- Memory stays bounded whatever the width: the SAE code of a batch is averaged at once and only its
  non-zeros are kept (a sparse texts x width matrix: at most tokens x L0 entries a text); no tokens
  x width matrix outlives its batch.
- A binary task (`binary_task`): the class's train texts as positives, as many negatives drawn
  evenly from the other classes (SAEBench's `prepare_probe_data`), shuffled; the same for test.
- Top-k (`top_k_columns`): the k columns with the largest |mean over positives - mean over
  negatives| on the train side (SAEBench's `get_top_k_mean_diff_mask`); a scikit-learn logistic
  regression (L2, C=1, 1,000 iterations: SAEBench's `train_sklearn_probe`) on those columns; its
  test accuracy. Per text, only the mean codes of the chosen columns become dense.
- The full probe: the same regression on the whole hooked activation (`llm_test_accuracy`, the
  ceiling a sparse probe is read against). SAEBench's probe on every latent (`sae_test_accuracy`)
  needs a dense texts x width matrix and is not computed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import sparse
from tqdm.auto import tqdm

from sae_interp_tasks.stages.probe_data import ProbeConfig, ProbeData
from sae_interp_tasks.stages.saes import MAX_CODE_FLOATS


@dataclass(frozen=True)
class ProbeActivations:
    """Per text (train texts of every class, then test texts): the mean hooked activation
    [texts, d_in], the mean SAE code [texts, d_sae] (sparse), its class and whether it trains."""

    llm: np.ndarray
    sae: sparse.csr_matrix
    labels: np.ndarray  # class index into ProbeData.classes
    train: np.ndarray  # bool


def tokenize(tokenizer, texts: list[str], context: int, bos: bool) -> list[list[int]]:
    """Each text's first `context` tokens (BOS first where the SAE was trained with one)."""
    room = context - (1 if bos else 0)
    out = []
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"][:room]
        out.append(([tokenizer.bos_token_id] if bos else []) + ids)
    return out


@torch.no_grad()
def probe_activations(
    read, sae, tokenizer, data: ProbeData, cfg: ProbeConfig, bos: bool, special: list[int]
) -> ProbeActivations:
    """`read(tokens) -> [B, T, d_in]` is the run's hooked-activation reader."""
    texts, labels, train = [], [], []
    for split, source in ((True, data.train), (False, data.test)):
        for i, c in enumerate(data.classes):
            texts += source[c]
            labels += [i] * len(source[c])
            train += [split] * len(source[c])
    ids = tokenize(tokenizer, texts, cfg.probe_context, bos)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    per_batch = max(1, MAX_CODE_FLOATS // (cfg.probe_context * sae.cfg.d_sae))
    llm, codes = [], []
    step = min(per_batch, 32)
    for start in tqdm(range(0, len(ids), step), desc="sparse probing: texts", unit="batches"):
        batch = ids[start : start + step]
        width = max(len(t) for t in batch)
        tokens = torch.full((len(batch), width), pad, dtype=torch.long)
        real = torch.zeros((len(batch), width), dtype=torch.bool)
        for row, t in enumerate(batch):
            tokens[row, : len(t)] = torch.tensor(t)
            real[row, : len(t)] = True
        keep = real & ~torch.isin(tokens, torch.tensor(special, dtype=torch.long))
        x = read(tokens).float()
        weight = keep.float() / keep.sum(1, keepdim=True).clamp_min(1)
        llm.append((x * weight[..., None]).sum(1).cpu().numpy())
        code = sae.encode(x.to(sae.W_dec.dtype)).float()
        codes.append(sparse.csr_matrix((code * weight[..., None]).sum(1).cpu().numpy()))
    return ProbeActivations(
        llm=np.concatenate(llm).astype(np.float32),
        sae=sparse.vstack(codes).tocsr(),
        labels=np.array(labels),
        train=np.array(train),
    )


def binary_task(labels: np.ndarray, rows: np.ndarray, positive: int, rng: np.random.Generator):
    """(row indices, 0/1 targets) of one side (train or test) of the task `positive` vs the rest:
    every positive, and as many negatives drawn evenly from the other classes, shuffled."""
    pos = rows[labels[rows] == positive]
    others = sorted(set(labels[rows].tolist()) - {positive})
    per_class = -(-len(pos) // len(others))  # ceil
    neg = np.concatenate([rng.permutation(rows[labels[rows] == c])[:per_class] for c in others])
    neg = rng.permutation(neg)[: len(pos)]
    chosen = np.concatenate([pos, neg])
    target = np.r_[np.ones(len(pos), dtype=int), np.zeros(len(neg), dtype=int)]
    order = rng.permutation(len(chosen))
    return chosen[order], target[order]


def top_k_columns(x, target: np.ndarray, k: int) -> np.ndarray:
    """The k columns with the largest |mean(positives) - mean(negatives)| (x dense or sparse),
    largest first."""
    pos, neg = x[target == 1], x[target == 0]
    diff = np.abs(np.asarray(pos.mean(0)).ravel() - np.asarray(neg.mean(0)).ravel())
    return np.argsort(-diff, kind="stable")[:k]


def probe_accuracy(train_x, train_y, test_x, test_y) -> float:
    from sklearn.linear_model import LogisticRegression

    probe = LogisticRegression(C=1.0, max_iter=1000)  # L2, scikit-learn's default penalty
    probe.fit(np.asarray(train_x, dtype=np.float32), train_y)
    return float((probe.predict(np.asarray(test_x, dtype=np.float32)) == test_y).mean())


def _dense(x, rows: np.ndarray, cols: np.ndarray | None = None) -> np.ndarray:
    picked = x[rows] if cols is None else x[rows][:, cols]
    return picked.toarray() if sparse.issparse(picked) else np.asarray(picked)


def score_class(acts: ProbeActivations, positive: int, ks: list[int], seed: int) -> dict:
    """The metrics of one binary task: sparse probes on the SAE's top-k latents and on the hooked
    activation's top-k dimensions for each k, the full hooked-activation probe, and the chance
    level (the larger side's share of the test set)."""
    rng = np.random.default_rng([seed, positive])
    rows = np.arange(len(acts.labels))
    train_rows, train_y = binary_task(acts.labels, rows[acts.train], positive, rng)
    test_rows, test_y = binary_task(acts.labels, rows[~acts.train], positive, rng)
    out = {
        "llm_test_accuracy": probe_accuracy(
            acts.llm[train_rows], train_y, acts.llm[test_rows], test_y
        ),
        "test_chance": float(max(test_y.mean(), 1 - test_y.mean())),
    }
    chosen = {}
    for source, x in (("sae", acts.sae), ("llm", acts.llm)):
        ranked = top_k_columns(x[train_rows], train_y, max(ks))
        for k in ks:
            cols = ranked[:k]
            out[f"{source}_top_{k}_test_accuracy"] = probe_accuracy(
                _dense(x, train_rows, cols), train_y, _dense(x, test_rows, cols), test_y
            )
        chosen[source] = ranked[: max(ks)].tolist()
    out["_chosen"] = chosen
    out["_sizes"] = {"train": len(train_rows), "test": len(test_rows)}
    return out
