"""sae_detection: does the explanation let a scorer tell which held-out windows make the latent fire?

Same latents, splits and explanations as every latent task of the run (`harness.memo`); the scorer
is `scorers/detection.py` on the window-classifier base (docs/methods.md, "Detection").
"""

from __future__ import annotations

from sae_interp_tasks.harness import memo
from sae_interp_tasks.harness.memo import LatentRun, ScorerSettings
from sae_interp_tasks.harness.serve import serve_latents
from sae_interp_tasks.harness.task import LatentTask
from sae_interp_tasks.registry import Report, task_kind
from sae_interp_tasks.scorers import classifier
from sae_interp_tasks.scorers.detection import Detection

KIND = "detection"


def score_detection(run: LatentRun):
    return classify(run, Detection(), KIND)


def classify(run: LatentRun, scorer: classifier.WindowClassifier, stream: str, settings: ScorerSettings | None = None,
             explanations: dict | None = None):
    """A window classifier on the run's owned latents (its settings', or `settings`); `explanations`
    defaults to the run's auto-interp explanations."""
    s = settings or run.settings
    return scorer.score([run.splits[lat] for lat in run.latents], explanations or run.explanations, s.scorer,
                        memo.scorer_client(run.context, s.scorer), run.decode, run.seed, stream,
                        s.explainer.highlight_threshold, set(run.owned))


@task_kind(KIND, settings=ScorerSettings, serve=serve_latents, scorer=score_detection,
           report=Report(headline="balanced_acc", position=10))
class SAEDetectionTask(LatentTask):
    """Does the explanation let a scorer tell which held-out windows make the latent fire?"""

    METRICS = classifier.METRICS
