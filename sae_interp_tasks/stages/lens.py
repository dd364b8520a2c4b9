"""Reading a latent through the subject model's weights: the logit lens and the embedding's
nearest tokens.

The logit lens of a latent is its decoder direction pushed through the final normalisation's
weight and the unembedding: `logits = (d * g) @ W_U` for a unit decoder row `d` and the final
norm's gain `g` (for a LayerNorm the direction is centred first, as the norm would). This is what
TransformerLens computes when it folds the final norm into `W_U` (`fold_ln=True`, the default of
its `from_pretrained`) and what SAE dashboards show as a latent's promoted and suppressed tokens.
The norm's division by the residual's scale is left out: it is a positive number per position,
which changes no token's rank and no shape statistic (docs/methods.md, "Logit lens").
"""

from __future__ import annotations

import string
from dataclasses import dataclass

import numpy as np
import torch

from sae_interp_tasks.config import StageConfig, option, positive
from sae_interp_tasks.errors import SaeInterpError

# token sets whose enrichment at the top of a latent's logit lens is reported (docs/methods.md)
TOKEN_SETS = ("numbers", "capitalised", "leading_space", "punctuation")
LENS_CLASSES = ("prediction", "suppression", "partition")


@dataclass(frozen=True)
class LensConfig(StageConfig):
    lens_top_k: int = positive(10)  # promoted and suppressed tokens logged per latent
    # excess kurtosis above which a latent's logit distribution is a prediction or suppression
    # feature (by the sign of its skew); at or below it, a partition feature
    lens_kurtosis_min: float = option(3.0, min=0.0)


class WeightLens:
    """The subject model's embedding and unembedding as they read an SAE's decoder directions."""

    def __init__(self, model, sae, decode):
        w_u = getattr(model, "W_U", None)
        if w_u is None or getattr(model, "unembed", None) is None:
            raise SaeInterpError(
                f"the subject model {model.cfg.model_name} has no unembedding (W_U) to read the "
                "logit lens from; run the weights tasks on a language model with an LM head"
            )
        d_model = model.cfg.d_model
        if sae.cfg.d_in != d_model:
            raise SaeInterpError(
                f"the SAE's directions are {sae.cfg.d_in}-wide but the residual stream of "
                f"{model.cfg.model_name} is {d_model}-wide, so no unembedding reads them; the "
                "logit lens needs an SAE at a residual-stream or attention/MLP-output hook"
            )
        self.model, self.sae, self.decode = model, sae, decode
        norm = getattr(model, "ln_final", None)
        self.gain = getattr(norm, "w", None)
        self.centre = str(model.cfg.normalization_type or "").startswith("LN")
        self._vocab_text: list[str] | None = None

    @property
    def d_vocab(self) -> int:
        return int(self.model.W_U.shape[1])

    def directions(self, latents) -> torch.Tensor:
        """The latents' unit decoder rows [n, d_model], float32."""
        rows = self.sae.W_dec[torch.as_tensor(list(latents), dtype=torch.long)].float()
        return rows / rows.norm(dim=-1, keepdim=True).clamp_min(1e-12)

    @torch.no_grad()
    def logits(self, latents) -> torch.Tensor:
        """Each latent's logit-lens weights over the vocabulary [n, d_vocab] (float32, CPU)."""
        d = self.directions(latents).to(self.model.W_U.device)
        if self.centre:
            d = d - d.mean(dim=-1, keepdim=True)
        if self.gain is not None:
            d = d * self.gain.float()
        return (d @ self.model.W_U.float()).cpu()

    @torch.no_grad()
    def neighbours(self, latents, k: int, scale: float) -> list[list[int]]:
        """Per latent, the k vocabulary tokens whose input embeddings lie nearest to the direction
        scaled to `scale` x the mean embedding norm."""
        w_e = self.model.W_E.float()
        radius = scale * float(w_e.norm(dim=-1).mean())
        d = self.directions(latents).to(w_e.device) * radius
        # |e - d|^2 = |e|^2 - 2 e.d + |d|^2; the last term is the same for every token
        dist = (w_e * w_e).sum(-1)[None, :] - 2 * d @ w_e.T
        return torch.topk(-dist, k, dim=-1).indices.cpu().tolist()

    def token_text(self, token: int) -> str:
        return self.decode([int(token)])

    def vocab_text(self) -> list[str]:
        if self._vocab_text is None:
            self._vocab_text = [self.token_text(t) for t in range(self.d_vocab)]
        return self._vocab_text

    def token_sets(self) -> dict[str, np.ndarray]:
        """Membership [d_vocab] (bool) of each of TOKEN_SETS."""
        texts = self.vocab_text()
        punct = set(string.punctuation)
        out = {
            "numbers": [t.strip().isdigit() for t in texts],
            "capitalised": [t.strip()[:1].isupper() for t in texts],
            "leading_space": [t[:1] == " " and t[1:].isalpha() for t in texts],
            "punctuation": [bool(t.strip()) and set(t.strip()) <= punct for t in texts],
        }
        return {name: np.asarray(v, dtype=bool) for name, v in out.items()}


def top_tokens(weights: np.ndarray, k: int, largest: bool = True) -> list[int]:
    """The k tokens of highest (or lowest) weight, in order."""
    order = np.argsort(-weights if largest else weights, kind="stable")
    return [int(t) for t in order[:k]]


def shape_class(skew: float, kurtosis: float, kurtosis_min: float) -> str:
    """Bloom & Lin's reading of a logit-lens distribution: heavy-tailed with a positive skew
    promotes a few tokens (prediction), with a negative skew suppresses them (suppression); a
    light-tailed one moves a large set of tokens against the rest (partition)."""
    if kurtosis > kurtosis_min:
        return "prediction" if skew > 0 else "suppression"
    return "partition"


def enrichment(weights: np.ndarray, sets: dict[str, np.ndarray]) -> dict[str, float]:
    """Per token set, the rank statistic of its tokens' logit-lens weights against the rest's: the
    probability that a member outranks a non-member (Mann-Whitney AUROC; 0.5: no enrichment,
    1: the set holds the top of the lens)."""
    from scipy.stats import rankdata

    ranks = rankdata(weights)
    out = {}
    for name, member in sets.items():
        n1 = int(member.sum())
        n0 = member.size - n1
        if n1 == 0 or n0 == 0:
            out[name] = float("nan")
            continue
        u = ranks[member].sum() - n1 * (n1 + 1) / 2
        out[name] = float(u / (n1 * n0))
    return out
