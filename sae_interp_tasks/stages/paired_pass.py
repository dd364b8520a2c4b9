"""One pass over the same tokens through two SAEs at the same hook: the correlation of matched
latents' activations, and feature splitting (docs/methods.md, "Similarity").

Feature splitting reads a reference narrower than the SAE: a latent of the SAE is a *child* of the
reference latent its decoder row lies nearest to when their cosine is above `split_threshold` and
it fires on at least `split_min_share` of the positions where that reference latent fires (over
the pass's tokens). A reference latent with two or more children has been split. Every position
the parent fires on counts, not only its strongest: a parent with two sub-meanings often has all
of its top positions in the stronger one, which would hide the very split looked for. Both
statistics stream: nothing of size tokens x width is kept past one batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch


@dataclass
class _Sums:
    """Running sums for the Pearson correlation of pairs of activations."""

    n: int
    values: torch.Tensor = field(init=False)  # [5, n]: x, y, xx, yy, xy
    count: int = 0

    def __post_init__(self):
        self.values = torch.zeros(5, self.n, dtype=torch.float64)

    def add(self, x: torch.Tensor, y: torch.Tensor) -> None:
        x, y = x.double(), y.double()
        self.values += torch.stack(
            [x.sum(0), y.sum(0), (x * x).sum(0), (y * y).sum(0), (x * y).sum(0)]
        )
        self.count += x.shape[0]

    def correlation(self) -> list[float]:
        if self.count == 0:
            return [float("nan")] * self.n
        sx, sy, sxx, syy, sxy = self.values / self.count
        cov = sxy - sx * sy
        var = (sxx - sx**2) * (syy - sy**2)
        return torch.where(var > 0, cov / var.clamp_min(1e-30).sqrt(), torch.nan).tolist()


class _CoFiring:
    """For each candidate child, how often its parent (a reference latent) fires, and how often
    both fire at the same position."""

    def __init__(self, children: np.ndarray, parents: np.ndarray):
        self.children = torch.as_tensor(children, dtype=torch.long)
        self.parents = torch.as_tensor(parents, dtype=torch.long)
        self.parent_fires = torch.zeros(len(self.children), dtype=torch.long)
        self.both_fire = torch.zeros(len(self.children), dtype=torch.long)

    def add(self, ref_acts: torch.Tensor, sae_acts: torch.Tensor) -> None:
        parent_on = ref_acts[:, self.parents] > 0
        self.parent_fires += parent_on.sum(0)
        self.both_fire += (parent_on & (sae_acts[:, self.children] > 0)).sum(0)

    def shares(self) -> np.ndarray:
        """Per child: the share of its parent's firing positions at which it fires too; NaN where
        the parent never fired."""
        n = self.parent_fires.double()
        return torch.where(n > 0, self.both_fire / n.clamp_min(1), torch.nan).numpy()


@dataclass(frozen=True)
class PairedResult:
    correlations: dict[int, float]  # latent of the SAE -> correlation with its partner
    split_share: dict[int, float]  # candidate child -> share of its parent's firing positions


@torch.no_grad()
def paired_pass(
    contexts: torch.Tensor,
    read,
    sae_a,
    sae_b,
    pairs: list[tuple[int, int]],
    children: list[tuple[int, int]],
    n_tokens: int,
    batch_size: int,
) -> PairedResult:
    """Over the first `n_tokens` tokens of `contexts` (`read(tokens)` gives the hooked activation):
    the Pearson correlation of each (latent of sae_a, latent of sae_b) in `pairs`, and for each
    candidate (child of sae_a, parent of sae_b) in `children` the share of the parent's firing
    positions where the child fires too."""
    if (not pairs and not children) or n_tokens <= 0:
        return PairedResult({}, {})
    ia = torch.tensor([p[0] for p in pairs], dtype=torch.long)
    ib = torch.tensor([p[1] for p in pairs], dtype=torch.long)
    sums = _Sums(len(pairs))
    cofiring = (
        _CoFiring(np.array([c[0] for c in children]), np.array([c[1] for c in children]))
        if children
        else None
    )
    n_ctx = max(1, min(len(contexts), -(-n_tokens // contexts.shape[1])))
    for start in range(0, n_ctx, batch_size):
        acts = read(contexts[start : min(start + batch_size, n_ctx)].long())
        flat = acts.reshape(-1, acts.shape[-1])
        x = sae_a.encode(flat.to(sae_a.W_dec.dtype))
        y = sae_b.encode(flat.to(sae_b.W_dec.dtype))
        if pairs:
            sums.add(x[:, ia], y[:, ib])
        if cofiring is not None:
            cofiring.add(y, x)
    correlations = (
        dict(zip((p[0] for p in pairs), sums.correlation(), strict=True)) if pairs else {}
    )
    shares = (
        dict(zip((c[0] for c in children), cofiring.shares().tolist(), strict=True))
        if cofiring
        else {}
    )
    return PairedResult(correlations, shares)


def split_candidates(
    mcs: np.ndarray, nearest: np.ndarray, threshold: float
) -> list[tuple[int, int]]:
    """(latent, nearest reference latent) for every latent of the SAE whose decoder row lies above
    `threshold` cosine to its nearest reference row (mcs, nearest: per latent of the SAE)."""
    return [(int(lat), int(nearest[lat])) for lat in np.flatnonzero(mcs > threshold)]


def splitting_summary(
    candidates: list[tuple[int, int]], shares: dict[int, float], min_share: float, n_reference: int
) -> tuple[dict[int, int], dict[str, float]]:
    """Children (candidates firing on at least `min_share` of their parent's positions) and,
    per parent, how many: ({child: its parent's number of children}, dictionary-wide numbers over
    the reference's latents)."""
    per_parent: dict[int, list[int]] = {}
    for child, parent in candidates:
        share = shares.get(child, float("nan"))
        if share == share and share >= min_share:
            per_parent.setdefault(parent, []).append(child)
    counts = np.array([len(v) for v in per_parent.values()], dtype=float)
    summary = {
        "dict_split_frac": float((counts >= 2).sum() / max(n_reference, 1)),
        "dict_taken_over_frac": float(len(counts) / max(n_reference, 1)),
        "dict_children_mean": float(counts.mean()) if len(counts) else float("nan"),
    }
    siblings = {child: len(kids) for kids in per_parent.values() for child in kids}
    return siblings, summary
