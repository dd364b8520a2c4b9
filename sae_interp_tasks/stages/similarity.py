"""An SAE's dictionary against a reference's (or its own): max cosine similarity, one-to-one
matching, and the activations of matched latents (docs/methods.md, "Similarity").

Nothing here holds a width x width matrix: cosines are computed a block of rows at a time and only
each row's `top_k` best candidates are kept; the one-to-one matching runs on that sparse candidate
graph (scipy's `min_weight_full_bipartite_matching`), with one "unmatched" edge per row so a full
matching always exists.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch

from sae_interp_tasks.config import StageConfig, option, positive
from sae_interp_tasks.errors import SaeInterpError

REFERENCE_KEYS = ("release", "sae_id", "path", "hookpoint", "control", "control_k")
MCS_LEVELS = (0.7, 0.9)  # the fractions of latents with a max cosine above these are reported


@dataclass(frozen=True)
class SimilarityConfig(StageConfig):
    # the reference SAE, named as --model_args name an SAE: "release=R,sae_id=I", "path=DIR",
    # "control=random" (a random dictionary of this SAE's shape), "demo" (the embedded demo SAE);
    # null: this SAE against itself
    reference: str | None = None
    reference_other_hook: bool = False  # allow a reference at another hook (layer overlap)
    similarity_top_k: int = positive(8)  # candidates kept per latent for the one-to-one matching
    match_threshold: float = option(0.7, min=-1.0, max=1.0)  # a matched pair counts above this
    correlation_tokens: int = option(16384, min=0)  # tokens for matched latents' correlation
    similarity_block: int = positive(1024)  # rows of cosines computed at once
    # feature splitting (a reference narrower than the SAE at the same hook): a latent takes over
    # its nearest reference latent above this decoder cosine when it fires on at least
    # split_min_share of the positions that latent fires on (over correlation_tokens tokens)
    split_threshold: float = option(0.5, min=-1.0, max=1.0)
    split_min_share: float = option(0.1, min=0.0, max=1.0)
    # explain matched partners with the run's explainer and compare the two explanations (it
    # costs an activation pass over the reference's partners and their explanations)
    semantic_overlap: bool = False
    memory_gb: float = option(8.0, above=0.0)  # the budget for both dictionaries and one block

    def reference_source(self) -> dict | None:
        """The reference's --model_args as a dict; a key --model_args do not take is an error."""
        if not self.reference:
            return None
        if str(self.reference).strip() == "demo":
            return {}  # the embedded demo SAE, as --model sae names it with no --model_args
        out = {}
        for part in str(self.reference).split(","):
            key, sep, value = part.partition("=")
            key = key.strip()
            if not sep or key not in REFERENCE_KEYS:
                raise SaeInterpError(
                    f"reference {self.reference!r}: {part.strip()!r} is not KEY=VALUE with KEY one "
                    f"of {', '.join(REFERENCE_KEYS)} (e.g. reference: "
                    "'release=R,sae_id=I' or 'path=DIR')"
                )
            out[key] = value.strip()
        return out


def unit_rows(weights: torch.Tensor) -> torch.Tensor:
    w = weights.detach().float()
    return w / w.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def check_memory(n_a: int, n_b: int, d: int, cfg: SimilarityConfig) -> None:
    """Both dictionaries' unit rows (decoder and encoder) and one block of cosines must fit."""
    need = 4 * (2 * d * (n_a + n_b) + cfg.similarity_block * n_b) / 2**30
    if need > cfg.memory_gb:
        raise SaeInterpError(
            f"comparing {n_a:,} with {n_b:,} latents needs about {need:.1f} GB, more than "
            f"memory_gb={cfg.memory_gb}; raise memory_gb or lower similarity_block"
        )


@torch.no_grad()
def top_cosines(
    a: torch.Tensor, b: torch.Tensor, k: int, block: int, exclude_self: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """For each unit row of `a`, its `k` largest cosines with the unit rows of `b` and their
    indices ([n_a, k] each, best first); `exclude_self` (a against itself) leaves out the row's own
    column, as SAEBench's per-feature max cosine does."""
    k = min(k, b.shape[0] - (1 if exclude_self else 0))
    values = np.empty((a.shape[0], k), dtype=np.float32)
    indices = np.empty((a.shape[0], k), dtype=np.int64)
    for start in range(0, a.shape[0], block):
        sims = a[start : start + block] @ b.T
        if exclude_self:
            rows = torch.arange(sims.shape[0], device=sims.device)
            sims[rows, rows + start] = float("-inf")
        top = torch.topk(sims, k, dim=-1)
        values[start : start + block] = top.values.cpu().numpy()
        indices[start : start + block] = top.indices.cpu().numpy()
    return values, indices


def one_to_one(values: np.ndarray, indices: np.ndarray, n_b: int) -> np.ndarray:
    """The one-to-one matching of a's rows to b's columns that maximises the summed cosine over the
    candidate edges (values/indices from top_cosines); -1 where a row is better left unmatched
    (every candidate's cosine at or below 0, or its candidates taken)."""
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import min_weight_full_bipartite_matching

    n_a, k = values.shape
    rows = np.repeat(np.arange(n_a), k)
    cols = indices.ravel()
    cost = 2.0 - values.ravel().astype(np.float64)  # positive: explicit zeros are not edges
    # one private "unmatched" column per row, as costly as a cosine of 0
    rows = np.r_[rows, np.arange(n_a)]
    cols = np.r_[cols, n_b + np.arange(n_a)]
    cost = np.r_[cost, np.full(n_a, 2.0)]
    graph = csr_matrix((cost, (rows, cols)), shape=(n_a, n_b + n_a))
    _, partner = min_weight_full_bipartite_matching(graph)
    partner = partner.astype(np.int64)
    partner[partner >= n_b] = -1
    return partner


def random_unit_rows(n: int, d: int, seed: int) -> torch.Tensor:
    """The chance level's random dictionary: n unit rows, from a stream of its own (never the
    directions another seeded stage, e.g. control=random, draws with the same seed)."""
    stream = int.from_bytes(hashlib.sha256(f"{seed}:random-reference".encode()).digest()[:8], "big")
    gen = torch.Generator().manual_seed(stream)
    return unit_rows(torch.randn(n, d, generator=gen))


@dataclass(frozen=True)
class Comparison:
    """Per latent of the SAE (arrays over its width): max cosine of its decoder and encoder rows to
    the reference's, the reference latent holding the max, its one-to-one partner (-1: none) and
    their cosine; and the chance level's max cosines (to random rows of the reference's shape)."""

    mcs: np.ndarray
    mcs_encoder: np.ndarray
    nearest: np.ndarray
    partner: np.ndarray
    partner_cos: np.ndarray
    mcs_random: np.ndarray
    reference_width: int
    against_itself: bool = False

    def summary(self, threshold: float) -> dict[str, float]:
        """Dictionary-wide numbers; against itself a dictionary is not matched (NaN)."""
        matched = (self.partner >= 0) & (self.partner_cos > threshold)
        out = {
            "dict_mean_mcs": float(self.mcs.mean()),
            "dict_mean_mcs_encoder": float(self.mcs_encoder.mean()),
            "dict_mean_mcs_random": float(self.mcs_random.mean()),
            "dict_matched_frac": float("nan") if self.against_itself else float(matched.mean()),
        }
        for level in MCS_LEVELS:
            out[f"dict_frac_mcs_{int(level * 10):02d}"] = float((self.mcs > level).mean())
            out[f"dict_frac_mcs_{int(level * 10):02d}_random"] = float(
                (self.mcs_random > level).mean()
            )
        return out


def compare(
    dec_a: torch.Tensor,
    enc_a: torch.Tensor,
    dec_b: torch.Tensor | None,
    enc_b: torch.Tensor | None,
    cfg: SimilarityConfig,
    seed: int = 0,
) -> Comparison:
    """dec_*/enc_*: [width, d] decoder rows and encoder columns (as rows). Without b, the SAE
    against itself (each latent's nearest other latent; no matching)."""
    own = dec_b is None
    d = dec_a.shape[1]
    n_b = dec_a.shape[0] if own else dec_b.shape[0]
    check_memory(dec_a.shape[0], n_b, d, cfg)
    a, ea = unit_rows(dec_a), unit_rows(enc_a)
    b, eb = (a, ea) if own else (unit_rows(dec_b), unit_rows(enc_b))
    k, block = cfg.similarity_top_k, cfg.similarity_block
    values, indices = top_cosines(a, b, k, block, exclude_self=own)
    enc_values, _ = top_cosines(ea, eb, 1, block, exclude_self=own)
    random_b = random_unit_rows(n_b, d, seed).to(a.device)
    rand_values, _ = top_cosines(a, random_b, 1, block)
    if own:
        partner = np.full(a.shape[0], -1, dtype=np.int64)
        partner_cos = np.full(a.shape[0], np.nan, dtype=np.float32)
    else:
        partner = one_to_one(values, indices, n_b)
        hit = indices == partner[:, None]
        partner_cos = np.where(hit.any(axis=1), (values * hit).sum(axis=1), np.nan)
    return Comparison(
        mcs=values[:, 0],
        mcs_encoder=enc_values[:, 0],
        nearest=indices[:, 0],
        partner=partner,
        partner_cos=partner_cos.astype(np.float32),
        mcs_random=rand_values[:, 0],
        reference_width=n_b,
        against_itself=own,
    )
