"""What every explainer/scorer LLM client shares: `generate`, which answers from the on-disk cache
first and asks the model only for the rest.

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

from tqdm.auto import tqdm

from sae_interp_tasks.clients.cache import CompletionCache
from sae_interp_tasks.clients.records import ClientConfig, Completion, Prompt
from sae_interp_tasks.errors import SaeInterpError

log = logging.getLogger(__name__)


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
        return self._cached(keys, prompts, self.cache.get_many, self.cache.put, self._answer,
                            ok=lambda completion: completion.text is not None, desc=desc)

    def continuation_logprobs(self, prefix: str, pairs: list[tuple[str, str]], desc: str = "logprobs") -> list[float | None]:
        """log P(target | prefix + context) for each (context, target), summed over the target's tokens;
        cached like answers; None where the request failed after retries."""
        keys = [self.cache.logprob_key(self.name, self.cfg.base_url, prefix, c, t) for c, t in pairs]
        return self._cached(keys, pairs, self.cache.get_logprobs, self.cache.put_logprob,
                            lambda todo, on_answer: self._logprobs(prefix, todo, on_answer),
                            ok=lambda value: value is not None, desc=desc)

    def _cached(self, keys: list[str], items: list, lookup, store, ask, ok, desc: str) -> list:
        """The cache-first flow shared by every request kind: identical items are asked once, each
        success is stored as it lands (an interrupted run loses nothing), failures are asked again
        by the next run."""
        answers: dict = lookup(keys)
        todo: dict = {}
        for key, item in zip(keys, items):
            if key not in answers:
                todo.setdefault(key, item)
        copies = Counter(keys)
        todo_keys = list(todo)
        n_cached = sum(copies[key] for key in answers)
        log.debug("%s: %d requests, %d cached, %d to ask", self.name, len(items), n_cached, len(todo))
        bar = tqdm(total=len(items), initial=n_cached, unit="requests", desc=desc)
        lock = threading.Lock()

        def on_answer(i: int, answer) -> None:
            key = todo_keys[i]
            with lock:
                answers[key] = answer
                if ok(answer):
                    store(key, answer)
                bar.update(copies[key])

        try:
            if todo:
                ask(list(todo.values()), on_answer)
        finally:
            bar.close()
        missing = [k for k in todo_keys if k not in answers]
        if missing:
            raise RuntimeError(f"{type(self).__name__} left {len(missing)} requests unanswered")
        failed = sum(1 for k in todo_keys if not ok(answers[k]))
        if failed:
            log.warning("%s: %d of %d requests failed after retries; a rerun asks them again",
                        self.name, failed, len(todo_keys))
        return [answers[k] for k in keys]

    def _logprobs(self, prefix: str, pairs: list[tuple[str, str]], on_answer) -> None:
        """Score every (context, target) after `prefix`; call on_answer(index, logprob or None)."""
        raise SaeInterpError(f"{self.name} cannot score log-probabilities of a text")

    @abstractmethod
    def _answer(self, prompts: list[Prompt], on_answer: OnAnswer) -> None:
        """Ask the model for every prompt; call on_answer(index, completion) once per prompt."""
