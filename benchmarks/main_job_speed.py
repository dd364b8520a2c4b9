"""README's speed rows in multiples of the floor, in one run on fresh caches.

The floor: the subject model's forward to the demo SAE's hook over the 32,768 tokens sae_core reads
(128 contexts of 256 from the stdlib corpus, seed 1234, batches of 8), model loading excluded. Then,
each as a user runs it, with wall time including model loading: the README's main job
(`lm_eval --model sae --tasks sae_core --batch_size 8`), a second SAE at the same hook right after
(`--model_args control=random`), and the headline command with every default
(`--tasks sae_detection,sae_selfexplain`). Every run gets a fresh `SAE_INTERP_CACHE` that shares
only the converted subject model (`models/`), so nothing else is read back. Where each run spends
its time comes from its progress bars (`_common.bar_seconds`).

    python benchmarks/main_job_speed.py
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import _common

FLOOR = r"""
import time, torch
import _common
from sae_interp_tasks.stages.corpus import CorpusSpec, token_contexts
from sae_interp_tasks.stages.hf_forward import HFReader
from sae_interp_tasks.stages.saes import SAESource, load_sae
from sae_interp_tasks.stages.subject import load_subject
sae, info = load_sae(SAESource())
model, hf = load_subject(info.model_name, keep_hf=True)
contexts = list(token_contexts(CorpusSpec(), model.tokenizer, 32768, 256, True, 1234))
reader = HFReader.check(hf, model, info.hook_name, contexts[0][None, :16])
start = time.perf_counter()
with torch.no_grad():
    for i in range(0, len(contexts), 8):
        reader.activations(torch.stack(contexts[i : i + 8]))
print(time.perf_counter() - start)
"""

RUNS = {
    "main job (sae_core)": ("", "sae_core"),
    "second SAE at the hook (control=random)": ("control=random", "sae_core"),
    "headline (sae_detection,sae_selfexplain)": ("", "sae_detection,sae_selfexplain"),
}


def run(cache: Path, model_args: str, tasks: str, out: Path) -> tuple[float, str]:
    env = {**os.environ, "SAE_INTERP_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    command = [str(Path(sys.executable).parent / "lm_eval"), "--model", "sae"]
    command += ["--model_args", model_args] if model_args else []
    command += ["--tasks", tasks, "--batch_size", "8", "--output_path", str(out)]
    start = time.time()
    proc = subprocess.run(command, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return time.time() - start, proc.stderr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-headline", action="store_true")
    args = parser.parse_args()
    from sae_interp_tasks.caching import cache_root

    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "cache"
        cache.mkdir()
        (cache / "models").symlink_to(cache_root() / "models")
        env = {
            **os.environ,
            "SAE_INTERP_CACHE": str(cache),
            "PYTHONPATH": str(Path(__file__).parent),
        }
        floor = float(
            subprocess.run(
                [sys.executable, "-c", FLOOR], capture_output=True, text=True, env=env, check=True
            )
            .stdout.strip()
            .splitlines()[-1]
        )
        rows = []
        for name, (model_args, tasks) in RUNS.items():
            if args.skip_headline and "headline" in name:
                continue
            seconds, log = run(cache, model_args, tasks, Path(tmp) / name.split()[0])
            bars = {k: v for k, v in _common.bar_seconds(log).items() if v >= 1}
            rows.append({"run": name, "seconds": seconds, "x_floor": seconds / floor, "bars": bars})
    print(f"floor (forward to the hook, 32,768 tokens): {floor:.1f} s; {_common.machine()}\n")
    print(
        "| run (fresh caches, model loading included) | seconds | x floor | "
        "where the bars spent it |"
    )
    print("|---|---:|---:|---|")
    for r in rows:
        spent = ", ".join(
            f"{k} {v:.0f} s" for k, v in sorted(r["bars"].items(), key=lambda kv: -kv[1])
        )
        print(f"| {r['run']} | {r['seconds']:.0f} | {r['x_floor']:.1f} | {spent} |")
    _common.save(
        "main_job_speed", {"floor_seconds": floor, "rows": rows, "machine": _common.machine()}
    )


if __name__ == "__main__":
    main()
