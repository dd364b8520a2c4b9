"""The self-explanation sweep's reference: one latent at one scale with TransformerLens's own
generate, no shared prefix, no KV cache (every step re-runs the whole sequence, patched again). The
baseline of benchmarks/selfexplain.py and what the tests hold the batched sweep against."""

from __future__ import annotations

import torch

from sae_interp_tasks.stages.selfexplain import clean_generation
from sae_interp_tasks.stages.selfexplain_prompts import PromptIds, SelfExplainConfig


@torch.no_grad()
def naive_generate(
    model, prompt: PromptIds, direction: torch.Tensor, scale: float, cfg: SelfExplainConfig
) -> str:
    """One latent at one scale with TransformerLens's generate (no shared prefix, no batching).

    The baseline of benchmarks/selfexplain.py and the cache-free reference in tests: without a
    KV cache every step re-runs the whole sequence, patched again at the same positions.
    """
    patch_hook = f"blocks.{cfg.patch_layer}.hook_resid_pre"
    vector = (direction * scale).to(model.cfg.device, model.cfg.dtype)

    def patch(resid, hook):
        resid[:, prompt.positions] = vector
        return resid

    with model.hooks(fwd_hooks=[(patch_hook, patch)]):
        out = model.generate(
            prompt.tokens[None].to(model.cfg.device),
            max_new_tokens=cfg.max_new_tokens,
            do_sample=False,
            use_past_kv_cache=False,
            stop_at_eos=False,
            verbose=False,
            return_type="tokens",
        )
    eos = {model.tokenizer.eos_token_id}
    return clean_generation(model.tokenizer, out[0, len(prompt.tokens) :].tolist(), eos)
