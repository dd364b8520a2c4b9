"""Agreement between self-explanations and auto-interp explanations of the same latents.

  1. retrieval: cosine similarity between every self-explanation and every auto-interp
     explanation (sentence embeddings); per latent the AUROC of its matched pair against the
     mismatched ones, and whether the match ranks first (top-1; chance 1/N);
  2. judge (optional): an LLM says whether the two explanations describe the same thing.
(The third measure, each self-explanation's own detection score, is sae_detection's scorer.)
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from sae_interp_tasks.clients import Prompt
from sae_interp_tasks.config import StageConfig
from sae_interp_tasks.scorers import metrics
from sae_interp_tasks.stages.embedder import embed


@dataclass(frozen=True)
class AgreementConfig(StageConfig):
    judge: bool = (
        False  # ask the scorer LLM whether self- and auto-explanation describe the same thing
    )
    selfexplain_detection: bool = True  # score the self-explanation with sae_detection's scorer


def retrieval_agreement(
    self_text: list[str], auto_text: list[str], embedder, batch_size: int = 64
) -> list[dict]:
    """Per latent (in order): retrieval AUROC, top-1 match and its chance, matched similarity."""
    sim = embed(embedder, self_text, batch_size) @ embed(embedder, auto_text, batch_size).T
    n = len(self_text)
    out = []
    for i in range(n):
        labels = [j == i for j in range(n)]
        out.append(
            {
                "retrieval_auroc": metrics.auroc(labels, sim[i].tolist()) if n > 1 else metrics.NAN,
                "top1_match": float(int(np.argmax(sim[i])) == i) if n > 1 else metrics.NAN,
                "top1_chance": 1.0 / n if n > 1 else metrics.NAN,
                "matched_similarity": float(sim[i, i]),
            }
        )
    return out


_YES = re.compile(r"\b(yes|no)\b", re.IGNORECASE)


def judge_agreement(client, pairs: list[tuple[str, str]]) -> list[float]:
    """1.0 (same thing), 0.0 (not), NaN (no yes/no in the answer: left out, never scored)."""
    prompts = [
        Prompt(
            messages=(
                (
                    "system",
                    "You compare two descriptions of a feature of a language model. Answer "
                    "'yes' if they describe the same thing, else 'no'. One word.",
                ),
                ("user", f"Description A: {a}\nDescription B: {b}\nSame thing?"),
            ),
            max_tokens=4,
        )
        for a, b in pairs
    ]
    answers = client.generate(prompts, desc="judge")
    out = []
    for ans in answers:
        match = _YES.search(ans.text or "")
        out.append(metrics.NAN if match is None else float(match.group(1).lower() == "yes"))
    return out


def agreement_metrics(
    latents: list[int],
    self_text: dict[int, str],
    auto_text: dict[int, str],
    embedder,
    batch_size: int = 64,
    judge_client=None,
) -> dict[int, dict]:
    """Per latent: retrieval agreement, and the judge's verdict when a judge client is given."""
    retrieval = retrieval_agreement(
        [self_text[lat] for lat in latents],
        [auto_text[lat] for lat in latents],
        embedder,
        batch_size,
    )
    per = {lat: dict(values) for lat, values in zip(latents, retrieval, strict=True)}
    if judge_client is not None:
        votes = judge_agreement(judge_client, [(self_text[lat], auto_text[lat]) for lat in latents])
        for lat, vote in zip(latents, votes, strict=True):
            per[lat]["judge_agreement"] = vote
    return per
