"""Time and peak memory of sae_similarity's dictionary comparison at growing widths.

Each width runs in a fresh process: two dictionaries of `width` latents over d_in = 576 (the
bundled model's residual stream), the second a permuted copy of the first with noise, compared as
the task compares them (max cosine of decoder and encoder rows, the random dictionary's chance
level, the one-to-one matching on top-k candidates). Peak RSS is the process's ru_maxrss.

    python benchmarks/similarity_scale.py 2048 16384 65536 \
        --out benchmarks/results/similarity_scale.txt
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, resource, sys, time
import numpy as np, torch
from sae_interp_tasks.stages.similarity import SimilarityConfig, compare
width, d = int(sys.argv[1]), 576
gen = torch.Generator().manual_seed(0)
dec_a = torch.randn(width, d, generator=gen); enc_a = torch.randn(width, d, generator=gen)
perm = torch.randperm(width, generator=gen)
noise = torch.randn(width, d, generator=gen) / d ** 0.5
dec_b = dec_a[perm] + 0.3 * noise * dec_a.norm(dim=-1, keepdim=True)[perm]
enc_b = enc_a[perm]
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
got = compare(dec_a, enc_a, dec_b, enc_b, SimilarityConfig(memory_gb=64.0), seed=0)
seconds = time.perf_counter() - start
own = torch.argsort(perm).numpy()
print(json.dumps({"width": width, "seconds": round(seconds, 1),
    "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
    "rss_before_compare_gb": round(base / 2**20, 2),
    "own_partner_frac": float((got.partner == own).mean()),
    "mean_mcs": round(float(got.mcs.mean()), 4),
    "mean_mcs_random": round(float(got.mcs_random.mean()), 4)}))
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("widths", nargs="+", type=int)
    ap.add_argument("--out")
    args = ap.parse_args()
    lines = []
    for width in args.widths:
        proc = subprocess.run(
            [sys.executable, "-c", CHILD, str(width)], capture_output=True, text=True, check=True
        )
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        print(json.dumps(row), flush=True)
        lines.append(json.dumps(row))
    if args.out:
        with open(args.out, "w") as fh:
            fh.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
