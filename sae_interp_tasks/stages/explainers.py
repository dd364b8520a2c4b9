"""Explainers: from a latent's train windows to a one-line explanation of what it detects.

- `llm` explainers (through an `hf` or `openai` client): the prompt shows each train window
  with its activating tokens marked <<like this>> (tokens at or above `highlight_threshold`
  x the window's max), then the activating tokens with activations scaled to 0..10.
- `tokens`: the non-LLM floor, naming the most frequent activating tokens.
- `logits` and `neighbours`: no LLM and no windows, only weights: the tokens the latent's decoder
  direction promotes most through the unembedding (the logit lens, as Neuronpedia's logit
  explainer), or the vocabulary tokens whose input embeddings lie nearest to it (stages/lens.py).
- output explanations (sae_intervention): what steering a latent makes the model write, from the
  tokens the edit promotes most (an LLM's description, or the tokens themselves).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import torch

from sae_interp_tasks.clients import ClientConfig, LLMClient, Prompt
from sae_interp_tasks.config import StageConfig, option, positive
from sae_interp_tasks.errors import SaeInterpError
from sae_interp_tasks.records import Example, ExampleSplit, Explanation
from sae_interp_tasks.stages.examples import activating_marks, highlight

EXPLAINERS = ("hf", "openai", "tokens", "logits", "neighbours", "file")
# the explainers that call no LLM (logits and neighbours read the SAE's weights through
# stages.lens; file reads explanations written elsewhere, stages.explanation_files)
LLM_FREE = ("tokens", "logits", "neighbours", "file")
WEIGHT_EXPLAINERS = ("logits", "neighbours")
Decode = Callable[[list[int]], str]

SYSTEM = (
    "You study one neuron-like feature of a language model. You are shown text excerpts where the "
    "feature is active; the tokens where it fires are marked <<like this>>. After the excerpts "
    "comes a "
    "list of the firing tokens with their activation strength from 0 to 10. Work out the single "
    "pattern "
    "that makes the feature fire: a word, a token type, a concept, a syntactic role or a context. "
    "Reply with one line of at most 20 words that starts with 'Explanation:'."
)


@dataclass(frozen=True)
class ExplainerConfig(StageConfig):
    explainer: str = option("hf", choices=EXPLAINERS)
    explainer_model: str = "HuggingFaceTB/SmolLM2-135M-Instruct"
    explainer_base_url: str | None = None
    explainer_api_key_env: str = "OPENAI_API_KEY"  # the NAME of the variable holding the key
    explainer_max_tokens: int = positive(48)
    # marked: tokens >= this x the window max
    highlight_threshold: float = option(0.3, above=0.0, max=1.0)
    max_concurrency: int = positive(8)  # requests in flight to an endpoint
    # the weight explainers (logits, neighbours): tokens named; neighbours scales the direction to
    # this multiple of the mean input-embedding norm before finding the nearest input embeddings
    # (the token-list method of the "definition trees" work)
    neighbour_tokens: int = positive(5)
    neighbour_scale: float = option(1.0, above=0.0)
    # explainer: file: where the explanations are (a Neuronpedia export, a delphi explanations
    # folder, a SAEBench autointerp result file, this package's samples files; "neuronpedia": the
    # SAE's own Neuronpedia export, fetched once into the cache), the delphi module
    # when the folder holds several, and the Neuronpedia explanation model preferred where a
    # latent has several records
    explanations_path: str | None = None
    explanations_module: str | None = None
    explanations_model: str | None = None

    def check(self) -> None:
        if self.explainer == "file" and not self.explanations_path:
            raise SaeInterpError(
                'explainer: file needs explanations_path (--metadata \'{"explainer": "file", '
                '"explanations_path": "..."}\')'
            )

    @property
    def uses_llm(self) -> bool:
        return self.explainer not in LLM_FREE

    def client_config(self, device: str = "cpu") -> ClientConfig:
        return ClientConfig(
            kind=self.explainer,
            model=self.explainer_model,
            base_url=self.explainer_base_url,
            api_key_env=self.explainer_api_key_env,
            max_concurrency=self.max_concurrency,
            device=device,
        )


def explainer_prompt(
    train: list[Example], decode: Decode, threshold: float, max_tokens: int
) -> Prompt:
    excerpts, strengths = [], []
    for i, ex in enumerate(train, 1):
        marks = activating_marks(ex, threshold)
        excerpts.append(f"Excerpt {i}: {highlight(ex.tokens, marks, decode)}")
        for tok, act in zip(ex.tokens.tolist(), ex.acts.tolist(), strict=True):
            if act > 0 and act >= threshold * ex.max_act:
                strengths.append(f"{decode([tok])!r} {round(10 * act / ex.max_act)}")
    user = (
        "\n".join(excerpts)
        + "\n\nFiring tokens and strengths:\n"
        + ", ".join(strengths[:120])
        + "\n\nWhat does the feature detect?"
    )
    return Prompt(
        messages=(("system", SYSTEM), ("user", user)),
        max_tokens=max_tokens,
        temperature=0.0,
        prefill="Explanation:",
    )


_LIST_MARK = re.compile(r"^(\d+\.|[-*\u2022])\s*")


def parse_explanation(text: str | None) -> str | None:
    """The explanation in an answer: the text after an 'Explanation:' lead (on its line or the
    next), else the first non-empty line. A line that ends in ':' ("The feature detects the
    following:") continues with the list items after it. Quotes, list marks, markdown bold and
    the <<highlight>> marks copied from the prompt are removed; at most 30 words; None if empty."""
    if not text:
        return None
    match = re.search(r"explanation\s*:", text, re.IGNORECASE)
    body = text[match.end() :] if match else text
    lines = [ln.strip() for ln in body.splitlines() if ln.strip()]
    if not lines:
        return None
    kept = [lines[0]]
    if lines[0].endswith(":"):
        kept += [_LIST_MARK.sub("", ln) for ln in lines[1:]]
    cleaned = " ".join(kept).replace("**", "").replace("<<", "").replace(">>", "").strip("\"'` ")
    words = cleaned.split()
    return " ".join(words[:30]) or None


def token_explanation(
    train: list[Example], decode: Decode, threshold: float, n_tokens: int = 3
) -> str:
    """The non-LLM floor: the most frequent activating tokens, e.g. `the tokens " cat", " cats"`."""
    counts: Counter[str] = Counter()
    for ex in train:
        marks = activating_marks(ex, threshold)
        for tok, mark in zip(ex.tokens.tolist(), marks.tolist(), strict=True):
            if mark:
                counts[decode([tok])] += 1
    return quoted_tokens([tok for tok, _ in counts.most_common(n_tokens)])


def quoted_tokens(texts: list[str]) -> str:
    """`the tokens " cat", " cats"` (or `the token ...`) for a list of token texts."""
    if not texts:
        return "nothing recognisable"
    quoted = ", ".join(f'"{t}"' for t in texts)
    return f"the token {quoted}" if len(texts) == 1 else f"the tokens {quoted}"


def weight_explanations(latents: list[int], cfg: ExplainerConfig, lens) -> dict[int, Explanation]:
    """The `logits` / `neighbours` explanations: token lists read from the weights alone (`lens`:
    a stages.lens.WeightLens)."""
    n = cfg.neighbour_tokens
    if cfg.explainer == "logits":
        tokens = torch.topk(lens.logits(latents), n, dim=-1).indices.tolist()
    else:
        tokens = lens.neighbours(latents, n, cfg.neighbour_scale)
    return {
        lat: Explanation(lat, quoted_tokens([lens.token_text(t) for t in toks]), cfg.explainer)
        for lat, toks in zip(latents, tokens, strict=True)
    }


def explain(
    splits: list[ExampleSplit],
    cfg: ExplainerConfig,
    client: LLMClient | None,
    decode: Decode,
    lens=None,
    given=None,
) -> dict[int, Explanation]:
    """One explanation per latent; an LLM answer that cannot be parsed gives the token-list
    explanation, marked as such. `lens` (stages.lens.WeightLens) serves the weight explainers,
    `given` (stages.explanation_files.ExplanationFile) the file explainer, whose latents are
    selected among those it covers."""
    if cfg.explainer == "file":
        return {
            s.latent: Explanation(s.latent, given.texts[s.latent], f"file:{given.layout}")
            for s in splits
        }
    if cfg.explainer in WEIGHT_EXPLAINERS:
        if lens is None:
            raise SaeInterpError(f"explainer {cfg.explainer!r} needs the subject model's weights")
        return weight_explanations([s.latent for s in splits], cfg, lens)
    if not cfg.uses_llm or client is None:
        return {
            s.latent: Explanation(
                s.latent, token_explanation(s.train, decode, cfg.highlight_threshold), "tokens"
            )
            for s in splits
        }
    prompts = [
        explainer_prompt(s.train, decode, cfg.highlight_threshold, cfg.explainer_max_tokens)
        for s in splits
    ]
    answers = client.generate(prompts, desc="explain")
    out = {}
    for split, answer in zip(splits, answers, strict=True):
        text = parse_explanation(answer.text)
        if text is None:
            out[split.latent] = Explanation(
                split.latent,
                token_explanation(split.train, decode, cfg.highlight_threshold),
                "tokens(fallback)",
            )
        else:
            out[split.latent] = Explanation(split.latent, text, client.name)
    return out


# --- the output explanation: what steering a latent makes the model write
# ------------------------------
OUTPUT_SYSTEM = (
    "You study one feature of a language model. When the feature is amplified, the model's "
    "next-token predictions move toward the tokens listed, with the average increase in "
    "probability. "
    "Say what the feature makes the model write: one line of at most 20 words that starts with "
    "'Explanation:'."
)


def output_explainer_prompt(promoted: list[tuple[str, float]], max_tokens: int) -> Prompt:
    listing = "\n".join(f"{token!r} +{gain:.3f}" for token, gain in promoted)
    return Prompt(
        messages=(
            ("system", OUTPUT_SYSTEM),
            ("user", f"Promoted tokens:\n{listing}\n\nWhat does it promote?"),
        ),
        max_tokens=max_tokens,
        temperature=0.0,
        prefill="Explanation:",
    )


def promoted_token_explanation(promoted: list[tuple[str, float]]) -> str:
    """The non-LLM output explanation: the promoted tokens themselves."""
    quoted = ", ".join(f'"{token}"' for token, _ in promoted[:3])
    return f"the tokens {quoted}" if quoted else "nothing recognisable"


def output_explanations(promoted: dict, client: LLMClient | None, max_tokens: int) -> dict:
    """{key: explanation} from each key's promoted (token text, gain) list; token lists without a
    client."""
    if client is None:
        return {key: promoted_token_explanation(tokens) for key, tokens in promoted.items()}
    keys = list(promoted)
    answers = client.generate(
        [output_explainer_prompt(promoted[k], max_tokens) for k in keys], desc="output explain"
    )
    return {
        k: parse_explanation(a.text) or promoted_token_explanation(promoted[k])
        for k, a in zip(keys, answers, strict=True)
    }
