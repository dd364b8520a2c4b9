"""The batched engine of the steering stage (stages/steering.py): prompts left-padded into one batch
on TransformerLens's KV cache, the edited last-token distribution, promoted tokens, and clean and
steered continuations sampled with the same random numbers. `naive_steered_generate` is the
cache-free, one-prompt reference the tests and the benchmark compare it with.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F


class Sampling(Protocol):
    """How continuations are sampled (steering.InterventionConfig has these)."""

    continuation_tokens: int
    continuation_temperature: float


class Steering:
    """A forward hook adding rows[b] * scales[b] to the hooked activation at every position of the
    current forward. With a KV cache a forward holds only new positions, so a cached generation is
    edited at the last prompt token and at every generated token, and nowhere else."""

    def __init__(self, vectors: torch.Tensor, scales: torch.Tensor):
        self.vectors, self.scales = vectors, scales

    def __call__(self, act, hook):
        shift = (self.vectors * self.scales.view(-1, *([1] * (self.vectors.dim() - 1)))).to(
            act.dtype
        )
        return act + shift.unsqueeze(1)


# --- the batched engine
# -----------------------------------------------------------------------------
@dataclass
class PromptBatch:
    """Prompts left-padded into one batch, with the KV cache of every position but the last (frozen)
    and the clean next-token log-distribution at the last."""

    tokens: torch.Tensor  # [B, T] left-padded
    mask: torch.Tensor  # [B, T]
    cache: object  # TransformerLensKeyValueCache over tokens[:, :-1], frozen
    clean_logp: torch.Tensor  # [B, vocab] float32


def prepare(model, prompts: list[np.ndarray]) -> PromptBatch:
    from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache

    device = model.cfg.device
    width = max(len(p) for p in prompts)
    pad = model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else 0
    tokens = torch.full((len(prompts), width), pad, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        tokens[i, width - len(p) :] = torch.as_tensor(p)
        mask[i, width - len(p) :] = 1
    tokens, mask = tokens.to(device), mask.to(device)
    cache = TransformerLensKeyValueCache.init_cache(model.cfg, device, len(prompts))
    with torch.no_grad():
        if width > 1:
            model(tokens[:, :-1], attention_mask=mask[:, :-1], past_kv_cache=cache)
        cache.freeze()
        logits = model(tokens[:, -1:], attention_mask=mask[:, -1:], past_kv_cache=cache)
    return PromptBatch(tokens, mask, cache, F.log_softmax(logits[:, -1].float(), dim=-1))


def steered_logp(
    model, hook_name: str, batch: PromptBatch, vectors: torch.Tensor, scales: torch.Tensor
) -> torch.Tensor:
    """The last prompt token's next-token log-distribution with the edit, [B, vocab]."""
    with torch.no_grad(), model.hooks(fwd_hooks=[(hook_name, Steering(vectors, scales))]):
        logits = model(
            batch.tokens[:, -1:], attention_mask=batch.mask[:, -1:], past_kv_cache=batch.cache
        )
    return F.log_softmax(logits[:, -1].float(), dim=-1)


def kl_clean_steered(clean_logp: torch.Tensor, steered: torch.Tensor) -> torch.Tensor:
    """KL(clean || steered) per row, in nats."""
    return (clean_logp.exp() * (clean_logp - steered)).sum(-1)


def promoted_tokens(
    clean_logp: torch.Tensor, steered: torch.Tensor, k: int
) -> list[tuple[int, float]]:
    """The k tokens whose probability the edit raises most on average over the rows."""
    gain = (steered.exp() - clean_logp.exp()).mean(0)
    values, ids = gain.topk(k)
    return [(int(i), float(v)) for i, v in zip(ids.tolist(), values.tolist(), strict=True)]


def coupled_uniforms(seed: int, latent: int, n_prompts: int, n_tokens: int) -> torch.Tensor:
    """Uniform draws [prompt, step] for sampling, a function of (seed, latent) alone: a clean and a
    steered continuation of one prompt use the same draws, whatever else shares the batch."""
    gen = torch.Generator().manual_seed(hash_seed(seed, latent))
    return torch.rand(n_prompts, n_tokens, generator=gen, dtype=torch.float64)


def hash_seed(*parts) -> int:
    import hashlib

    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "little") & (2**63 - 1)


def sample(logits: torch.Tensor, uniforms: torch.Tensor, temperature: float) -> torch.Tensor:
    """Inverse-CDF sampling: row b takes the token where its cumulative probability passes
    uniforms[b]."""
    probs = F.softmax(logits.double() / temperature, dim=-1)
    cdf = probs.cumsum(-1)
    picked = torch.searchsorted(cdf, uniforms[:, None].to(cdf.device).contiguous()).squeeze(-1)
    return picked.clamp(max=probs.shape[-1] - 1)


def generate_pairs(
    model,
    hook_name: str,
    batch: PromptBatch,
    vectors: torch.Tensor,
    scales: torch.Tensor,
    uniforms: torch.Tensor,
    cfg: Sampling,
    stop_ids: set[int],
) -> tuple[list[list[int]], list[list[int]]]:
    """Clean and steered continuations of every prompt row (same draws for both), with the edit at
    the last prompt token and at every generated token of the steered rows."""
    import copy

    cache = copy.copy(batch.cache)
    cache.entries = [copy.copy(e) for e in batch.cache.entries]
    for entry in cache.entries:  # rows [clean_0, steered_0, clean_1, ...] on an unfrozen copy
        entry.past_keys = entry.past_keys.repeat_interleave(2, dim=0)
        entry.past_values = entry.past_values.repeat_interleave(2, dim=0)
        entry.frozen = False
    cache.previous_attention_mask = batch.cache.previous_attention_mask.repeat_interleave(2, dim=0)
    cache.frozen = False
    device = model.cfg.device
    pair_vectors = vectors.repeat_interleave(2, dim=0).to(device)
    pair_scales = torch.stack([torch.zeros_like(scales), scales], dim=1).flatten().to(device)
    draws = uniforms.repeat_interleave(2, dim=0)
    nxt = batch.tokens[:, -1:].repeat_interleave(2, dim=0)
    mask = batch.mask[:, -1:].repeat_interleave(2, dim=0)
    out = []
    with torch.no_grad(), model.hooks(fwd_hooks=[(hook_name, Steering(pair_vectors, pair_scales))]):
        for step in range(cfg.continuation_tokens):
            logits = model(nxt, attention_mask=mask, past_kv_cache=cache)[:, -1]
            nxt = sample(logits, draws[:, step], cfg.continuation_temperature)[:, None]
            out.append(nxt[:, 0].cpu())
            mask = torch.ones_like(mask)
    tokens = torch.stack(out, dim=1).tolist()
    cut = [row[: next((i for i, t in enumerate(row) if t in stop_ids), len(row))] for row in tokens]
    return cut[0::2], cut[1::2]


def group_rows(
    batch: PromptBatch,
    rows: dict[int, slice],
    group: list[int],
    vec: dict[int, torch.Tensor],
    strengths: dict[int, float],
):
    """The rows of `batch` that belong to the latents of `group`, each row with its latent's
    steering vector and strength, and each latent's span of rows in that subset."""
    spans, start = {}, 0
    for lat in group:
        n = rows[lat].stop - rows[lat].start
        spans[lat], start = slice(start, start + n), start + n
    sub = subset(batch, torch.cat([torch.arange(rows[lat].start, rows[lat].stop) for lat in group]))
    row_vectors = torch.cat(
        [vec[lat].expand(spans[lat].stop - spans[lat].start, *vec[lat].shape) for lat in group]
    )
    scales = torch.cat(
        [torch.full((spans[lat].stop - spans[lat].start,), strengths[lat]) for lat in group]
    )
    return sub, row_vectors, scales, spans


def subset(batch: PromptBatch, rows: torch.Tensor) -> PromptBatch:
    import copy

    rows = rows.to(batch.tokens.device)
    cache = copy.copy(batch.cache)
    cache.entries = [copy.copy(e) for e in batch.cache.entries]
    for entry in cache.entries:
        entry.past_keys, entry.past_values = entry.past_keys[rows], entry.past_values[rows]
    cache.previous_attention_mask = batch.cache.previous_attention_mask[rows]
    return PromptBatch(batch.tokens[rows], batch.mask[rows], cache, batch.clean_logp[rows])


def naive_steered_generate(
    model,
    hook_name: str,
    prompt: np.ndarray,
    vector: torch.Tensor,
    scale: float,
    uniforms: torch.Tensor,
    cfg: Sampling,
) -> list[int]:
    """One prompt, no KV cache: every step reruns the whole sequence with the edit at the last
    prompt token and every generated position. The reference for tests and the naive benchmark
    row."""
    tokens = torch.as_tensor(prompt)[None].to(model.cfg.device)
    start = tokens.shape[1] - 1
    vector = vector.to(model.cfg.device)

    def edit(act, hook):
        act = act.clone()
        act[:, start:] = act[:, start:] + (scale * vector).to(act.dtype)
        return act

    out = []
    with torch.no_grad(), model.hooks(fwd_hooks=[(hook_name, edit)]):
        for step in range(cfg.continuation_tokens):
            logits = model(tokens)[:, -1]
            nxt = sample(logits, uniforms[step : step + 1], cfg.continuation_temperature)
            out.append(int(nxt[0]))
            tokens = torch.cat([tokens, nxt.view(1, 1).to(tokens.device)], dim=1)
    return out
