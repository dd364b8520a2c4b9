"""Wall time of `sae-interp leaderboard` over the committed runs, whole process, and
which heavy libraries the process ended with; optionally against another checkout of this
repository (e.g. one from before the readers stopped importing torch), runs interleaved A B A B.

    python benchmarks/leaderboard_time.py [--vs OTHER_CHECKOUT] [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "lm_eval", "transformers", "transformer_lens", "sae_lens", "sklearn")
PROGRAM = """
import json, sys
from sae_interp_tasks.cli import main
code = main(["leaderboard", sys.argv[1], "-o", sys.argv[2]])
loaded = [m for m in json.loads(sys.argv[3]) if m in sys.modules]
print(json.dumps({"code": code, "loaded": loaded}))
"""


def one_run(checkout: Path, out: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", PROGRAM, str(REPO / "benchmarks/results/runs"), str(out)]
        + [json.dumps(HEAVY)],
        capture_output=True,
        text=True,
        env=env,
        cwd=checkout,
    )
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{checkout}: leaderboard failed\n{proc.stderr[-2000:]}")
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"wall": wall, "loaded": got["loaded"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vs", type=Path, help="another checkout of this repository")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    checkouts = {"this checkout": REPO} | ({"--vs": args.vs.resolve()} if args.vs else {})
    times: dict[str, list[float]] = {name: [] for name in checkouts}
    loaded: dict[str, list[str]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for checkout in checkouts.values():  # warm-up: file caches, .pyc
            one_run(checkout, Path(tmp) / "warm.md")
        for _ in range(args.runs):
            for name, checkout in checkouts.items():
                got = one_run(checkout, Path(tmp) / "board.md")
                times[name].append(got["wall"])
                loaded[name] = got["loaded"]
    print(f"sae-interp leaderboard benchmarks/results/runs, {args.runs} runs each, median wall")
    print("| checkout | median s | min s | max s | heavy libraries imported |")
    print("|---|---:|---:|---:|---|")
    for name, values in times.items():
        print(
            f"| {name} | {statistics.median(values):.2f} | {min(values):.2f} | {max(values):.2f} "
            f"| {', '.join(loaded[name]) or 'none'} |"
        )
    if args.vs:
        ratios = [b / a for a, b in zip(times["this checkout"], times["--vs"], strict=True)]
        print(f"\n--vs / this checkout, pair by pair: median {statistics.median(ratios):.1f}x")


if __name__ == "__main__":
    main()
