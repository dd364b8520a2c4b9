"""What every explainer/scorer LLM client shares: its config, the prompt and completion records,
and `generate`, which answers from the on-disk cache first and asks the model only for the rest.

Subclasses implement `_answer(prompts, on_answer)`: ask the model for each prompt and call
`on_answer(i, completion)` as each answer arrives, so the cache commits it at once and an
interrupted run loses nothing already answered.
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from tqdm.auto import tqdm

from sae_interp_tasks.clients.cache import CompletionCache
from sae_interp_tasks.errors import SaeInterpError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClientConfig:
    kind: str = "hf"  # "hf" | "openai"
    # hf: hub name, local HF folder, or the bundled model's name; openai: the endpoint's model name
    model: str = "HuggingFaceTB/SmolLM2-135M-Instruct"
    base_url: str | None = None  # openai: e.g. http://127.0.0.1:8000/v1 (None = the openai library default)
    api_key_env: str = "OPENAI_API_KEY"  # NAME of the env var holding the key; the key itself is never stored
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


@dataclass(frozen=True)
class Completion:
    text: str | None  # None when the call failed after all retries
    # per generated token: {token_text: logprob} of the top-k alternatives; None when unavailable
    top_logprobs: list[dict[str, float]] | None = None
    error: str | None = None  # why it failed (no secrets in it)
    cached: bool = False
    # with Prompt.choice_list: P(1) / (P(0) + P(1)) at each choice, from the unconstrained logits
    choice_probs: list[float] | None = None


OnAnswer = Callable[[int, Completion], None]


class LLMClient(ABC):
    name: str  # e.g. "hf:HuggingFaceTB/SmolLM2-135M-Instruct", "openai:gpt-4o-mini@http://host/v1" (no key)
    supports_logprobs: bool
    n_calls: int  # model calls actually made, retries included (cache hits excluded)

    def __init__(self, cfg: ClientConfig, cache: CompletionCache):
        self.cfg = cfg
        self.cache = cache
        self.n_calls = 0
        self._count_lock = threading.Lock()

    def _count_call(self, n: int = 1) -> None:
        with self._count_lock:
            self.n_calls += n

    def generate(self, prompts: list[Prompt], desc: str = "llm") -> list[Completion]:
        """Answers in the order of `prompts`; cached answers first, each new success cached as it lands."""
        keys = [self.cache.key(self.name, self.cfg.base_url, p) for p in prompts]
        answers: dict[str, Completion] = self.cache.get_many(keys)
        todo: dict[str, Prompt] = {}  # identical prompts are asked once
        for key, prompt in zip(keys, prompts):
            if key not in answers:
                todo.setdefault(key, prompt)
        copies = Counter(keys)
        todo_keys = list(todo)
        n_cached = sum(copies[key] for key in answers)
        log.debug("%s: %d prompts, %d cached, %d to ask", self.name, len(prompts), n_cached, len(todo))
        bar = tqdm(total=len(prompts), initial=n_cached, unit="requests", desc=desc)
        lock = threading.Lock()

        def on_answer(i: int, completion: Completion) -> None:
            key = todo_keys[i]
            with lock:
                answers[key] = completion
                if completion.text is not None:
                    self.cache.put(key, completion)
                bar.update(copies[key])

        try:
            if todo:
                self._answer(list(todo.values()), on_answer)
        finally:
            bar.close()
        missing = [k for k in todo_keys if k not in answers]
        if missing:
            raise RuntimeError(f"{type(self).__name__}._answer left {len(missing)} prompts unanswered")
        failed = sum(1 for k in todo_keys if answers[k].text is None)
        if failed:
            log.warning("%s: %d of %d requests failed after retries; a rerun asks them again",
                        self.name, failed, len(todo_keys))
        return [answers[k] for k in keys]

    @abstractmethod
    def _answer(self, prompts: list[Prompt], on_answer: OnAnswer) -> None:
        """Ask the model for every prompt; call on_answer(index, completion) once per prompt."""
