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
