"""What a run's LLM calls cost, counted and foreseen.

Counted: every client keeps its `Usage` (requests the model answered and those the cache did, and
the prompt and completion tokens of the former: the API's `usage`, or the tokenizer's count in
process). Each task kind is charged what its own scoring cost (its scorer, its known-answer check);
the shared explanations are charged to the first kind that asked for them, so the tasks of a run
add up to the run. The Task reports them as `llm_calls`, `llm_cached_calls`, `llm_prompt_tokens` and
`llm_completion_tokens` (sums over its docs).

Foreseen: before the first LLM call of a run, one line estimates the requests and tokens the run
will make on an empty cache (from the settings and the sizes of the prompts it will send, built for
real with a stand-in explanation), and `max_llm_tokens` stops the run there when the estimate is
larger.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from sae_interp_tasks.clients.base import LLMClient, Usage
from sae_interp_tasks.clients.records import Prompt
from sae_interp_tasks.config import StageConfig, option
from sae_interp_tasks.errors import SaeInterpError

log = logging.getLogger(__name__)
STAND_IN = (
    "a stand-in explanation of about the length explanations have, naming one word and its context"
)


@dataclass(frozen=True)
class BudgetConfig(StageConfig):
    # stop before the first LLM call when the estimate exceeds it
    max_llm_tokens: int | None = option(None, min=0)


@dataclass
class Estimate:
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def add(self, other: Estimate) -> Estimate:
        return Estimate(
            self.calls + other.calls,
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
        )

    def times(self, k: int) -> Estimate:
        return Estimate(self.calls * k, self.prompt_tokens * k, self.completion_tokens * k)

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


# --- counting
# --------------------------------------------------------------------------------------
class UsageLedger:
    """A run's LLM usage: the clients it made (each counts its own `Usage`) and what each task kind
    was charged. One per run, owned by the backend next to the run's store (harness.context)."""

    def __init__(self) -> None:
        self._clients: list[LLMClient] = []
        self._charged: dict[str, Usage] = {}

    def watch(self, client: LLMClient) -> LLMClient:
        """Count `client`'s usage from now on (run_stages.client calls this for every client)."""
        self._clients.append(client)
        return client

    def usage_now(self) -> Usage:
        return _sum(c.usage for c in self._clients)

    def charged(self, kind: str, compute: Callable):
        """compute(), charging the LLM usage it caused to `kind` (less what nested charges took)."""
        before, charged_before = self.usage_now(), _sum(self._charged.values())
        out = compute()
        nested = _sum(self._charged.values()).since(charged_before)
        self._charged.setdefault(kind, Usage()).add(self.usage_now().since(before).since(nested))
        return out

    def usage_of(self, kind: str, n_docs: int) -> dict[str, float]:
        """A kind's usage as per-doc metrics: its totals spread over its `n_docs` docs (they sum
        back)."""
        used = self._charged.get(kind, Usage())
        n = max(n_docs, 1)
        return {
            "llm_calls": used.calls / n,
            "llm_cached_calls": used.cached_calls / n,
            "llm_prompt_tokens": used.prompt_tokens / n,
            "llm_completion_tokens": used.completion_tokens / n,
        }


def _sum(usages) -> Usage:
    total = Usage()
    for u in usages:
        total.add(u)
    return total


# --- foreseeing
# ------------------------------------------------------------------------------------
class PromptCounter:
    """Counts the tokens of prompts as the subject model's tokenizer sees them (its chat template
    where it has one): exact for the in-process scorer, an estimate for an endpoint's own
    tokenizer."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def text(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False).input_ids)

    def prompt(self, prompt: Prompt, answer_tokens: int | None = None) -> Estimate:
        messages = [{"role": r, "content": c} for r, c in prompt.messages]
        if getattr(self.tokenizer, "chat_template", None):
            n = self.text(
                self.tokenizer.apply_chat_template(
                    messages, add_generation_prompt=True, tokenize=False
                )
            )
        else:
            n = sum(self.text(m["content"]) + 4 for m in messages)
        n += self.text(prompt.prefill) if prompt.prefill else 0
        return Estimate(1, n, prompt.max_tokens if answer_tokens is None else answer_tokens)

    def reads(self, prefix: str, texts: list[str]) -> Estimate:
        """read_texts: the prefix once, then each text (no completion)."""
        return Estimate(len(texts) + 1, self.text(prefix) + sum(self.text(t) for t in texts), 0)


def announce(estimates: dict[str, Estimate], budget: int | None) -> None:
    """The one line before the first LLM call; stop when the estimate exceeds `max_llm_tokens`."""
    total = Estimate()
    for e in estimates.values():
        total = total.add(e)
    if not total.calls:
        return
    parts = ", ".join(
        f"{kind} {e.calls} requests / {e.tokens:,} tokens"
        for kind, e in estimates.items()
        if e.calls
    )
    log.warning(
        "LLM calls this run will make on an empty cache (estimate): %d requests, %s prompt + %s "
        "completion "
        "tokens (%s); cached answers cost nothing",
        total.calls,
        f"{total.prompt_tokens:,}",
        f"{total.completion_tokens:,}",
        parts,
    )
    if budget is not None and total.tokens > budget:
        raise SaeInterpError(
            f"this run would send about {total.tokens:,} LLM tokens ({total.calls} requests), more "
            "than "
            f"max_llm_tokens={budget}; lower n_latents, n_test_per_decile or windows, or raise "
            "max_llm_tokens"
        )


def explainer_estimate(run, counter: PromptCounter) -> Estimate:
    """The explainer's prompts for the latents this process explains (none for the token-list
    explainer)."""
    from sae_interp_tasks.stages.explainers import explainer_prompt

    cfg = run.settings.explainer
    total = Estimate()
    if not cfg.uses_llm:
        return total
    for lat in run.owned:
        prompt = explainer_prompt(
            run.splits[lat].train, run.decode, cfg.highlight_threshold, cfg.explainer_max_tokens
        )
        total = total.add(
            counter.prompt(prompt, answer_tokens=min(cfg.explainer_max_tokens, ANSWER_TOKENS))
        )
    return total


# a one-line explanation ("Explanation: ..." of at most ~20 words) as the explainers write it
ANSWER_TOKENS = 24
