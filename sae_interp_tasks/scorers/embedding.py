"""Embedding scorer: does the explanation sit closer to the latent's activating windows than to
others?

The explanation is embedded as a query with a sentence-transformers model (the embedder in
`stages/embedder.py`), and each test window by one rule for every window, activating or not: cut
into overlapping spans of `embedding_span` tokens (stride half of that), each span embedded, and the
window's similarity is its best span's (`embedding_span: null` embeds the whole window instead). The
latent's score is the AUROC of that similarity for activating vs non-activating windows, beside the
same with another latent's explanation (the shuffled control). No LLM: cheap and deterministic.

Why spans: a sentence embedding of a whole 32-token window is an average over everything in it, so
an explanation that names the one token a latent fires on ('the token " return"') hardly moves it;
on a span of a few tokens the named token is a large part of what is embedded (docs/methods.md).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from sae_interp_tasks.config import StageConfig, option
from sae_interp_tasks.records import (
    Example,
    ExampleSplit,
    Explanation,
    ScoredLatent,
    WindowJudgement,
)
from sae_interp_tasks.scorers import metrics
from sae_interp_tasks.stages.controls import shuffled_donors
from sae_interp_tasks.stages.embedder import embed

Decode = Callable[[list[int]], str]


@dataclass(frozen=True)
class EmbeddingScoreConfig(StageConfig):
    # tokens per embedded span; null: the whole window
    embedding_span: int | None = option(8, min=2)


def spans(example: Example, decode: Decode, span: int | None) -> list[str]:
    """The texts one window is embedded as: overlapping spans of `span` tokens (stride span // 2,
    the last reaching the window's end), or the whole window."""
    ids = example.tokens.tolist()
    if span is None or len(ids) <= span:
        return [decode(ids)]
    stride = max(1, span // 2)
    starts = list(range(0, len(ids) - span + 1, stride))
    if starts[-1] != len(ids) - span:
        starts.append(len(ids) - span)
    return [decode(ids[s : s + span]) for s in starts]


def _best_span(
    embedder, batch_size: int, span_vecs, owner, n_windows: int, text: str
) -> np.ndarray:
    """Each window's similarity to `text`: the largest cosine over the window's spans."""
    sims = span_vecs @ embed(embedder, [text], batch_size)[0]
    return np.array([sims[owner == w].max() for w in range(n_windows)])


def score_embedding(
    splits: list[ExampleSplit],
    explanations: dict[int, Explanation],
    embedder,
    decode: Decode,
    seed: int,
    batch_size: int = 64,
    shuffled_control: bool = True,
    owned: set[int] | None = None,
    span: int | None = None,
) -> dict[int, ScoredLatent]:
    donor = shuffled_donors([s.latent for s in splits], seed, shuffled_control)
    mine = [s for s in splits if owned is None or s.latent in owned]
    scored = {}
    for split in tqdm(mine, unit="latents", desc="embedding scorer"):
        windows = split.test
        labels = [ex.is_activating for ex in windows]
        texts = [decode(ex.tokens.tolist()) for ex in windows]
        pieces = [spans(ex, decode, span) for ex in windows]
        owner = np.repeat(np.arange(len(windows)), [len(p) for p in pieces])
        doc_vecs = embed(embedder, [p for ps in pieces for p in ps], batch_size)

        similarity = functools.partial(
            _best_span, embedder, batch_size, doc_vecs, owner, len(windows)
        )
        sims = similarity(explanations[split.latent].text)
        values = {"auroc": metrics.auroc(labels, sims.tolist())}
        if split.latent in donor:
            values["auroc_shuffled"] = metrics.auroc(
                labels, similarity(explanations[donor[split.latent]].text).tolist()
            )
        else:
            values["auroc_shuffled"] = metrics.NAN
        judgements = [
            WindowJudgement(label=lab, prediction=None, probability=float(s), decile=ex.decile)
            for lab, s, ex in zip(labels, sims, windows, strict=True)
        ]
        detail = {
            "windows": [
                {
                    "text": t,
                    "max_act": round(ex.max_act, 4),
                    "decile": ex.decile,
                    "label": lab,
                    "similarity": round(float(s), 4),
                }
                for t, ex, lab, s in zip(texts, windows, labels, sims, strict=True)
            ]
        }
        scored[split.latent] = ScoredLatent(
            split.latent, explanations[split.latent].text, judgements, values, detail
        )
    return scored
