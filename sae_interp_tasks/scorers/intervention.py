"""Scoring explanations by what steering a latent does to the model's output.

- surprisal (Paulo et al. 2024, section 3.3.5): a base language model reads a few-shot prompt
  that ends in a passage (a prompt and its continuation) and the claim 'The above passage contains
  an amplified amount of "<explanation>"'. A latent's score is the mean over its scoring prompts of
  surprisal(explanation | clean continuation) - surprisal(explanation | steered continuation), in
  nats: how much more the explanation is expected after text the steered model wrote.
- judge (optional; output-centric descriptions, Gur-Arieh et al. 2025): a chat model reads the
  explanation and three sets of steered continuations (this latent's and two others' at the same
  target KL, in a seeded order) and names the set the explanation describes; chance is 1/3.
- the output explanation: an explainer describes the tokens the edit promotes most.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

import numpy as np

from sae_interp_tasks.clients import ClientConfig, LLMClient, Prompt
from sae_interp_tasks.config import StageConfig, option, positive
from sae_interp_tasks.explainers import parse_explanation

INTERVENTION_SCORERS = ("surprisal", "judge")
CLAIM = 'The above passage contains an amplified amount of "'

# our own few-shot passages: text in which one concept is unmistakably over-represented
FEW_SHOT = (
    ("The harbour smelled of salt and tar. Boats, boats everywhere: fishing boats, sailing boats, a rusty ferry "
     "and three rowing boats tied to the pier.", "boats and ships"),
    ("def load(path):\n    with open(path) as f:\n        return f.read()\n# open the file, read the file, close "
     "the file, file after file", "reading files in code"),
    ("She was so happy, so glad, delighted really; the joy of the morning made everyone cheerful and smiling.",
     "happiness and joy"),
    ("In 1914, 1918, 1939 and 1945 the dates kept piling up: 12 March, 3 April, the year 1066 and the decade "
     "of the 1960s.", "years and dates"),
)


@dataclass(frozen=True)
class InterventionScoringConfig(StageConfig):
    intervention_scorers: list = option(["surprisal"], choices=INTERVENTION_SCORERS)
    # the base LM reading the surprisal prompt: in process (hf) or an OpenAI-compatible completions
    # endpoint that echoes prompt logprobs (vLLM)
    surprisal_scorer: str = option("hf", choices=("hf", "openai"))
    surprisal_model: str = "HuggingFaceTB/SmolLM2-135M-Instruct"
    surprisal_base_url: str | None = None
    surprisal_api_key_env: str = "OPENAI_API_KEY"
    judge_continuations: int = positive(5)  # continuations shown per set to the judge

    def surprisal_client(self, device: str = "cpu", max_concurrency: int = 8) -> ClientConfig:
        return ClientConfig(kind=self.surprisal_scorer, model=self.surprisal_model, base_url=self.surprisal_base_url,
                            api_key_env=self.surprisal_api_key_env, max_concurrency=max_concurrency, device=device)


# --- surprisal ----------------------------------------------------------------------------------------
def surprisal_prefix() -> str:
    return "".join(f"<PASSAGE>\n{text}\n\n{CLAIM}{about}\"\n\n" for text, about in FEW_SHOT)


def surprisal_request(prompt_text: str, continuation_text: str, explanation: str) -> tuple[str, str]:
    """(context, target): the passage and the claim's lead, then the explanation and its closing quote."""
    return f"<PASSAGE>\n{prompt_text}{continuation_text}\n\n{CLAIM}", f'{explanation}"'


@dataclass(frozen=True)
class SurprisalScore:
    score: float  # mean over prompts of surprisal(clean) - surprisal(steered), nats
    stderr: float
    per_prompt: list[tuple[float | None, float | None]]  # (log P clean, log P steered)


def surprisal_scores(client: LLMClient, jobs: list[tuple[str, list[str], list[str], list[str]]]) -> list[SurprisalScore]:
    """One score per job (explanation, prompt texts, clean texts, steered texts), all asked at once."""
    pairs = []
    for explanation, prompts, clean, steered in jobs:
        for p, c, s in zip(prompts, clean, steered):
            pairs += [surprisal_request(p, c, explanation), surprisal_request(p, s, explanation)]
    values = client.continuation_logprobs(surprisal_prefix(), pairs, desc="surprisal")
    out, i = [], 0
    for _, prompts, _, _ in jobs:
        per = [(values[i + 2 * k], values[i + 2 * k + 1]) for k in range(len(prompts))]
        i += 2 * len(prompts)
        diffs = np.array([s - c for c, s in per if c is not None and s is not None])
        if len(diffs) == 0:
            out.append(SurprisalScore(float("nan"), float("nan"), per))
            continue
        stderr = float(diffs.std(ddof=1) / np.sqrt(len(diffs))) if len(diffs) > 1 else float("nan")
        out.append(SurprisalScore(float(diffs.mean()), stderr, per))
    return out


# --- the judge -------------------------------------------------------------------------------------------
JUDGE_SYSTEM = ("A feature inside a language model was amplified while it wrote short continuations. You get a "
                "description of a feature and three numbered sets of continuations; only one set was written with "
                "the described feature amplified. Answer with the number of that set only.")
_SET = re.compile(r"\b([123])\b")


def judge_prompt(explanation: str, sets: list[list[str]]) -> Prompt:
    body = "\n\n".join(f"Set {i}:\n" + "\n".join(f"- {' '.join(text.split())}" for text in texts)
                       for i, texts in enumerate(sets, 1))
    return Prompt(messages=(("system", JUDGE_SYSTEM), ("user", f"Description: {explanation}\n\n{body}\n\nWhich set?")),
                  max_tokens=4, temperature=0.0)


def judge_sets(own: list[str], others: list[list[str]], rng: random.Random) -> tuple[list[list[str]], int]:
    """Three sets in a seeded order, and the index of this latent's set."""
    sets = [own] + others
    order = list(range(len(sets)))
    rng.shuffle(order)
    return [sets[i] for i in order], order.index(0)


def read_judgement(text: str | None, truth: int) -> float:
    """1.0 when the judge named this latent's set, 0.0 when another, NaN when no set number was given."""
    match = _SET.search(text or "")
    return float("nan") if match is None else float(int(match.group(1)) - 1 == truth)


# --- the output explanation -------------------------------------------------------------------------------
OUTPUT_SYSTEM = ("You study one feature of a language model. When the feature is amplified, the model's "
                 "next-token predictions move toward the tokens listed, with the average increase in probability. "
                 "Say what the feature makes the model write: one line of at most 20 words that starts with "
                 "'Explanation:'.")


def output_explainer_prompt(promoted: list[tuple[str, float]], max_tokens: int) -> Prompt:
    listing = "\n".join(f"{token!r} +{gain:.3f}" for token, gain in promoted)
    return Prompt(messages=(("system", OUTPUT_SYSTEM), ("user", f"Promoted tokens:\n{listing}\n\nWhat does it promote?")),
                  max_tokens=max_tokens, temperature=0.0, prefill="Explanation:")


def promoted_token_explanation(promoted: list[tuple[str, float]]) -> str:
    """The non-LLM output explanation: the promoted tokens themselves."""
    quoted = ", ".join(f'"{token}"' for token, _ in promoted[:3])
    return f"the tokens {quoted}" if quoted else "nothing recognisable"


def output_explanations(promoted: dict, client: LLMClient | None, max_tokens: int) -> dict:
    """{key: explanation} from each key's promoted (token text, gain) list; token lists without a client."""
    if client is None:
        return {key: promoted_token_explanation(tokens) for key, tokens in promoted.items()}
    keys = list(promoted)
    answers = client.generate([output_explainer_prompt(promoted[k], max_tokens) for k in keys], desc="output explain")
    return {k: parse_explanation(a.text) or promoted_token_explanation(promoted[k]) for k, a in zip(keys, answers)}
