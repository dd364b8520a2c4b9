"""Latents per minute of the self-explanation sweep on the embedded default, against the naive loop.

Ours: every (latent, scale) row in batches, the shared prompt prefix computed once, KV cache.
Naive: one TransformerLens `generate` call per latent and scale. Same latents, scales, prompt
and greedy decoding, in this one run; the script also checks both give the same texts.

    python benchmarks/selfexplain.py --latents 8 --scales 16
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
import _common


def main() -> None:
    from sae_interp_tasks.stages.selfexplain import sweep, typical_norm
    from sae_interp_tasks.stages.selfexplain_naive import naive_generate
    from sae_interp_tasks.stages.selfexplain_prompts import (
        DEFAULT_TEMPLATES,
        SelfExplainConfig,
        render_prompt,
        unit_directions,
    )

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latents", type=int, default=8)
    parser.add_argument("--scales", type=int, default=16)
    parser.add_argument(
        "--naive-latents", type=int, default=2, help="latents timed in the naive loop (it is slow)"
    )
    parser.add_argument("--max-new-tokens", type=int, default=12)
    args = parser.parse_args()

    model, sae, info = _common.demo()
    cfg = SelfExplainConfig(
        temperature=0.0, n_scales=args.scales, max_new_tokens=args.max_new_tokens
    )
    latents = torch.randperm(info.d_sae, generator=torch.Generator().manual_seed(0))[
        : args.latents
    ].tolist()
    prompt = render_prompt(model.tokenizer, DEFAULT_TEMPLATES["meaning"])
    scales = np.linspace(cfg.scale_min, cfg.scale_max, cfg.n_scales) * typical_norm(
        model, prompt, cfg.patch_layer
    )
    dirs = unit_directions(sae, latents, cfg.direction)

    start = time.perf_counter()
    result = sweep(model, prompt, dirs, latents, scales, cfg, seed=0, progress=False)
    ours = time.perf_counter() - start

    n_naive = min(args.naive_latents, len(latents))
    start = time.perf_counter()
    naive_texts = [
        [naive_generate(model, prompt, dirs[i], float(s), cfg) for s in scales]
        for i in range(n_naive)
    ]
    naive = time.perf_counter() - start
    same = sum(
        naive_texts[i][j] == result.texts[i][j][0]
        for i in range(n_naive)
        for j in range(len(scales))
    )

    ours_lpm = 60 * len(latents) / ours
    naive_lpm = 60 * n_naive / naive
    print(
        f"self-explanation sweep, embedded default, {args.scales} scales, {args.max_new_tokens} "
        "new tokens, greedy; "
        f"{_common.machine()}\n"
    )
    print("| method | latents | seconds | latents/min |")
    print("|---|---:|---:|---:|")
    print(f"| batched sweep (ours) | {len(latents)} | {ours:.1f} | {ours_lpm:.2f} |")
    print(
        f"| naive loop (one generate per latent x scale) | {n_naive} | {naive:.1f} | "
        f"{naive_lpm:.2f} |"
    )
    print(
        f"\nspeedup: {ours_lpm / naive_lpm:.1f}x; identical generations: "
        f"{same}/{n_naive * len(scales)}"
    )
    _common.save(
        "selfexplain",
        {
            "latents": len(latents),
            "scales": args.scales,
            "ours_s": ours,
            "naive_s": naive,
            "naive_latents": n_naive,
            "speedup": ours_lpm / naive_lpm,
            "identical": same,
            "compared": n_naive * len(scales),
            "machine": _common.machine(),
        },
    )


if __name__ == "__main__":
    main()
