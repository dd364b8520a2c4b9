"""Embedding scorer: does the explanation sit closer to the latent's activating windows than to others?

The explanation is embedded as a query and each test window as a document with a
sentence-transformers model (the embedder in `stages/shared.py`); the latent's score is the AUROC of
cosine similarity for activating vs non-activating windows, beside the same with another latent's
explanation (the shuffled control). No LLM: cheap and deterministic.
"""

from __future__ import annotations

from collections.abc import Callable

from tqdm.auto import tqdm

from sae_interp_tasks.records import ExampleSplit, Explanation, ScoredLatent, WindowJudgement
from sae_interp_tasks.scorers import metrics
from sae_interp_tasks.stages.shared import embed, shuffled_donors

Decode = Callable[[list[int]], str]


def score_embedding(splits: list[ExampleSplit], explanations: dict[int, Explanation], embedder, decode: Decode,
                    seed: int, batch_size: int = 64, shuffled_control: bool = True,
                    owned: set[int] | None = None) -> dict[int, ScoredLatent]:
    donor = shuffled_donors([s.latent for s in splits], seed, shuffled_control)
    mine = [s for s in splits if owned is None or s.latent in owned]
    scored = {}
    for split in tqdm(mine, unit="latents", desc="embedding scorer"):
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
        scored[split.latent] = ScoredLatent(split.latent, explanations[split.latent].text, judgements, values, detail)
    return scored
