"""Simulation (OpenAI's automated-interpretability, "all at once"): can a model that reads only the
explanation predict, token by token, how strongly the latent fires?

`logprobs` mode: one prompt per test window, after a fixed few-shot prefix: the explanation, then
the window token by token, each token followed by an activation slot holding the word "unknown".
One teacher-forced read (`LLMClient.read_texts`: in process, or a completions endpoint that echoes
prompt log-probabilities) gives at every slot the log-probabilities of the values "0".."10" as the
next token; renormalised over the values, their mean is the slot's expected activation. A tokenizer
that spells "10" as two tokens gets a 0..9 scale (the prompt says so; a correlation does not care).
`json` mode, for chat APIs that return no prompt log-probabilities: the model writes the window's
activations as a JSON list, and those are the predictions. `auto` (the default) reads
log-probabilities and turns to `json`, with a warning, once an endpoint shows it returns none.

Score: the Pearson correlation between true activations (scaled to the scale's top by the latent's
largest) and predicted ones over all of the latent's test windows concatenated, activating and
non-activating (OpenAI's `ev_correlation_score`); per decile, the same over that decile's windows
and the non-activating ones; and the same with another latent's explanation (the shuffled control).
A window whose slots cannot be read is a parse failure: counted, left out, never scored.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from sae_interp_tasks.aggregations import nanmean, total
from sae_interp_tasks.clients import LLMClient, Prompt
from sae_interp_tasks.config import StageConfig, option, positive
from sae_interp_tasks.errors import SaeInterpError
from sae_interp_tasks.records import Example, ExampleSplit, Explanation, ScoredLatent
from sae_interp_tasks.stages.controls import shuffled_donors

log = logging.getLogger(__name__)
Decode = Callable[[list[int]], str]
FILLER = "unknown"
VALUES = tuple(str(v) for v in range(11))

METRICS = {
    "correlation": (nanmean, True),
    "correlation_shuffled": (nanmean, False),
    "answered_frac": (nanmean, True),
    "parse_failures": (total, False),
    **{f"correlation_decile{d}": (nanmean, True) for d in range(1, 11)},
}


@dataclass(frozen=True)
class SimulationConfig(StageConfig):
    # logprobs: expected values from the value tokens' log-probabilities (in process, or a
    # completions endpoint that echoes prompt logprobs, e.g. vLLM); json: the model writes the
    # values (chat APIs); auto: logprobs, and json once an endpoint shows it returns no prompt
    # logprobs
    simulation_mode: str = option("auto", choices=("auto", "logprobs", "json"))
    simulation_max_tokens: int = positive(256)  # json mode: the answer's length


# our own few-shot texts: a description and tokens with how strongly a feature of that description
# fires
FEW_SHOT = (
    (
        "years and dates",
        [
            ("The", 0),
            (" war", 0),
            (" ended", 0),
            (" in", 1),
            (" 1918", 10),
            (",", 0),
            (" and", 0),
            (" by", 0),
            (" 1920", 9),
            (" the", 0),
            (" treaty", 0),
            (" held", 0),
        ],
    ),
    (
        "the keyword return in Python code",
        [
            ("    ", 0),
            ("if", 0),
            (" x", 0),
            (":", 0),
            ("\n", 0),
            ("        ", 0),
            ("return", 10),
            (" x", 1),
            (" +", 0),
            (" 1", 0),
            ("\n", 0),
            ("    ", 0),
            ("return", 9),
            (" None", 1),
        ],
    ),
)


def _cell(token: str) -> str:
    return token.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t")


def _table(explanation: str, tokens: list[str], values: list[str] | None) -> tuple[str, list[int]]:
    """A description and its token table; the character offsets of the value slots."""
    text = f"Description: {explanation}\nTokens:\n"
    slots = []
    for i, token in enumerate(tokens):
        text += f"{_cell(token)}\t"
        slots.append(len(text))
        text += (values[i] if values else FILLER) + "\n"
    return text + "\n", slots


def prefix(top: int) -> str:
    """The shared start of every simulation prompt: the task, then the few-shot tables."""
    head = (
        "A feature of a language model fires on some tokens of a text. Given a description of the "
        "feature, "
        "each line gives one token of a text, a tab, and how strongly the feature fires on that "
        "token, from 0 "
        f"(not at all) to {top} (strongest).\n\n"
    )
    shots = "".join(
        _table(about, [t for t, _ in rows], [str(min(v, top)) for _, v in rows])[0]
        for about, rows in FEW_SHOT
    )
    return head + shots


def expected_values(choices: dict[str, float], values: tuple[str, ...]) -> float:
    """The mean value under the values' log-probabilities renormalised over the values listed; NaN
    when none was listed."""
    listed = {int(v): lp for v, lp in choices.items() if v in values}
    if not listed:
        return math.nan
    top = max(listed.values())
    weights = {v: math.exp(lp - top) for v, lp in listed.items()}
    return sum(v * w for v, w in weights.items()) / sum(weights.values())


def correlation(true: np.ndarray, predicted: np.ndarray) -> float:
    """Pearson's r over all tokens; NaN when either side is constant."""
    if len(true) < 2 or np.std(true) == 0 or np.std(predicted) == 0:
        return math.nan
    return float(np.corrcoef(true, predicted)[0, 1])


def parse_values(text: str | None, n: int) -> list[float] | None:
    """json mode: the first JSON list in the answer, of n numbers; None otherwise."""
    match = re.search(r"\[[^\[\]]*\]", text or "")
    if not match:
        return None
    try:
        values = json.loads(match.group(0))
    except json.JSONDecodeError:
        return None
    if len(values) != n or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in values
    ):
        return None
    return [float(v) for v in values]


@dataclass(frozen=True)
class Simulated:
    """One window: its true activations (scaled) and the predicted ones (None: unreadable)."""

    example: Example
    true: np.ndarray
    predicted: np.ndarray | None


class Simulator:
    """Simulates the test windows of latents from their explanations with one LLM client."""

    def __init__(
        self,
        client: LLMClient,
        cfg: SimulationConfig,
        decode: Decode,
        choices: tuple[str, ...] = VALUES,
    ):
        self.client, self.cfg, self.decode = client, cfg, decode
        self.values = choices
        self.top = max(int(v) for v in choices)
        self.mode = "json" if cfg.simulation_mode == "json" else "logprobs"

    def simulate(
        self, explanation: str, windows: list[Example], scale: float, desc: str
    ) -> list[Simulated]:
        tokens = [[self.decode([t]) for t in ex.tokens.tolist()] for ex in windows]
        true = [
            np.clip(ex.acts / scale * self.top, 0, self.top)
            if scale > 0
            else np.zeros(len(ex.acts))
            for ex in windows
        ]
        if self.mode == "logprobs":
            try:
                predicted = self._expected(explanation, tokens, desc)
            except SaeInterpError as err:
                if self.cfg.simulation_mode != "auto" or "no prompt logprobs" not in str(err):
                    raise
                log.warning(
                    "simulation: %s gives no prompt log-probabilities; the model writes the "
                    "activations as "
                    "JSON instead (simulation_mode: json)",
                    self.client.name,
                )
                self.mode = "json"
        if self.mode == "json":
            predicted = self._written(explanation, tokens, desc)
        return [Simulated(ex, t, p) for ex, t, p in zip(windows, true, predicted, strict=True)]

    def _expected(
        self, explanation: str, tokens: list[list[str]], desc: str
    ) -> list[np.ndarray | None]:
        tables = [_table(explanation, toks, None) for toks in tokens]
        readings = self.client.read_texts(
            prefix(self.top),
            [text for text, _ in tables],
            self.values,
            [tuple(slots) for _, slots in tables],
            desc=desc,
        )
        out = []
        for reading in readings:
            ev = (
                None
                if reading is None or reading.choices is None
                else np.array([expected_values(c, self.values) for c in reading.choices])
            )
            out.append(None if ev is None or np.isnan(ev).any() else ev)
        return out

    def _written(
        self, explanation: str, tokens: list[list[str]], desc: str
    ) -> list[np.ndarray | None]:
        prompts = [
            Prompt(
                messages=(
                    (
                        "system",
                        prefix(self.top) + f"Answer with a JSON list of {len(toks)} numbers from "
                        f"0 to {self.top}, one per token in order, and nothing else.",
                    ),
                    ("user", _table(explanation, toks, None)[0]),
                ),
                max_tokens=self.cfg.simulation_max_tokens,
                temperature=0.0,
            )
            for toks in tokens
        ]
        answers = self.client.generate(prompts, desc=desc)
        return [
            None if (v := parse_values(a.text, len(toks))) is None else np.array(v)
            for a, toks in zip(answers, tokens, strict=True)
        ]


def score_simulation(
    splits: list[ExampleSplit],
    explanations: dict[int, Explanation],
    simulator: Simulator,
    seed: int,
    shuffled_control: bool = True,
    owned: set[int] | None = None,
    desc: str = "simulation",
) -> dict[int, ScoredLatent]:
    donor = shuffled_donors([s.latent for s in splits], seed, shuffled_control)
    out = {}
    for split in (s for s in splits if owned is None or s.latent in owned):
        windows = split.test
        scale = max((ex.max_act for ex in split.test_activating + split.train), default=0.0)
        real = simulator.simulate(explanations[split.latent].text, windows, scale, desc)
        metrics = simulation_metrics(real)
        if split.latent in donor:
            shuffled = simulator.simulate(
                explanations[donor[split.latent]].text, windows, scale, f"{desc} (shuffled)"
            )
            metrics["correlation_shuffled"] = simulation_metrics(shuffled)["correlation"]
        else:
            metrics["correlation_shuffled"] = math.nan
        detail = {
            "windows": [
                {
                    "text": simulator.decode(s.example.tokens.tolist()),
                    "decile": s.example.decile,
                    "true": [round(float(v), 3) for v in s.true],
                    "expected": None
                    if s.predicted is None
                    else [round(float(v), 3) for v in s.predicted],
                }
                for s in real
            ],
            "scale_top": simulator.top,
            "mode": simulator.mode,
        }
        out[split.latent] = ScoredLatent(
            split.latent, explanations[split.latent].text, [], metrics, detail
        )
    return out


def simulation_metrics(simulated: list[Simulated]) -> dict[str, float]:
    """Correlation over every readable window's tokens, and per decile with the non-activating
    windows."""
    read = [s for s in simulated if s.predicted is not None]

    def corr(items: list[Simulated]) -> float:
        if not items:
            return math.nan
        return correlation(
            np.concatenate([s.true for s in items]), np.concatenate([s.predicted for s in items])
        )

    quiet = [s for s in read if s.example.decile == 0]
    metrics = {
        "correlation": corr(read),
        "answered_frac": len(read) / max(len(simulated), 1),
        "parse_failures": float(len(simulated) - len(read)),
    }
    for d in range(1, 11):
        mine = [s for s in read if s.example.decile == d]
        metrics[f"correlation_decile{d}"] = corr(mine + quiet) if mine else math.nan
    return metrics


def table(explanation: str, tokens: list[str]) -> str:
    """The text one window is read as (for estimates of what the reads cost)."""
    return _table(explanation, tokens, None)[0]
