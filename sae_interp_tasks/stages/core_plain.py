"""sae_core's plain method: one chunk's statistics from three full hooked forwards (clean,
spliced, zero-ablated) and the full next-token distributions, kept as the reference the tests
compare `core.chunk_stats` (one encode, the spliced forward from the hook on, the KL divergences
without a vocabulary-sized tensor kept) with, and the benchmark's baseline."""

from __future__ import annotations

import torch

from sae_interp_tasks.stages.core import (
    CoreStats,
    _contexts_firing,
    _next_token_ce,
    _stats,
    special_ids,
)


@torch.no_grad()
def three_forward_chunk_stats(
    model, sae, hook_name: str, tokens: torch.Tensor, special: list[int] | None = None
) -> CoreStats:
    """One chunk's statistics from three full hooked forwards (clean, spliced, zero-ablated)."""
    special = special_ids(model.tokenizer) if special is None else special
    keep = ~torch.isin(tokens, torch.tensor(special, dtype=tokens.dtype, device=tokens.device))
    captured = {}

    def capture(x, hook):
        captured["x"] = x.detach()
        return x

    def splice(x, hook):
        recon = sae.decode(sae.encode(x.to(sae.W_dec.dtype))).to(x.dtype)
        return torch.where(keep[..., None], recon, x)

    def zero(x, hook):
        return torch.zeros_like(x)

    clean = model.run_with_hooks(tokens, fwd_hooks=[(hook_name, capture)])
    spliced = model.run_with_hooks(tokens, fwd_hooks=[(hook_name, splice)])
    zeroed = model.run_with_hooks(tokens, fwd_hooks=[(hook_name, zero)])

    def kl(new: torch.Tensor) -> torch.Tensor:  # per position, from the full distributions
        logp = torch.log_softmax(clean.double(), -1)
        return (logp.exp() * (logp - torch.log_softmax(new.double(), -1))).sum(-1)[keep]

    full = captured["x"].to(sae.W_dec.dtype)
    x = full[keep]
    acts = sae.encode(x)
    return _stats(
        x,
        acts,
        sae.decode(acts),
        _next_token_ce(clean, tokens, keep),
        _next_token_ce(spliced, tokens, keep),
        _next_token_ce(zeroed, tokens, keep),
        kl=(kl(spliced), kl(zeroed)),
        contexts_firing=_contexts_firing(sae.encode(full), keep),
        positions=int(tokens.numel()),
    )
