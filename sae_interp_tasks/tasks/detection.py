"""sae_detection: does the explanation let a scorer tell which held-out windows make the latent
fire?

Same latents, splits and explanations as every latent task of the run (`harness.run_stages`); the
scorer is `scorers/detection.py` on the window-classifier base (docs/methods.md, "Detection"). The
scorer first scores known answers (validity.scorer_check).
"""

from __future__ import annotations

from sae_interp_tasks.harness.classifier_run import (
    CHECKED,
    METRICS,
    classifier_estimate,
    classifier_scores,
)
from sae_interp_tasks.harness.run_stages import LatentRun, ScorerSettings
from sae_interp_tasks.harness.serve import serve_latents
from sae_interp_tasks.harness.task import LatentTask
from sae_interp_tasks.registry import ReportSpec, task_kind
from sae_interp_tasks.scorers.detection import Detection

KIND = "detection"


def score_detection(run: LatentRun):
    return classifier_scores(run, Detection(), KIND)


@task_kind(
    KIND,
    settings=ScorerSettings,
    serve=serve_latents,
    scorer=score_detection,
    estimate=classifier_estimate(Detection()),
    report=ReportSpec(headline="balanced_acc", position=10, checks=CHECKED, delphi="detection"),
)
class SAEDetectionTask(LatentTask):
    """Does the explanation let a scorer tell which held-out windows make the latent fire?"""

    METRICS = METRICS
