"""Detection: the scorer sees plain held-out windows and says for each whether the latent fires
anywhere in it, judging only by the explanation (docs/methods.md, "Detection")."""

from __future__ import annotations

from sae_interp_tasks.scorers.classifier import WindowClassifier


class Detection(WindowClassifier):
    rules = (
        "decide for each example whether the feature fires on any of its tokens, judging only "
        "by the explanation."
    )
