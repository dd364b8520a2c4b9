"""Clients for the explainer and scorer LLMs: in-process transformers (`hf`) or any
OpenAI-compatible endpoint (`openai`), both answering through one on-disk cache."""

from __future__ import annotations

from pathlib import Path

from sae_interp_tasks.caching import cache_root
from sae_interp_tasks.clients.base import LLMClient
from sae_interp_tasks.clients.cache import CompletionCache
from sae_interp_tasks.clients.records import ClientConfig, Completion, Prompt
from sae_interp_tasks.errors import SaeInterpError

KINDS = ("hf", "openai", "oracle")

__all__ = [
    "KINDS",
    "ClientConfig",
    "Completion",
    "CompletionCache",
    "LLMClient",
    "Prompt",
    "make_client",
]


def make_client(cfg: ClientConfig, cache_dir: Path | None = None) -> LLMClient:
    """The client `cfg.kind` names, caching its answers under `cache_dir` (default: <cache
    root>/llm)."""
    if cfg.kind not in KINDS:
        raise SaeInterpError(
            f"unknown LLM client kind {cfg.kind!r}: valid kinds are {', '.join(KINDS)}"
        )
    cfg.check()
    if cache_dir is None:
        cache_dir = cache_root() / "llm"
    cache = CompletionCache(Path(cache_dir))
    if cfg.kind == "hf":
        from sae_interp_tasks.clients.hf_client import HFClient

        return HFClient(cfg, cache)
    if cfg.kind == "oracle":  # a validity instrument: knows a known-answer SAE's planted meanings
        from sae_interp_tasks.validity.oracle import OracleClient

        return OracleClient(cfg, cache)
    from sae_interp_tasks.clients.openai_client import OpenAIClient

    return OpenAIClient(cfg, cache)
