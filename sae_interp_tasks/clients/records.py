"""The records LLM clients take and give: their config, a prompt, a completion."""

from __future__ import annotations

from dataclasses import dataclass

from sae_interp_tasks.errors import SaeInterpError


@dataclass(frozen=True)
class ClientConfig:
    kind: str = "hf"  # "hf" | "openai"
    # hf: hub name, local HF folder, or the bundled model's name; openai: the endpoint's model name
    model: str = "HuggingFaceTB/SmolLM2-135M-Instruct"
    base_url: str | None = (
        None  # openai: e.g. http://127.0.0.1:8000/v1 (None = the openai library default)
    )
    api_key_env: str = (
        "OPENAI_API_KEY"  # NAME of the env var holding the key; the key itself is never stored
    )
    max_concurrency: int = 8
    max_retries: int = 5
    timeout: float = 60.0
    batch_size: int = 8  # hf: prompts per generate call
    device: str = "cpu"

    def check(self) -> None:
        """Reject settings no client can run with, naming the field to fix."""
        for name, low in (("max_concurrency", 1), ("max_retries", 0), ("batch_size", 1)):
            if getattr(self, name) < low:
                raise SaeInterpError(f"LLM client {name}={getattr(self, name)} must be >= {low}")
        if not self.timeout > 0:
            raise SaeInterpError(f"LLM client timeout={self.timeout} must be > 0 seconds")
        if not self.model:
            raise SaeInterpError("LLM client model is empty: name the model to ask")


@dataclass(frozen=True)
class Prompt:
    messages: tuple[tuple[str, str], ...]  # ((role, content), ...)
    max_tokens: int = 64
    temperature: float = 0.0
    logprobs: bool = False  # also return top-k logprobs of each generated token
    top_logprobs: int = 10
    # The start of the assistant's answer, for clients that can continue it (hf): small models
    # then keep to a format ("[" before a list). The completion's text begins with it. Endpoint
    # clients cannot continue a turn and ignore it.
    prefill: str = ""
    # > 0: the answer is a list of this many 0/1 choices, "[1, 0, ...]" after the prefill. Clients
    # that can constrain decoding (hf) allow only that grammar and return each choice's P(1) in
    # Completion.choice_probs, so the answer always parses; endpoint clients ignore it.
    choice_list: int = 0
    # > 0: the answer is one number from 1 to this (at most 9), one digit after the prefill.
    # Clients that can constrain decoding (hf) allow only those digits and return P(k) for each
    # k in Completion.choice_probs; endpoint clients ignore it and the answer is parsed.
    choice_one: int = 0


@dataclass(frozen=True)
class Completion:
    text: str | None  # None when the call failed after all retries
    # per generated token: {token_text: logprob} of the top-k alternatives; None when unavailable
    top_logprobs: list[dict[str, float]] | None = None
    error: str | None = None  # why it failed (no secrets in it)
    cached: bool = False
    # with Prompt.choice_list: P(1) / (P(0) + P(1)) at each choice, from the unconstrained logits;
    # with Prompt.choice_one: P(k) for k = 1..n, normalised over the n digits
    choice_probs: list[float] | None = None


@dataclass(frozen=True)
class Reading:
    """What a model's forward over a prefix and a text says about the text: for each token of the
    text, its character offset in the text and its log-probability given everything before it; at
    the character offsets asked for (`at`), the log-probabilities of the `choices` strings as the
    next token there (a choice the endpoint did not list is absent). Asked with
    `LLMClient.read_texts`."""

    offsets: list[int]
    logprobs: list[float]
    choices: list[dict[str, float]] | None = None  # one per asked offset, in order
    cached: bool = False
