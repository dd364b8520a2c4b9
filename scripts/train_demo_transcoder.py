#!/usr/bin/env python
"""Train a small demo transcoder of the bundled model's MLP with EleutherAI's sparsify trainer.

A TopK transcoder (`transcode: true`: it predicts the output of `layers.6.mlp` of the bundled
SmolLM2-135M-Instruct from that module's input), `--latents` latents (4 x 576) and k = 32, trained
by `sparsify.Trainer` (its FVU loss, its default signum optimizer) on the Python-stdlib corpus in
256-token contexts, BOS first, the demo SAE's corpus. The checkpoint is sparsify's own folder
(`OUT/layers.6.mlp/{cfg.json,sae.safetensors}`) with a `config.json` beside it naming the subject
model, so `--model_args path=OUT,hookpoint=layers.6.mlp` scores it as written: it reads
`blocks.6.ln2.hook_normalized` (the norm's gain folded in) and writes `blocks.6.hook_mlp_out`.

Usage (from the repository root):
    HF_HUB_OFFLINE=1 .venv/bin/python scripts/train_demo_transcoder.py [--n-tokens 262144]
        [--out ~/.cache/sae_interp_tasks/demo_transcoder]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run from a checkout without installing the package
    sys.path.insert(0, str(REPO))

from sae_interp_tasks.bundled import BUNDLED_MODEL, bundled_hf_dir  # noqa: E402 (after the sys.path line)
from sae_interp_tasks.caching import cache_root  # noqa: E402 (after the sys.path line)
from sae_interp_tasks.stages.corpus import CorpusSpec, token_contexts  # noqa: E402 (after the sys.path line)

log = logging.getLogger("train_demo_transcoder")
HOOKPOINT = "layers.6.mlp"
CONTEXT_SIZE = 256


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n-tokens", type=int, default=262_144)
    ap.add_argument("--latents", type=int, default=2304)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=8, help="contexts a step")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from datasets import Dataset
    from sparsify import SparseCoderConfig, TrainConfig, Trainer
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = args.out or cache_root() / "demo_transcoder"
    torch.manual_seed(args.seed)
    hf_dir = bundled_hf_dir()
    tokenizer = AutoTokenizer.from_pretrained(str(hf_dir))
    model = AutoModelForCausalLM.from_pretrained(str(hf_dir), dtype=torch.float32)
    contexts = token_contexts(
        CorpusSpec("stdlib"), tokenizer, args.n_tokens, CONTEXT_SIZE, True, args.seed
    )
    rows = [c.tolist() for c in contexts]
    dataset = Dataset.from_dict({"input_ids": rows}).with_format("torch")
    cfg = TrainConfig(
        SparseCoderConfig(num_latents=args.latents, k=args.k, transcode=True),
        batch_size=args.batch_size,
        hookpoints=[HOOKPOINT],
        lr_warmup_steps=10,
        log_to_wandb=False,
        save_every=10_000,
        save_dir=str(out.parent),
        run_name=out.name,
        init_seeds=[args.seed],
    )
    start = time.perf_counter()
    Trainer(cfg, dataset, model).fit()
    seconds = time.perf_counter() - start
    run_config = out / "config.json"  # sparsify's run config, with the subject model it lacks
    saved = json.loads(run_config.read_text()) if run_config.exists() else {}
    run_config.write_text(json.dumps({**saved, "model": BUNDLED_MODEL}, indent=1))
    log.info("trained on %d contexts in %.0f s; saved to %s", len(rows), seconds, out)


if __name__ == "__main__":
    main()
