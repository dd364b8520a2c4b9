"""What every explainer/scorer LLM client shares: `generate` (chat answers), `continuation_logprobs`
(the log-probability of a target text) and `read_texts` (per-token log-probabilities of texts, and
of chosen next tokens at chosen places), each answering from the on-disk cache first and asking the
model only for the rest; and `usage`, what the calls cost.

Subclasses implement `_answer(prompts, on_answer)` (and `_logprobs`, `_read` where they can): ask
the model for each item and call `on_answer(i, answer)` as each answer arrives, so the cache
commits it at once and an interrupted run loses nothing already answered.
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, fields

from tqdm.auto import tqdm

from sae_interp_tasks.clients.cache import CompletionCache
from sae_interp_tasks.clients.records import ClientConfig, Completion, Prompt, Reading
from sae_interp_tasks.errors import SaeInterpError

log = logging.getLogger(__name__)


OnAnswer = Callable[[int, Completion], None]


@dataclass
class Usage:
    """What a client's requests cost: requests the model answered and those the cache did, and the
    tokens the model read and wrote for the former (the API's `usage`, or the tokenizer's count in
    process)."""

    calls: int = 0
    cached_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def copy(self) -> Usage:
        return Usage(**{f.name: getattr(self, f.name) for f in fields(self)})

    def since(self, earlier: Usage) -> Usage:
        return Usage(
            **{f.name: getattr(self, f.name) - getattr(earlier, f.name) for f in fields(self)}
        )

    def add(self, other: Usage) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


class LLMClient(ABC):
    # e.g. "hf:HuggingFaceTB/SmolLM2-135M-Instruct", "openai:gpt-4o-mini@http://host/v1" (no key)
    name: str
    supports_logprobs: bool
    n_calls: int  # model calls actually made, retries included (cache hits excluded)

    def __init__(self, cfg: ClientConfig, cache: CompletionCache):
        self.cfg = cfg
        self.cache = cache
        self.n_calls = 0
        self.usage = Usage()
        self._count_lock = threading.Lock()

    def _count_call(self, n: int = 1) -> None:
        with self._count_lock:
            self.n_calls += n

    def _count_tokens(self, prompt_tokens: int, completion_tokens: int = 0) -> None:
        with self._count_lock:
            self.usage.prompt_tokens += int(prompt_tokens)
            self.usage.completion_tokens += int(completion_tokens)

    def generate(self, prompts: list[Prompt], desc: str = "llm") -> list[Completion]:
        """Answers in the order of `prompts`; cached answers first, each new success cached as it
        lands."""
        keys = [self.cache.key(self.name, self.cfg.base_url, p) for p in prompts]
        return self._cached(
            keys,
            prompts,
            self.cache.get_many,
            self.cache.put,
            self._answer,
            ok=lambda completion: completion.text is not None,
            desc=desc,
        )

    def continuation_logprobs(
        self, prefix: str, pairs: list[tuple[str, str]], desc: str = "logprobs"
    ) -> list[float | None]:
        """log P(target | prefix + context) for each (context, target), summed over the target's
        tokens; cached like answers; None where the request failed after retries."""
        keys = [
            self.cache.logprob_key(self.name, self.cfg.base_url, prefix, c, t) for c, t in pairs
        ]
        return self._cached(
            keys,
            pairs,
            self.cache.get_logprobs,
            self.cache.put_logprob,
            lambda todo, on_answer: self._logprobs(prefix, todo, on_answer),
            ok=lambda value: value is not None,
            desc=desc,
        )

    def read_texts(
        self,
        prefix: str,
        texts: list[str],
        choices: tuple[str, ...] = (),
        at: list[tuple[int, ...]] | None = None,
        desc: str = "read",
    ) -> list[Reading | None]:
        """Per text, what the model says of it after `prefix` (see records.Reading): every token's
        log-probability, and at the character offsets `at[i]` of text i the log-probabilities of the
        `choices` as the next token there. Cached like answers; None where the request failed."""
        at = at if at is not None else [()] * len(texts)
        items = list(zip(texts, (tuple(a) for a in at), strict=True))
        keys = [
            self.cache.reading_key(self.name, self.cfg.base_url, prefix, text, choices, spots)
            for text, spots in items
        ]
        return self._cached(
            keys,
            items,
            self.cache.get_readings,
            self.cache.put_reading,
            lambda todo, on_answer: self._read(prefix, todo, choices, on_answer),
            ok=lambda value: value is not None,
            desc=desc,
        )

    def single_token_choices(self, choices: tuple[str, ...]) -> tuple[str, ...]:
        """The choices this model reads as one token each (read_texts can give their
        log-probabilities); an endpoint's tokenizer is not known here, so all of them."""
        return tuple(choices)

    def _cached(self, keys: list[str], items: list, lookup, store, ask, ok, desc: str) -> list:
        """The cache-first flow shared by every request kind: identical items are asked once, each
        success is stored as it lands (an interrupted run loses nothing), failures are asked again
        by the next run."""
        answers: dict = lookup(keys)
        todo: dict = {}
        for key, item in zip(keys, items, strict=True):
            if key not in answers:
                todo.setdefault(key, item)
        copies = Counter(keys)
        todo_keys = list(todo)
        n_cached = sum(copies[key] for key in answers)
        with self._count_lock:
            self.usage.cached_calls += n_cached
            self.usage.calls += len(todo)
        log.debug(
            "%s: %d requests, %d cached, %d to ask", self.name, len(items), n_cached, len(todo)
        )
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
            log.warning(
                "%s: %d of %d requests failed after retries; a rerun asks them again",
                self.name,
                failed,
                len(todo_keys),
            )
        return [answers[k] for k in keys]

    def _logprobs(self, prefix: str, pairs: list[tuple[str, str]], on_answer) -> None:
        """Score every (context, target) after `prefix`; call on_answer(index, logprob or None)."""
        raise SaeInterpError(f"{self.name} cannot score log-probabilities of a text")

    def _read(
        self,
        prefix: str,
        items: list[tuple[str, tuple[int, ...]]],
        choices: tuple[str, ...],
        on_answer,
    ) -> None:
        """Read every (text, offsets) after `prefix`; call on_answer(index, Reading or None)."""
        raise SaeInterpError(f"{self.name} cannot read the log-probabilities of a text")

    @abstractmethod
    def _answer(self, prompts: list[Prompt], on_answer: OnAnswer) -> None:
        """Ask the model for every prompt; call on_answer(index, completion) once per prompt."""
