"""Our sparse probing against SAEBench's own sparse-probing functions, on the same activations; and
its peak memory at 65,536 latents.

1. Parity: the demo SAE, the offline stdlib dataset (5 classes, `--train` / `--test` texts per
   class), our mean activations (`stages/probing.probe_activations`, as sae_sparse_probing reads
   them). Per class and k, our test accuracy beside the one SAEBench's `get_top_k_mean_diff_mask`,
   `apply_topk_mask_reduce_dim` and `train_sklearn_probe` (sae-bench 0.6.0, the peer install) give
   on the same train and test rows, and whether they chose the same latents.
2. Memory: in fresh processes, the same probing with a TopK SAE (k = 32, random unit directions)
   of the demo's width and of 65,536 latents at the demo's hook; peak RSS of each.

    python benchmarks/saebench_probing.py --train 250 --test 100
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import _common

PEER = Path(sys.prefix) / "peers" / "sae-bench"

CHILD = r"""
import json, resource, sys, time
import torch
sys.path.insert(0, sys.argv[3])
import _common
from sae_interp_tasks.stages import probing
from sae_interp_tasks.stages.activations import hook_activations
from sae_interp_tasks.stages.core import special_ids
from sae_interp_tasks.stages.probe_data import ProbeConfig, load_probe_data

width, per_class = int(sys.argv[1]), int(sys.argv[2])
model, demo, info = _common.demo()


class RandomTopK:
    '''A TopK SAE (k = 32) of random unit directions, encoding as sae_lens's TopK does.'''

    def __init__(self, d_in, d_sae, k=32):
        gen = torch.Generator().manual_seed(0)
        w = torch.randn(d_sae, d_in, generator=gen)
        self.W_dec = w / w.norm(dim=-1, keepdim=True)
        self.W_enc = self.W_dec.T.contiguous()
        self.k = k
        self.cfg = type("Cfg", (), {"d_sae": d_sae})()

    def encode(self, x):
        pre = torch.relu(x @ self.W_enc)
        top = pre.topk(self.k, dim=-1)
        return torch.zeros_like(pre).scatter_(-1, top.indices, top.values)


sae = RandomTopK(info.d_in, width)
cfg = ProbeConfig(probe_train_per_class=per_class, probe_test_per_class=per_class // 2)
data = load_probe_data(cfg, 1234)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
acts = probing.probe_activations(
    lambda t: hook_activations(model, info.hook_name, t), sae, model.tokenizer, data, cfg,
    info.prepend_bos, special_ids(model.tokenizer),
)
scores = [probing.score_class(acts, i, [1, 2, 5], 1234) for i in range(len(data.classes))]
print(json.dumps({
    "width": width, "texts": int(len(acts.labels)),
    "seconds": round(time.perf_counter() - start, 1),
    "nnz_per_text": round(acts.sae.nnz / len(acts.labels), 1),
    "rss_before_gb": round(base / 2**20, 2),
    "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
    "sae_top_1": round(sum(s["sae_top_1_test_accuracy"] for s in scores) / len(scores), 4),
}))
"""


def parity(train: int, test: int) -> tuple[list[dict], float]:
    import torch

    from sae_interp_tasks.stages import probing
    from sae_interp_tasks.stages.activations import hook_activations
    from sae_interp_tasks.stages.core import special_ids
    from sae_interp_tasks.stages.probe_data import ProbeConfig, load_probe_data

    assert (PEER / "sae_bench").is_dir(), f"{PEER} is missing: run scripts/setup.sh"
    sys.path.insert(0, str(PEER))
    from sae_bench.evals.sparse_probing import probe_training as theirs

    model, sae, info = _common.demo()
    cfg = ProbeConfig(probe_train_per_class=train, probe_test_per_class=test)
    data = load_probe_data(cfg, 1234)
    start = time.perf_counter()
    acts = probing.probe_activations(
        lambda t: hook_activations(model, info.hook_name, t),
        sae,
        model.tokenizer,
        data,
        cfg,
        info.prepend_bos,
        special_ids(model.tokenizer),
    )
    seconds = time.perf_counter() - start
    rows = []
    for positive, name in enumerate(data.classes):
        ours = probing.score_class(acts, positive, [1, 2, 5], 1234)
        rng = np.random.default_rng([1234, positive])
        idx = np.arange(len(acts.labels))
        train_rows, train_y = probing.binary_task(acts.labels, idx[acts.train], positive, rng)
        test_rows, test_y = probing.binary_task(acts.labels, idx[~acts.train], positive, rng)
        x_train = torch.tensor(acts.sae[train_rows].toarray())
        x_test = torch.tensor(acts.sae[test_rows].toarray())
        y_train = torch.tensor(train_y, dtype=torch.int)
        y_test = torch.tensor(test_y, dtype=torch.int)
        for k in (1, 2, 5):
            mask = theirs.get_top_k_mean_diff_mask(x_train, y_train, k)
            _, accuracy = theirs.train_sklearn_probe(
                theirs.apply_topk_mask_reduce_dim(x_train, mask),
                y_train,
                theirs.apply_topk_mask_reduce_dim(x_test, mask),
                y_test,
            )
            same = sorted(np.flatnonzero(~mask.numpy()).tolist()) == sorted(
                ours["_chosen"]["sae"][:k]
            )
            rows.append(
                {
                    "class": name,
                    "k": k,
                    "ours": ours[f"sae_top_{k}_test_accuracy"],
                    "saebench": float(accuracy),
                    "same_latents": same,
                    "llm": ours["llm_test_accuracy"],
                }
            )
    return rows, seconds


def memory(widths: list[int], per_class: int) -> list[dict]:
    out = []
    for width in widths:
        proc = subprocess.run(
            [sys.executable, "-c", CHILD, str(width), str(per_class), str(Path(__file__).parent)],
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        out.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=250)
    parser.add_argument("--test", type=int, default=100)
    parser.add_argument("--widths", type=int, nargs="*", default=[2304, 65536])
    parser.add_argument("--memory-per-class", type=int, default=100)
    args = parser.parse_args()
    rows, seconds = parity(args.train, args.test)
    print(
        f"sparse probing vs SAEBench's functions, demo SAE, stdlib classes; {_common.machine()}\n"
    )
    print("| class | k | ours | SAEBench | same latents | full hooked-activation probe |")
    print("|---|---:|---:|---:|---|---:|")
    for r in rows:
        print(
            f"| {r['class']} | {r['k']} | {r['ours']:.4f} | {r['saebench']:.4f} | "
            f"{'yes' if r['same_latents'] else 'no'} | {r['llm']:.4f} |"
        )
    equal = sum(abs(r["ours"] - r["saebench"]) < 1e-9 for r in rows)
    print(f"\n{equal} of {len(rows)} accuracies equal; activations {seconds:.1f} s")
    mem = memory(args.widths, args.memory_per_class)
    print("\n| SAE width | texts | seconds | non-zeros per text | RSS before | peak RSS |")
    print("|---:|---:|---:|---:|---:|---:|")
    for m in mem:
        print(
            f"| {m['width']:,} | {m['texts']} | {m['seconds']} | {m['nnz_per_text']} | "
            f"{m['rss_before_gb']} GB | {m['peak_rss_gb']} GB |"
        )
    _common.save(
        "saebench_probing",
        {"rows": rows, "activation_seconds": seconds, "memory": mem, "machine": _common.machine()},
    )


if __name__ == "__main__":
    main()
