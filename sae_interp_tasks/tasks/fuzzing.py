"""sae_fuzzing: does the explanation let a scorer tell true activating-token markings from random
ones?

The scorer is `scorers/fuzzing.py` on the window-classifier base (docs/methods.md, "Fuzzing"); it
first scores known answers, marked the same way (validity.scorer_check).
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
from sae_interp_tasks.scorers.fuzzing import Fuzzing

KIND = "fuzzing"


def score_fuzzing(run: LatentRun):
    return classifier_scores(run, Fuzzing(), KIND)


@task_kind(
    KIND,
    settings=ScorerSettings,
    serve=serve_latents,
    scorer=score_fuzzing,
    estimate=classifier_estimate(Fuzzing()),
    report=ReportSpec(headline="balanced_acc", position=20, checks=CHECKED, delphi="fuzz"),
)
class SAEFuzzingTask(LatentTask):
    """Does the explanation let a scorer tell true activating-token markings from random ones?"""

    METRICS = METRICS
