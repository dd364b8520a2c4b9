"""Tokens/s and peak memory of the activation pass on the embedded default, against its floor and
peers.

- floor: the subject model's Hugging Face forward up to the hook layer and nothing else (no pass
  can run less of the model);
- TransformerLens's forward with `stop_at_layer` (what the pass ran on before);
- ours: the Hugging Face forward up to the hook (checked against TransformerLens once), the SAE
  encoding the requested latents (16, 256, all), per-latent state bounded by the sampling sizes;
- naive: a full TransformerLens forward, the full encode, every nonzero activation kept;
- EleutherAI delphi's `LatentCache` (a full Hugging Face forward, every nonzero kept), when
  `eai-delphi` is installed (optional: `pip install --no-deps eai-delphi` plus what its cache
  module imports; see benchmarks/README.md).
Each configuration runs in a fresh subprocess so its peak RSS is its own; all run in this one
invocation on the same tokens.

    python benchmarks/activation_pass.py --n-tokens 32768 --batch-size 16
    python benchmarks/activation_pass.py --configs ours --n-tokens 65536 --save-as
    activation_pass_64k python benchmarks/activation_pass.py --device cuda   # on a GPU (nothing
    else changes)
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
import _common


def demo_tokens(model, info, n_tokens: int):
    import torch

    from sae_interp_tasks.stages.corpus import CorpusSpec, token_contexts

    return torch.stack(
        list(token_contexts(CorpusSpec(), model.tokenizer, n_tokens, 256, info.prepend_bos, 0))
    )


def reader_of(model, info, device: str):
    import torch
    from transformers import AutoModelForCausalLM

    from sae_interp_tasks.bundled import bundled_hf_dir
    from sae_interp_tasks.stages.hf_forward import HFReader

    hf = AutoModelForCausalLM.from_pretrained(str(bundled_hf_dir())).eval().to(device)
    reader = HFReader.check(
        hf, model, info.hook_name, torch.tensor([[1, 504, 2891, 30, 1032, 288]], device=device)
    )
    assert reader is not None
    return reader


def result(seconds: float, n_tokens: int, base_rss: float, kept_mb: float) -> dict:
    return {
        "seconds": seconds,
        "tokens_per_s": n_tokens / seconds,
        "peak_rss_mb": _common.peak_rss_mb(),
        "rss_after_load_mb": base_rss,
        "kept_state_mb": kept_mb,
    }


def run_ours(n_latents: int | None, n_tokens: int, batch_size: int, device: str) -> dict:
    import torch

    from sae_interp_tasks.stages.activations import PassConfig, run_activation_pass
    from sae_interp_tasks.stages.corpus import CorpusSpec

    model, sae, info = _common.demo(device)
    reader = reader_of(model, info, device)
    base_rss = _common.peak_rss_mb()
    latents = (
        None
        if n_latents is None
        else torch.randperm(info.d_sae, generator=torch.Generator().manual_seed(0))[:n_latents]
    )
    cfg = PassConfig(n_tokens=n_tokens, pass_batch_size=1)
    with tempfile.TemporaryDirectory() as cache:
        start = time.perf_counter()
        state = run_activation_pass(
            model,
            sae,
            info,
            CorpusSpec(),
            cfg,
            0,
            batch_size,
            latents=latents,
            cache_dir=Path(cache),
            progress=False,
            read=reader.activations,
            forward="hf",
        )
        _common.sync(device)
        seconds = time.perf_counter() - start
    kept = sum(
        v.numel() * v.element_size()
        for v in state.to_dict().values()
        if isinstance(v, torch.Tensor)
    )
    return result(seconds, n_tokens, base_rss, kept / 2**20)


def run_forward(kind: str, n_tokens: int, batch_size: int, device: str) -> dict:
    """The floor (Hugging Face to the hook) or TransformerLens with stop_at_layer: the forward
    alone."""
    import torch

    from sae_interp_tasks.stages.activations import hook_activations

    model, _, info = _common.demo(device)
    tokens = demo_tokens(model, info, n_tokens)
    read = (
        reader_of(model, info, device).activations
        if kind == "floor"
        else (lambda t: hook_activations(model, info.hook_name, t))
    )
    base_rss = _common.peak_rss_mb()
    start = time.perf_counter()
    with torch.no_grad():
        for i in range(0, len(tokens), batch_size):
            read(tokens[i : i + batch_size].to(device))
    _common.sync(device)
    return result(time.perf_counter() - start, n_tokens, base_rss, 0.0)


def run_delphi(n_tokens: int, batch_size: int, device: str) -> dict:
    import torch
    from delphi.latents.cache import LatentCache
    from transformers import AutoModelForCausalLM

    from sae_interp_tasks.bundled import bundled_hf_dir

    model, sae, info = _common.demo(device)
    tokens = demo_tokens(model, info, n_tokens)
    hf = AutoModelForCausalLM.from_pretrained(str(bundled_hf_dir())).eval().to(device)
    # blocks.L.hook_resid_post is the output of model.layers.L
    layer = int(info.hook_name.split(".")[1])
    base_rss = _common.peak_rss_mb()
    cache = LatentCache(hf, {f"model.layers.{layer}": sae.encode}, batch_size=batch_size)
    start = time.perf_counter()
    cache.run(n_tokens, tokens)
    _common.sync(device)
    seconds = time.perf_counter() - start
    kept = sum(
        t.numel() * t.element_size()
        for t in (
            cache.cache.latent_locations.get(f"model.layers.{layer}"),
            cache.cache.latent_activations.get(f"model.layers.{layer}"),
        )
        if isinstance(t, torch.Tensor)
    )
    return result(seconds, n_tokens, base_rss, kept / 2**20)


def run_naive(n_tokens: int, batch_size: int, device: str) -> dict:
    import torch

    from sae_interp_tasks.stages.corpus import CorpusSpec, token_contexts

    model, sae, info = _common.demo(device)
    base_rss = _common.peak_rss_mb()
    rows, cols, vals = [], [], []
    start = time.perf_counter()
    batch = []
    offset = 0

    def flush():
        nonlocal offset
        tokens = torch.stack(batch).to(device)
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
    _common.sync(device)
    seconds = time.perf_counter() - start
    kept = sum(t.numel() * t.element_size() for t in rows + cols + vals)
    return {
        "seconds": seconds,
        "tokens_per_s": n_tokens / seconds,
        "peak_rss_mb": _common.peak_rss_mb(),
        "rss_after_load_mb": base_rss,
        "kept_state_mb": kept / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-tokens", type=int, default=32768)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument(
        "--repeats", type=int, default=1, help="runs per configuration; the fastest is reported"
    )
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument(
        "--configs",
        default="floor,tl,ours,ours:256,ours:16,naive,delphi",
        help="comma-separated rows to run (default: all); the first is the floor the others are "
        "divided by",
    )
    parser.add_argument(
        "--save-as", default="activation_pass", help="results/<name>.json (default: %(default)s)"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, _, n = args.child.partition(":")
        if kind == "naive":
            out = run_naive(args.n_tokens, args.batch_size, args.device)
        elif kind == "delphi":
            out = run_delphi(args.n_tokens, args.batch_size, args.device)
        elif kind in ("floor", "tl"):
            out = run_forward(kind, args.n_tokens, args.batch_size, args.device)
        else:
            out = run_ours(int(n) if n else None, args.n_tokens, args.batch_size, args.device)
        print(json.dumps(out))
        return
    labels = {
        "floor:": "floor: Hugging Face forward to the hook layer, nothing else",
        "tl:": "TransformerLens forward, stop_at_layer",
        "ours:": "ours, all latents",
        "ours:256": "ours, 256 latents",
        "ours:16": "ours, 16 latents",
        "naive:": "naive: full forward, full encode, every nonzero kept",
        "delphi:": "EleutherAI delphi LatentCache (full forward, every nonzero kept)",
    }
    wanted = [c if ":" in c else c + ":" for c in args.configs.split(",") if c]
    unknown = [c for c in wanted if c not in labels]
    if unknown:
        raise SystemExit(
            f"unknown --configs {', '.join(unknown)}; choose from "
            f"{', '.join(c.rstrip(':') for c in labels)}"
        )
    if "delphi:" in wanted:
        try:
            import delphi.latents.cache  # noqa: F401 (only whether delphi imports)
        except ImportError:
            wanted.remove("delphi:")
            print("(delphi row skipped: eai-delphi is not installed; see benchmarks/README.md)")
    configs = [(labels[c], c) for c in wanted]
    results = {}
    for _ in range(
        args.repeats
    ):  # interleaved, so a slow spell of the machine hits every row alike
        for label, child in configs:
            proc = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--child",
                    child,
                    "--n-tokens",
                    str(args.n_tokens),
                    "--batch-size",
                    str(args.batch_size),
                    "--device",
                    args.device,
                ],
                capture_output=True,
                text=True,
            )
            if proc.returncode != 0:
                raise SystemExit(f"{label} failed:\n{proc.stderr[-3000:]}")
            run = json.loads(proc.stdout.strip().splitlines()[-1])
            if label not in results or run["tokens_per_s"] > results[label]["tokens_per_s"]:
                results[label] = run
    floor = results[configs[0][0]]["tokens_per_s"]
    print(
        f"activation pass, embedded default, {args.n_tokens} tokens, 256-token contexts, batches "
        "of "
        f"{args.batch_size}, fastest of {args.repeats} runs each, device {args.device}; "
        f"{_common.machine()}\n"
    )
    print(
        f"| configuration | tokens/s | x {configs[0][1].rstrip(':')} | peak RSS (MB) | RSS after "
        "model load (MB) "
        "| kept state (MB) |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for label, r in results.items():
        print(
            f"| {label} | {r['tokens_per_s']:.0f} | {r['tokens_per_s'] / floor:.2f} | "
            f"{r['peak_rss_mb']:.0f} | {r['rss_after_load_mb']:.0f} | {r['kept_state_mb']:.1f} |"
        )
    _common.save(
        args.save_as,
        {
            "n_tokens": args.n_tokens,
            "device": args.device,
            "machine": _common.machine(),
            "results": results,
        },
    )


if __name__ == "__main__":
    main()
