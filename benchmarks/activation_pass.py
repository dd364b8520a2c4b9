"""Tokens/s and peak memory of the activation pass on the embedded default, against a naive pass.

Ours: the model runs only up to the hook layer, the SAE encodes only the requested latents
(16, 256, all), per-latent state is bounded. Naive: a full model forward, the full encode, and
every nonzero activation kept. Each configuration runs in a fresh subprocess so its peak RSS
is its own; all run in this one invocation on the same tokens.

    python benchmarks/activation_pass.py --n-tokens 32768
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import _common  # noqa: E402


def run_ours(n_latents: int | None, n_tokens: int, batch_size: int) -> dict:
    import torch

    from sae_interp_tasks.activations import PassConfig, run_activation_pass
    from sae_interp_tasks.corpus import CorpusSpec

    model, sae, info = _common.demo()
    base_rss = _common.peak_rss_mb()
    latents = None if n_latents is None else torch.randperm(info.d_sae, generator=torch.Generator().manual_seed(0))[:n_latents]
    cfg = PassConfig(n_tokens=n_tokens, pass_batch_size=1)
    with tempfile.TemporaryDirectory() as cache:
        start = time.perf_counter()
        state = run_activation_pass(model, sae, info, CorpusSpec(), cfg, 0, batch_size, latents=latents,
                                    cache_dir=Path(cache), progress=False)
        seconds = time.perf_counter() - start
    kept = sum(v.numel() * v.element_size() for v in state.to_dict().values() if isinstance(v, torch.Tensor))
    return {"seconds": seconds, "tokens_per_s": n_tokens / seconds, "peak_rss_mb": _common.peak_rss_mb(),
            "rss_after_load_mb": base_rss, "kept_state_mb": kept / 2**20}


def run_naive(n_tokens: int, batch_size: int) -> dict:
    import torch

    from sae_interp_tasks.corpus import CorpusSpec, token_contexts

    model, sae, info = _common.demo()
    base_rss = _common.peak_rss_mb()
    rows, cols, vals = [], [], []
    start = time.perf_counter()
    batch = []
    offset = 0

    def flush():
        nonlocal offset
        tokens = torch.stack(batch)
        with torch.no_grad():
            _, cache = model.run_with_cache(tokens, names_filter=info.hook_name)  # full forward
            acts = sae.encode(cache[info.hook_name]).flatten(0, 1)  # full encode
        nz = acts.nonzero()
        rows.append(nz[:, 0] + offset)
        cols.append(nz[:, 1])
        vals.append(acts[nz[:, 0], nz[:, 1]])
        offset += acts.shape[0]
        batch.clear()

    for ctx in token_contexts(CorpusSpec(), model.tokenizer, n_tokens, 256, info.prepend_bos, 0):
        batch.append(ctx)
        if len(batch) == batch_size:
            flush()
    if batch:
        flush()
    seconds = time.perf_counter() - start
    kept = sum(t.numel() * t.element_size() for t in rows + cols + vals)
    return {"seconds": seconds, "tokens_per_s": n_tokens / seconds, "peak_rss_mb": _common.peak_rss_mb(),
            "rss_after_load_mb": base_rss, "kept_state_mb": kept / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-tokens", type=int, default=32768)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, _, n = args.child.partition(":")
        out = run_naive(args.n_tokens, args.batch_size) if kind == "naive" else run_ours(int(n) if n else None, args.n_tokens, args.batch_size)
        print(json.dumps(out))
        return
    configs = [("ours, 16 latents", "ours:16"), ("ours, 256 latents", "ours:256"), ("ours, all latents", "ours:"),
               ("naive (full forward + full encode + all nonzeros)", "naive:")]
    results = {}
    for label, child in configs:
        proc = subprocess.run([sys.executable, __file__, "--child", child, "--n-tokens", str(args.n_tokens),
                               "--batch-size", str(args.batch_size)], capture_output=True, text=True, check=True)
        results[label] = json.loads(proc.stdout.strip().splitlines()[-1])
    naive = results[configs[-1][0]]
    print(f"activation pass, embedded default, {args.n_tokens} tokens, batch {args.batch_size}; {_common.machine()}\n")
    print("| configuration | tokens/s | speedup vs naive | peak RSS (MB) | RSS after model load (MB) | kept state (MB) |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, r in results.items():
        print(f"| {label} | {r['tokens_per_s']:.0f} | {r['tokens_per_s'] / naive['tokens_per_s']:.2f}x | "
              f"{r['peak_rss_mb']:.0f} | {r['rss_after_load_mb']:.0f} | {r['kept_state_mb']:.1f} |")
    _common.save("activation_pass", {"n_tokens": args.n_tokens, "machine": _common.machine(), "results": results})


if __name__ == "__main__":
    main()
