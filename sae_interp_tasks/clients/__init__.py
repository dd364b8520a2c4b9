"""Clients for the explainer and scorer LLMs: in-process transformers (`hf`) or any
OpenAI-compatible endpoint (`openai`), both answering through one on-disk cache."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

from sae_interp_tasks.caching import cache_root
from sae_interp_tasks.clients.base import LLMClient
from sae_interp_tasks.clients.cache import CompletionCache
from sae_interp_tasks.clients.records import ClientConfig, Completion, Prompt
from sae_interp_tasks.errors import SaeInterpError


def _hf(cfg: ClientConfig, cache: CompletionCache) -> LLMClient:
    from sae_interp_tasks.clients.hf_client import HFClient

    return HFClient(cfg, cache)


def _openai(cfg: ClientConfig, cache: CompletionCache) -> LLMClient:
    from sae_interp_tasks.clients.openai_client import OpenAIClient

    return OpenAIClient(cfg, cache)


ClientFactory = Callable[[ClientConfig, CompletionCache], LLMClient]
# the kinds this package's clients serve; a caller adds others (the harness adds validity's oracle)
BUILTIN_KINDS: dict[str, ClientFactory] = {"hf": _hf, "openai": _openai}

__all__ = [
    "BUILTIN_KINDS",
    "ClientConfig",
    "ClientFactory",
    "Completion",
    "CompletionCache",
    "LLMClient",
    "Prompt",
    "make_client",
]


def make_client(
    cfg: ClientConfig,
    cache_dir: Path | None = None,
    kinds: Mapping[str, ClientFactory] | None = None,
) -> LLMClient:
    """The client `cfg.kind` names among `kinds` (default: the built-in ones), caching its answers
    under `cache_dir` (default: <cache root>/llm)."""
    kinds = BUILTIN_KINDS if kinds is None else kinds
    if cfg.kind not in kinds:
        raise SaeInterpError(
            f"unknown LLM client kind {cfg.kind!r}: valid kinds are {', '.join(kinds)}"
        )
    cfg.check()
    if cache_dir is None:
        cache_dir = cache_root() / "llm"
    return kinds[cfg.kind](cfg, CompletionCache(Path(cache_dir)))
