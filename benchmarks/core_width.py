"""sae_core's memory at large width: one chunk (8 contexts of 256 tokens of the stdlib corpus) of
the bundled model at the demo's hook, with a TopK SAE (k = 32, random unit directions, sae_lens's
`TopKSAE`) of each width, in a fresh process each: seconds and peak RSS, encoded in blocks (the
default above `core.MAX_CODE_FLOATS` code entries a chunk) and, where it fits, in one piece.

    python benchmarks/core_width.py [--widths 73728 1048576]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import _common

CHILD = r"""
import json, sys, time
import torch
sys.path.insert(0, sys.argv[3])
import _common
from sae_lens import TopKSAE, TopKSAEConfig
from sae_interp_tasks.stages import core
from sae_interp_tasks.stages.corpus import CorpusSpec, token_contexts

width, blocked = int(sys.argv[1]), sys.argv[2] == "blocked"
model, demo, info = _common.demo()
loaded = _common.peak_rss_mb()
cfg = TopKSAEConfig(d_in=576, d_sae=width, k=32, apply_b_dec_to_input=True)
sae = TopKSAE(cfg)
gen = torch.Generator().manual_seed(0)
with torch.no_grad():
    for start in range(0, width, 65536):  # unit rows, a slice at a time
        rows = torch.randn(min(65536, width - start), 576, generator=gen)
        rows /= rows.norm(dim=-1, keepdim=True)
        sae.W_dec[start : start + len(rows)] = rows
        sae.W_enc[:, start : start + len(rows)] = rows.T
    sae.b_enc.zero_()
    sae.b_dec.zero_()
sae.eval()
with_weights = _common.peak_rss_mb()
if not blocked:
    core.MAX_CODE_FLOATS = float("inf")
contexts = token_contexts(CorpusSpec("stdlib"), model.tokenizer, 8 * 256, 256, True, 0)
tokens = torch.stack(list(contexts))
special = core.special_ids(model.tokenizer)
reference = core.chunk_reference(model, info.hook_name, tokens, special)
start = time.perf_counter()
with torch.no_grad():
    stats = core.chunk_stats(model, sae, info.hook_name, tokens, reference, special)
seconds = time.perf_counter() - start
print(json.dumps({"width": width, "blocked": blocked, "seconds": seconds,
                  "rss_model_mb": loaded, "rss_weights_mb": with_weights,
                  "peak_rss_mb": _common.peak_rss_mb(), "l0": stats.l0_sum / stats.n_tokens,
                  "mse": stats.sq_err_sum / stats.n_tokens}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--widths", type=int, nargs="+", default=[73_728, 1_048_576])
    ap.add_argument("--one-piece-up-to", type=int, default=73_728)
    args = ap.parse_args()
    rows = []
    for width in args.widths:
        for mode in ("blocked", "one piece"):
            if mode == "one piece" and width > args.one_piece_up_to:
                continue
            proc = subprocess.run(
                [
                    sys.executable,
                    "-c",
                    CHILD,
                    str(width),
                    mode.split()[0],
                    str(Path(__file__).parent),
                ],
                capture_output=True,
                text=True,
            )
            if proc.returncode != 0:
                sys.exit(f"error: width {width} ({mode}) failed: {proc.stderr[-2000:]}")
            row = json.loads(proc.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(
                f"width {width:>9,} {mode:>9}: {row['seconds']:6.1f} s, peak RSS "
                f"{row['peak_rss_mb'] / 1024:.2f} GB (model {row['rss_model_mb'] / 1024:.2f} GB, "
                f"with the SAE's weights {row['rss_weights_mb'] / 1024:.2f} GB), "
                f"L0 {row['l0']:.1f}",
                flush=True,
            )
    _common.save("core_width", {"machine": _common.machine(), "rows": rows})


if __name__ == "__main__":
    main()
