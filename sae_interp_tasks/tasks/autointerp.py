"""The auto-interp tasks: sae_detection, sae_fuzzing, sae_embedding (group sae_interp).

All three score the same latents with the same explanations (shared through `memo`); each
kind's scorer here only wires the run's shared stages into its scoring stage.
"""

from __future__ import annotations

from dataclasses import dataclass, field


from sae_interp_tasks import memo
from sae_interp_tasks.aggregations import nanmean, total
from sae_interp_tasks.memo import LatentRun, LatentSettings
from sae_interp_tasks.registry import task_kind
from sae_interp_tasks.scorers import classifier
from sae_interp_tasks.scorers.classifier import ScorerConfig
from sae_interp_tasks.scorers.embedding import score_embedding
from sae_interp_tasks.tasks.base import LatentTask


@dataclass(frozen=True)
class ClassifierSettings(LatentSettings):
    """Detection and fuzzing: the shared stages plus an LLM scorer."""

    scorer: ScorerConfig = field(default_factory=ScorerConfig)


def classify(run: LatentRun, method: str):
    s = run.settings
    client = memo.client(run.backend, s.scorer.client_config(run.backend.device))
    return classifier.score(method, [run.splits[lat] for lat in run.latents], run.explanations, s.scorer, client,
                            run.backend.tok_decode, run.seed, s.explainer.highlight_threshold, set(run.owned))


def score_detection(run: LatentRun):
    return classify(run, "detection")


def score_fuzzing(run: LatentRun):
    return classify(run, "fuzzing")


def score_by_embedding(run: LatentRun):
    s = run.settings
    return score_embedding([run.splits[lat] for lat in run.latents], run.explanations,
                           memo.embedder(run.backend, s.embedding), run.backend.tok_decode, run.seed,
                           s.embedding.embedding_batch_size, owned=set(run.owned))


CLASSIFIER_METRICS = {
    "balanced_acc": (nanmean, True),
    "f1": (nanmean, True),
    "precision": (nanmean, True),
    "recall": (nanmean, True),
    "auroc": (nanmean, True),
    "balanced_acc_shuffled": (nanmean, False),
    "auroc_shuffled": (nanmean, False),
    "answered_frac": (nanmean, True),
    "parse_failures": (total, False),
    **{f"recall_decile{d}": (nanmean, True) for d in range(1, 11)},
}


@task_kind("detection", settings=ClassifierSettings, scorer=score_detection, headline="balanced_acc")
class SAEDetectionTask(LatentTask):
    """Does the explanation let a scorer tell which held-out windows make the latent fire?"""

    METRICS = CLASSIFIER_METRICS


@task_kind("fuzzing", settings=ClassifierSettings, scorer=score_fuzzing, headline="balanced_acc")
class SAEFuzzingTask(LatentTask):
    """Does the explanation let a scorer tell true activating-token markings from random ones?"""

    METRICS = CLASSIFIER_METRICS


@task_kind("embedding", settings=LatentSettings, scorer=score_by_embedding, headline="auroc")
class SAEEmbeddingTask(LatentTask):
    """AUROC of cosine(explanation, window) for activating vs non-activating windows."""

    METRICS = {"auroc": (nanmean, True), "auroc_shuffled": (nanmean, False)}
