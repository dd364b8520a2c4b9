"""Self-explanation: the subject model explains a latent patched into its own residual stream.

SelfIE / Patchscopes applied to SAE latents (docs/methods.md, "Self-explanation"). A chat prompt
holds a placeholder token; on the prompt's first forward pass, the residual stream entering
`patch_layer` at the placeholder positions is replaced by scale x the latent's unit direction,
then the model generates (the KV cache carries the patch; later steps are not patched).
For each scale of a sweep we measure
  - self-similarity: cosine(residual leaving `probe_layer` at the last prompt token, direction),
  - entropy of the first generated token's distribution,
and rank scales by alpha * norm(selfsim) - (1 - alpha) * norm(entropy) (min-max over the sweep).
All (latent, scale, sample) rows are generated in batches; the prompt part before the first
placeholder is computed once and its KV cache shared by every row.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from sae_interp_tasks.errors import SaeInterpError
from sae_interp_tasks.stages.selfexplain_prompts import (
    PromptIds,
    SelfExplainConfig,
    render_prompt,
    unit_directions,
)


@dataclass
class SweepResult:
    """Per (latent, scale): selfsim, entropy; per (latent, scale, sample): generated text."""

    latents: list[int]
    scales: np.ndarray  # [S] absolute scales
    selfsim: np.ndarray  # [R, S]
    entropy: np.ndarray  # [R, S]
    texts: list[list[list[str]]]  # [R][S][n_samples]
    first_tokens: list[list[list[int]]] = field(default_factory=list)


def _expand_cache(cache, n: int):
    for entry in cache.entries:
        entry.past_keys = entry.past_keys.expand(n, -1, -1, -1).contiguous()
        entry.past_values = entry.past_values.expand(n, -1, -1, -1).contiguous()
    cache.previous_attention_mask = cache.previous_attention_mask.expand(n, -1).contiguous()
    return cache


def _repeat_cache(cache, k: int):
    for entry in cache.entries:
        entry.past_keys = entry.past_keys.repeat_interleave(k, dim=0)
        entry.past_values = entry.past_values.repeat_interleave(k, dim=0)
    cache.previous_attention_mask = cache.previous_attention_mask.repeat_interleave(k, dim=0)
    return cache


def _clone_cache(cache):
    import copy

    new = copy.copy(cache)
    new.entries = [copy.copy(e) for e in cache.entries]
    return new


def typical_norm(model, prompt: PromptIds, layer: int) -> float:
    """Mean residual norm entering `layer` over the prompt's tokens (the first, an attention sink,
    left out)."""
    _, cache = model.run_with_cache(
        prompt.tokens[None].to(model.cfg.device),
        names_filter=f"blocks.{layer}.hook_resid_pre",
        stop_at_layer=layer + 1,
        return_type=None,
    )
    return float(cache[f"blocks.{layer}.hook_resid_pre"][0, 1:].norm(dim=-1).mean())


def _prefix_cache(model, prompt: PromptIds) -> tuple:
    """(KV cache of the prompt before its first placeholder, computed once; the rest of the prompt;
    the placeholder positions within that rest)."""
    from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache

    device = model.cfg.device
    split = min(prompt.positions)
    prefix, rest = prompt.tokens[:split].to(device), prompt.tokens[split:].to(device)
    base = TransformerLensKeyValueCache.init_cache(model.cfg, device, 1)
    if len(prefix):
        model(prefix[None], past_kv_cache=base)  # the shared prefix, computed once
    return base, rest, [p - split for p in prompt.positions]


def _selfsim_entropy(last: torch.Tensor, logits: torch.Tensor, directions: torch.Tensor) -> tuple:
    """Per row: cosine of the probed residual to the patched direction, and the entropy of the
    first generated token's distribution."""
    sims = F.cosine_similarity(last, directions.to(last), dim=-1).cpu().numpy()
    logp = F.log_softmax(logits[:, -1].float(), dim=-1)
    return sims, (-(logp.exp() * logp).sum(-1)).cpu().numpy()


@torch.no_grad()
def sweep(
    model,
    prompt: PromptIds,
    directions: torch.Tensor,
    latents: list[int],
    scales: np.ndarray,
    cfg: SelfExplainConfig,
    seed: int,
    progress: bool = True,
    generate: bool = True,
    desc: str = "self-explanation sweep",
) -> SweepResult:
    """Batched generation for every (latent, scale, sample); the shared prompt prefix runs once.
    With generate=False only self-similarity and entropy are measured (texts stay empty)."""
    device = model.cfg.device
    patch_hook, probe_hook = _hooks(model, cfg)
    n_samples = 1 if cfg.temperature <= 0 else cfg.n_samples
    base, rest, rel_positions = _prefix_cache(model, prompt)
    rows = [(r, s) for r in range(len(latents)) for s in range(len(scales))]
    selfsim = np.zeros((len(latents), len(scales)))
    entropy = np.zeros((len(latents), len(scales)))
    texts = [[[] for _ in scales] for _ in latents]
    gen = torch.Generator(device="cpu").manual_seed(seed)
    eos = _stop_ids(model.tokenizer)
    bar = tqdm(total=len(rows), unit="rows", desc=desc, disable=not progress)
    for start in range(0, len(rows), cfg.selfexplain_batch_size):
        chunk = rows[start : start + cfg.selfexplain_batch_size]
        b = len(chunk)
        vectors = torch.stack([directions[r] * float(scales[s]) for r, s in chunk]).to(
            device, model.cfg.dtype
        )
        cache = _expand_cache(_clone_cache(base), b)
        logits, last = _patched_forward(
            model, rest[None].expand(b, -1), cache, vectors, rel_positions, patch_hook, probe_hook
        )
        sims, ents = _selfsim_entropy(last, logits, torch.stack([directions[r] for r, _ in chunk]))
        for (r, s), sim, ent in zip(chunk, sims, ents, strict=True):
            selfsim[r, s], entropy[r, s] = sim, ent
        if not generate:
            bar.update(b)
            continue

        # generation: n_samples per row, sharing the patched prompt's cache
        out = _generate(
            model,
            _repeat_cache(cache, n_samples),
            logits[:, -1].repeat_interleave(n_samples, dim=0),
            cfg,
            gen,
            eos,
        )
        for i, (r, s) in enumerate(chunk):
            rows_out = out[i * n_samples : (i + 1) * n_samples]
            texts[r][s] += [clean_generation(model.tokenizer, o.tolist(), eos) for o in rows_out]
        bar.update(b)
    bar.close()
    return SweepResult(
        latents=list(latents), scales=scales, selfsim=selfsim, entropy=entropy, texts=texts
    )


def _hooks(model, cfg: SelfExplainConfig) -> tuple[str, str]:
    """The hook the latent is patched in at and the one self-similarity is read at."""
    patch_hook = f"blocks.{cfg.patch_layer}.hook_resid_pre"
    probe_layer = cfg.probe_layer if cfg.probe_layer is not None else (2 * model.cfg.n_layers) // 3
    probe_hook = f"blocks.{probe_layer}.hook_resid_post"
    for hook in (patch_hook, probe_hook):
        if hook not in model.hook_dict:
            raise SaeInterpError(
                f"{hook} does not exist in {model.cfg.model_name} ({model.cfg.n_layers} layers); "
                "lower patch_layer / probe_layer"
            )
    return patch_hook, probe_hook


def _patched_forward(
    model,
    tokens: torch.Tensor,
    cache,
    vectors: torch.Tensor,
    positions: list[int],
    patch_hook: str,
    probe_hook: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The prompt's rest after the cached prefix, with each row's vector at the placeholder
    positions: (logits, the probe layer's residual at the last token)."""
    captured = {}

    def patch(resid, hook):
        resid[:, positions] = vectors[:, None, :]
        return resid

    def probe(resid, hook):
        captured["last"] = resid[:, -1].float()
        return resid

    logits = model.run_with_hooks(
        tokens, past_kv_cache=cache, fwd_hooks=[(patch_hook, patch), (probe_hook, probe)]
    )
    return logits, captured["last"]


def _stop_ids(tokenizer) -> set[int]:
    """End of text and, for chat models that have it, end of turn."""
    eos = {tokenizer.eos_token_id}
    if "<|im_end|>" in tokenizer.get_vocab():
        eos.add(tokenizer.convert_tokens_to_ids("<|im_end|>"))
    return eos


def _generate(
    model,
    cache,
    next_logits: torch.Tensor,
    cfg: SelfExplainConfig,
    gen: torch.Generator,
    eos: set[int],
) -> torch.Tensor:
    """Up to max_new_tokens tokens for each row [rows, steps], continuing the patched prompt's
    cache; sampled at `temperature` with `gen` (greedy at 0); stops early once every row has
    ended."""
    device = next_logits.device
    out = torch.zeros(next_logits.shape[0], 0, dtype=torch.long, device=device)
    done = torch.zeros(next_logits.shape[0], dtype=torch.bool, device=device)
    for step in range(cfg.max_new_tokens):
        if cfg.temperature <= 0:
            nxt = next_logits.argmax(-1)
        else:
            probs = F.softmax(next_logits.float().cpu() / cfg.temperature, dim=-1)
            nxt = torch.multinomial(probs, 1, generator=gen)[:, 0].to(device)
        out = torch.cat([out, nxt[:, None]], dim=1)
        done |= torch.isin(nxt, torch.tensor(sorted(eos), device=device))
        if bool(done.all()) or step == cfg.max_new_tokens - 1:
            break
        next_logits = model(nxt[:, None], past_kv_cache=cache)[:, -1]
    return out


def null_selfsim_threshold(
    model, prompt: PromptIds, scales: np.ndarray, cfg: SelfExplainConfig, seed: int
) -> float:
    """The null_quantile of peak self-similarity over random unit directions, swept like a latent.

    Self-similarity levels differ between models and layers (the source post notes layer-specific
    thresholds); a latent whose peak stays below what random directions reach is a failure.
    """
    gen = torch.Generator().manual_seed(seed)
    directions = F.normalize(
        torch.randn(cfg.n_null_directions, model.cfg.d_model, generator=gen), dim=-1
    )
    res = sweep(
        model,
        prompt,
        directions,
        list(range(cfg.n_null_directions)),
        scales,
        cfg,
        seed,
        generate=False,
        desc="self-explanation threshold (random directions)",
    )
    return float(np.quantile(res.selfsim.max(axis=1), cfg.null_quantile))


def clean_generation(tokenizer, tokens: list[int], stop_ids: set) -> str:
    """Generated text up to the end of turn, and up to the closing quote the prompt opened."""
    cut = next((i for i, t in enumerate(tokens) if t in stop_ids), len(tokens))
    text = tokenizer.decode(tokens[:cut], skip_special_tokens=True)
    return text.split('"')[0].strip()


def minmax(x: np.ndarray) -> np.ndarray:
    span = x.max() - x.min()
    return np.zeros_like(x) if span <= 1e-12 else (x - x.min()) / span


def composite(selfsim: np.ndarray, entropy: np.ndarray, alpha: float) -> np.ndarray:
    """alpha * norm(selfsim) - (1 - alpha) * norm(entropy), normalised over one latent's sweep."""
    return alpha * minmax(selfsim) - (1 - alpha) * minmax(entropy)


def best_scales(selfsim: np.ndarray, entropy: np.ndarray, alpha: float, k: int) -> list[int]:
    scores = composite(selfsim, entropy, alpha)
    return [int(i) for i in np.argsort(-scores, kind="stable")[:k]]


# --- sweeping a run's latents over every template in use ------------------------------------------
def context_examples(record, decode, n: int, placeholder: str = "X") -> str:
    """The latent's top windows with the most active token replaced by the placeholder, one per
    line."""
    lines = []
    for ex in record.top[:n]:
        toks = ex.tokens.tolist()
        peak = int(np.argmax(ex.acts))
        lead = " " if decode([toks[peak]]).startswith(" ") else ""
        text = decode(toks[:peak]) + f'{lead}"{placeholder}"' + decode(toks[peak + 1 :])
        lines.append("- " + " ".join(text.split()))
    return "\n".join(lines)


def run_sweeps(
    model, sae, latents: list[int], record_of: Callable, decode, cfg: SelfExplainConfig, seed: int
) -> tuple[dict, float]:
    """{template: {latent: per-latent sweep summary}} for every template in use, and the peak
    self-similarity below which a latent counts as a failure (calibrated on the explain template).
    `record_of(latent)` gives a latent's pass record (the in-context template shows its top
    windows)."""
    directions = unit_directions(sae, latents, cfg.direction)
    templates = cfg.template_map()

    def prompt_and_scales(template: dict, lat: int | None = None):
        """The rendered prompt (an in-context template shows `lat`'s top windows) and its absolute
        scales."""
        if "{examples}" in template["user"]:
            text = context_examples(record_of(lat), decode, cfg.n_context_examples)
            prompt = render_prompt(model.tokenizer, template, text, n_inserted=text.count("\n") + 1)
        else:
            prompt = render_prompt(model.tokenizer, template)
        return prompt, np.linspace(cfg.scale_min, cfg.scale_max, cfg.n_scales) * typical_norm(
            model, prompt, cfg.patch_layer
        )

    out = {}
    for name in dict.fromkeys(list(cfg.use_templates) + [cfg.explain_template]):
        template = templates[name]
        if "{examples}" in template["user"]:  # one prompt per latent
            per_latent = {}
            for i, lat in enumerate(
                tqdm(latents, unit="latents", desc=f"self-explanation sweep ({name})")
            ):
                prompt, scales = prompt_and_scales(template, lat)
                res = sweep(
                    model, prompt, directions[i : i + 1], [lat], scales, cfg, seed, progress=False
                )
                per_latent[lat] = summarize(res, 0, cfg)
            out[name] = per_latent
        else:
            prompt, scales = prompt_and_scales(template)
            res = sweep(
                model,
                prompt,
                directions,
                latents,
                scales,
                cfg,
                seed,
                desc=f"self-explanation sweep ({name})",
            )
            out[name] = {lat: summarize(res, i, cfg) for i, lat in enumerate(latents)}
    threshold = cfg.min_selfsim
    if (
        threshold is None and latents
    ):  # on the explain template's prompt (in context: the first latent's)
        prompt, scales = prompt_and_scales(templates[cfg.explain_template], latents[0])
        threshold = null_selfsim_threshold(model, prompt, scales, cfg, seed)
    return out, threshold


def summarize(res: SweepResult, row: int, cfg: SelfExplainConfig) -> dict:
    chosen = best_scales(res.selfsim[row], res.entropy[row], cfg.alpha, cfg.top_scales)
    comp = composite(res.selfsim[row], res.entropy[row], cfg.alpha)
    return {
        "scales": [round(float(x), 3) for x in res.scales],
        "selfsim": [round(float(x), 4) for x in res.selfsim[row]],
        "entropy": [round(float(x), 4) for x in res.entropy[row]],
        "composite": [round(float(x), 4) for x in comp],
        "chosen_scales": chosen,
        "generations": {str(i): res.texts[row][i] for i in range(len(res.scales))},
        "explanation": next((t for i in chosen for t in res.texts[row][i] if t.strip()), ""),
        "peak_selfsim": float(res.selfsim[row].max()),
    }
