"""Surprisal (delphi's): does reading the explanation make a base language model less surprised by
the windows where the latent fires than by those where it does not?

A few-shot prefix of descriptions each followed by sentences that fit it ends in "Description:
<explanation>" (or, the baseline, a neutral description) and "Sentences:"; the reader gives the
log-probability of every token of each test window after both (`LLMClient.read_texts`: in process
with the prefix's KV cache, or a completions endpoint that echoes prompt log-probabilities). A
window's statistic is its loss reduction, log P(token | explanation) - log P(token | neutral),
the largest over its tokens (`surprisal_statistic: max`, the default: on the known-answer suite it
recovers planted meanings that the mean over a window dilutes; docs/methods.md) or their mean; the
latent's score is the AUROC of that statistic, activating vs non-activating windows, beside the same
with another latent's explanation (the shuffled control). Both kinds of window are read by the same
rule, so no difference of length or form can score.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from sae_interp_tasks.aggregations import nanmean, total
from sae_interp_tasks.clients import ClientConfig, LLMClient
from sae_interp_tasks.config import StageConfig, option
from sae_interp_tasks.records import ExampleSplit, Explanation, ScoredLatent, WindowJudgement
from sae_interp_tasks.scorers import metrics
from sae_interp_tasks.stages.controls import shuffled_donors

Decode = Callable[[list[int]], str]
NEUTRAL = "various unrelated text"

METRICS = {
    "auroc": (nanmean, True),
    "auroc_shuffled": (nanmean, False),
    "loss_reduction": (nanmean, True),  # mean statistic of activating minus non-activating windows
    "answered_frac": (nanmean, True),
    "parse_failures": (total, False),
}

# our own few-shot: descriptions, each with sentences in which it is plain to see
FEW_SHOT = (
    (
        "the word river and other flowing water",
        (
            "We walked along the river until the stream met the sea.",
            "The creek flooded and the river rose over its banks.",
        ),
    ),
    (
        "numbers in arithmetic",
        ("Add 12 and 30 to get 42, then divide by 6.", "x = 3 * 7 + 1  # twenty-two"),
    ),
    (
        "Python function definitions",
        ("def load(path):\n    return open(path).read()", "    def __init__(self, name):"),
    ),
)


@dataclass(frozen=True)
class ReaderConfig(StageConfig):
    """The base language model that reads text and gives its log-probabilities: in process (hf) or
    an OpenAI-compatible completions endpoint that echoes prompt logprobs (vLLM). sae_surprisal and
    sae_intervention's surprisal scorer use it."""

    surprisal_scorer: str = option("hf", choices=("hf", "openai", "oracle"))
    surprisal_model: str = "HuggingFaceTB/SmolLM2-135M-Instruct"
    surprisal_base_url: str | None = None
    surprisal_api_key_env: str = "OPENAI_API_KEY"

    def surprisal_client(self, device: str = "cpu", max_concurrency: int = 8) -> ClientConfig:
        return ClientConfig(
            kind=self.surprisal_scorer,
            model=self.surprisal_model,
            base_url=self.surprisal_base_url,
            api_key_env=self.surprisal_api_key_env,
            max_concurrency=max_concurrency,
            device=device,
        )


@dataclass(frozen=True)
class SurprisalConfig(StageConfig):
    surprisal_statistic: str = option("max", choices=("max", "mean"))  # per window, over its tokens


def surprisal_prefix(description: str) -> str:
    shots = "".join(
        f"Description: {about}\nSentences:\n" + "".join(f"{s}\n" for s in sentences) + "\n"
        for about, sentences in FEW_SHOT
    )
    return (
        "Each description of a feature of text is followed by sentences in which the feature "
        "appears.\n\n" + shots + f"Description: {description}\nSentences:\n"
    )


def window_statistic(explained: list[float], neutral: list[float], how: str) -> float:
    """The loss reduction of one window's tokens, averaged or at its largest; NaN when
    unreadable."""
    if not explained or len(explained) != len(neutral):
        return math.nan
    gain = np.asarray(explained) - np.asarray(neutral)
    return float(gain.max() if how == "max" else gain.mean())


class SurprisalReader:
    """Reads windows after an explanation and after the neutral description with one client."""

    def __init__(self, client: LLMClient, cfg: SurprisalConfig, decode: Decode):
        self.client, self.cfg, self.decode = client, cfg, decode

    def statistics(self, explanation: str, texts: list[str], desc: str) -> list[float]:
        explained = self.client.read_texts(surprisal_prefix(explanation), texts, desc=desc)
        neutral = self.client.read_texts(surprisal_prefix(NEUTRAL), texts, desc=f"{desc} (neutral)")
        return [
            math.nan
            if e is None or n is None
            else window_statistic(e.logprobs, n.logprobs, self.cfg.surprisal_statistic)
            for e, n in zip(explained, neutral, strict=True)
        ]


def score_surprisal(
    splits: list[ExampleSplit],
    explanations: dict[int, Explanation],
    reader: SurprisalReader,
    seed: int,
    shuffled_control: bool = True,
    owned: set[int] | None = None,
    desc: str = "surprisal",
) -> dict[int, ScoredLatent]:
    donor = shuffled_donors([s.latent for s in splits], seed, shuffled_control)
    out = {}
    for split in (s for s in splits if owned is None or s.latent in owned):
        windows = split.test
        labels = [ex.is_activating for ex in windows]
        texts = [reader.decode(ex.tokens.tolist()) for ex in windows]
        stats = reader.statistics(explanations[split.latent].text, texts, desc)
        values = surprisal_metrics(labels, stats)
        if split.latent in donor:
            other = reader.statistics(
                explanations[donor[split.latent]].text, texts, f"{desc} (shuffled)"
            )
            values["auroc_shuffled"] = surprisal_metrics(labels, other)["auroc"]
        else:
            values["auroc_shuffled"] = math.nan
        judgements = [
            WindowJudgement(
                label=lab,
                prediction=None,
                probability=None if math.isnan(s) else s,
                decile=ex.decile,
            )
            for lab, s, ex in zip(labels, stats, windows, strict=True)
        ]
        detail = {
            "statistic": reader.cfg.surprisal_statistic,
            "windows": [
                {
                    "text": t,
                    "decile": ex.decile,
                    "label": lab,
                    "loss_reduction": None if math.isnan(s) else round(s, 4),
                }
                for t, ex, lab, s in zip(texts, windows, labels, stats, strict=True)
            ],
        }
        out[split.latent] = ScoredLatent(
            split.latent, explanations[split.latent].text, judgements, values, detail
        )
    return out


def surprisal_metrics(labels: list[bool], stats: list[float]) -> dict[str, float]:
    read = [(lab, s) for lab, s in zip(labels, stats, strict=True) if not math.isnan(s)]
    on = [s for lab, s in read if lab]
    off = [s for lab, s in read if not lab]
    return {
        "auroc": metrics.auroc([lab for lab, _ in read], [s for _, s in read]),
        "loss_reduction": float(np.mean(on) - np.mean(off)) if on and off else math.nan,
        "answered_frac": len(read) / max(len(stats), 1),
        "parse_failures": float(len(stats) - len(read)),
    }
