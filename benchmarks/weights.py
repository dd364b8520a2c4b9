"""The weights tasks on the embedded default: known answers, the demo's own numbers, and the
overlap matrix of the demo, its retrained seed and the controls.

Builds three SAEs under benchmarks/saes/ (ignored by git; rebuilt when missing):
- `demo_lens`: the demo with 32 decoder rows planted as token unembeddings
  (sae_interp_tasks/validity/planted_weights.py): the logit lens must put each token first;
- `demo_copy`: the demo's latents permuted, every decoder row noised (0.2 x its norm);
- `demo_seed1`: the demo retrained with `scripts/train_demo_sae.py --seed 1` (the same settings
  and corpus, another seed for the initialisation and the corpus order; about 25 minutes on a
  2-core CPU), or a copy of an existing folder given with `--seed1 DIR`.
Then runs lm_eval (results kept in benchmarks/results/weights/: a run measured once is never paid
for again), and writes results/weights_known_answers.md and results/overlap.{md,png}.

    python benchmarks/weights.py [--seed1 DIR] [--runs NAME ...]
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import _common
from sae_interp_tasks import stats

HERE = Path(__file__).parent
REPO = HERE.parent
SAES = Path("benchmarks/saes")  # relative: the labels the results carry stay short
OUT = HERE / "results" / "weights"
BIN = Path(sys.executable).parent
Z95 = stats.z_for(0.95)
CLASSES = ("prediction", "suppression", "partition")
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def build(seed1: str | None, with_seed1: bool) -> None:
    SAES.mkdir(parents=True, exist_ok=True)
    planted = [BIN / "python", "-m", "sae_interp_tasks.validity.planted_weights"]
    if not (SAES / "demo_lens").exists():
        subprocess.run([*planted, "lens", str(SAES / "demo_lens")], check=True, env=ENV)
    if not (SAES / "demo_copy").exists():
        subprocess.run(
            [*planted, "copy", str(SAES / "demo_copy"), "--seed", "0"], check=True, env=ENV
        )
    if (SAES / "demo_seed1").exists() or not with_seed1:
        return
    if seed1:
        shutil.copytree(seed1, SAES / "demo_seed1")
        return
    train = [BIN / "python", "scripts/train_demo_sae.py", "--seed", "1"]
    out = ["--out", str(SAES / "demo_seed1"), "--readme", str(SAES / "demo_seed1.md")]
    subprocess.run([*train, *out], check=True, env=ENV)


def runs() -> dict[str, tuple[str | None, str, dict, int | None]]:
    """name -> (--model_args, None for the demo; tasks; metadata; --limit)."""
    seed1, copy = str(SAES / "demo_seed1"), str(SAES / "demo_copy")
    # the demo brings its own defaults (8 latents over 32,768 tokens); the weights tasks are cheap
    # per latent, so these runs score 64 (the pass's pool is 128 candidates either way), over the
    # demo's 32,768 tokens for every SAE
    n64 = {"n_latents": 64, "n_tokens": 32768}
    lens = {"explainer": "logits", "neighbour_tokens": 1, "n_latents": 16}
    return {
        "lens": (f"path={SAES / 'demo_lens'}", "sae_logitlens,sae_embedding", lens, None),
        "demo_itself": (None, "sae_logitlens,sae_similarity", n64, None),
        "demo_copy": (None, "sae_similarity", {**n64, "reference": f"path={copy}"}, None),
        "demo_random": (None, "sae_similarity", {**n64, "reference": "control=random"}, None),
        "random_logitlens": ("control=random", "sae_logitlens", n64, None),
        "neurons_logitlens": ("control=neurons", "sae_logitlens", n64, None),
        # with the semantic overlap of matched latents, explained by token lists (no LLM)
        "demo_seed1": (
            None,
            "sae_similarity",
            {**n64, "reference": f"path={seed1}", "semantic_overlap": True, "explainer": "tokens"},
            None,
        ),
        "seed1_demo": (f"path={seed1}", "sae_similarity", {**n64, "reference": "demo"}, None),
        "seed1_random": (
            f"path={seed1}",
            "sae_similarity",
            {**n64, "reference": "control=random"},
            None,
        ),
        "seed1_itself": (f"path={seed1}", "sae_similarity", n64, None),
    }


def run(name: str, model_args: str | None, tasks: str, meta: dict, limit: int | None) -> float:
    folder = OUT / name
    kept = folder / "wall_seconds.txt"
    if kept.exists():
        return float(kept.read_text())
    seconds = _common.lm_eval_run(folder, OUT / f"{name}.log", model_args, tasks, meta, limit)
    for samples in folder.glob("*/samples_*.jsonl"):  # kept gzipped; the readers take .jsonl.gz
        subprocess.run(["gzip", "-9f", str(samples)], check=True)
    kept.write_text(f"{seconds:.1f}")
    return seconds


def read(name: str) -> tuple[dict, dict]:
    from sae_interp_tasks.reports.samples_io import samples_text

    (path,) = glob.glob(str(OUT / name / "*" / "results_*.json"))
    data = json.loads(Path(path).read_text())
    samples = {}
    for task in data["results"]:
        for found in glob.glob(str(Path(path).parent / f"samples_{task}_*.jsonl*")):
            rows = [json.loads(line) for line in samples_text(Path(found)).splitlines() if line]
            samples[task] = [(r["doc"], json.loads(r["resps"][0][0])) for r in rows]
    return data["results"], samples


def cell(results: dict, task: str, metric: str) -> str:
    value = results[task][f"{metric},none"]
    se = results[task].get(f"{metric}_stderr,none")
    if isinstance(se, float) and se == se:
        return f"{value:.3f} [{value - Z95 * se:.3f}, {value + Z95 * se:.3f}]"
    return f"{value:.3f}"


def known_answer_rows() -> tuple[list[str], list[str]]:
    rows = []
    planted = json.loads((SAES / "demo_lens" / "planted_tokens.json").read_text())
    _, samples = read("lens")
    lens = samples["sae_logitlens"]
    first = [r["promoted"][0][0] == planted[str(r["latent"])] for _, r in lens]
    rows.append(
        f"| logit lens puts the planted token first | {sum(first)} of {len(first)} | all |"
        f" {'recovered' if all(first) else 'see the note'} |"
    )
    missed = [
        f"{planted[str(r['latent'])]!r} -> {r['promoted'][0][0]!r}"
        for (_, r), ok in zip(lens, first, strict=True)
        if not ok
    ]
    named = [
        r.get("explanation") == f'the token "{planted[str(r["latent"])]}"'
        for _, r in samples["sae_embedding"]
    ]
    rows.append(
        f"| `explainer: logits` names the planted token | {sum(named)} of {len(named)} | all | "
        f"{'recovered' if all(named) else 'as the lens reads it'} |"
    )
    own = json.loads((SAES / "demo_copy" / "own_partner.json").read_text())
    results, samples = read("demo_copy")
    sim = samples["sae_similarity"]
    hits = [r["partner"] == own[r["latent"]] for _, r in sim]
    high = [r_mcs >= 0.95 for r_mcs in (results_mcs(sim))]
    matched = results["sae_similarity"]["dict_matched_frac,none"]
    rows.append(
        f"| permuted, noised copy: scored latents matched to their own copy | {sum(hits)} of "
        f"{len(hits)} | >= 99% | {'recovered' if sum(hits) >= 0.99 * len(hits) else 'no'} |"
    )
    rows.append(
        f"| permuted, noised copy: whole dictionary matched (`dict_matched_frac`) | "
        f"{matched:.4f} | >= 0.99 | {'recovered' if matched >= 0.99 else 'no'} |"
    )
    rows.append(
        f"| permuted, noised copy: scored latents with MCS >= 0.95 | {sum(high)} of {len(high)} "
        f"(mean {cell(results, 'sae_similarity', 'mcs')}) | all | "
        f"{'recovered' if all(high) else 'no'} |"
    )
    results, _ = read("demo_random")
    got, chance = (results["sae_similarity"][f"{m},none"] for m in ("mcs", "mcs_random"))
    se = results["sae_similarity"]["mcs_stderr,none"]
    rows.append(
        f"| random reference: MCS at its chance level | {cell(results, 'sae_similarity', 'mcs')}"
        f" vs chance {cell(results, 'sae_similarity', 'mcs_random')} | within the interval | "
        f"{'yes' if abs(got - chance) <= Z95 * se else 'no'} |"
    )
    return rows, missed


def demo_rows() -> list[str]:
    """The demo and its controls through the weights tasks."""
    rows = [
        "| SAE | logit-lens AUROC (next token) | shuffled lens | kurtosis | prediction / "
        "suppression / partition |",
        "|---|---|---|---:|---|",
    ]
    for name in ("demo_itself", "random_logitlens", "neurons_logitlens"):
        results, _ = read(name)
        got = results["sae_logitlens"]
        label = {"demo_itself": "demo", "random_logitlens": "control=random"}.get(
            name, "control=neurons"
        )
        classes = " / ".join(f"{got[f'frac_{c},none']:.2f}" for c in CLASSES)
        rows.append(
            f"| {label} | {cell(results, 'sae_logitlens', 'auroc')} | "
            f"{cell(results, 'sae_logitlens', 'auroc_shuffled')} | {got['kurtosis,none']:.2f} | "
            f"{classes} |"
        )
    rows += [
        "",
        "| SAE vs reference | MCS (scored latents) | chance | matched fraction (dictionary) | "
        "activation corr. of matched | explanation similarity | shuffled |",
        "|---|---|---|---:|---|---|---|",
    ]
    for name in ("demo_itself", "demo_copy", "demo_seed1", "demo_random", "seed1_demo"):
        results, _ = read(name)
        got = results["sae_similarity"]
        ref = {
            "demo_itself": "demo vs itself",
            "demo_copy": "demo vs permuted noised copy",
            "demo_seed1": "demo vs demo retrained (seed 1)",
            "demo_random": "demo vs control=random",
            "seed1_demo": "demo retrained (seed 1) vs demo",
        }[name]
        shown = [
            "mcs",
            "mcs_random",
            "dict_matched_frac",
            "activation_corr",
            "explanation_sim",
            "explanation_sim_shuffled",
        ]
        cells = [
            cell(results, "sae_similarity", m)
            if got.get(f"{m},none") == got.get(f"{m},none")
            else ""
            for m in shown
        ]
        rows.append(f"| {ref} | " + " | ".join(cells) + " |")
    return rows


def results_mcs(sim) -> list[float]:
    return [float(r["metrics"]["mcs"]) for _, r in sim]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed1", help="an already trained seed-1 demo SAE folder to copy")
    ap.add_argument("--runs", nargs="+", choices=list(runs()), help="only these runs (no tables)")
    args = ap.parse_args()
    os.chdir(REPO)
    chosen = args.runs or list(runs())
    build(args.seed1, with_seed1=any("seed1" in name for name in chosen))
    OUT.mkdir(parents=True, exist_ok=True)
    seconds = {}
    for name in chosen:
        model_args, tasks, meta, limit = runs()[name]
        seconds[name] = run(name, model_args, tasks, meta, limit)
        print(f"{name}: {seconds[name]:.0f} s", flush=True)
    if args.runs:
        return
    rows, missed = known_answer_rows()
    text = [
        f"weights tasks' known answers on the demo SAE; {_common.machine()}",
        "",
        "| planted answer | got | target | |",
        "|---|---|---|---|",
        *rows,
        "",
        "Planted tokens the lens does not put first: " + ("; ".join(missed) or "none"),
        "",
        "Wall seconds per run: " + ", ".join(f"{k} {v:.0f}" for k, v in seconds.items()),
    ]
    (HERE / "results" / "weights_known_answers.md").write_text("\n".join(text) + "\n")
    print("\n".join(text))
    demo = "\n".join(demo_rows()) + "\n"
    (HERE / "results" / "weights_demo.md").write_text(demo)
    print(demo)
    sims = [str(OUT / n) for n, (_, tasks, _, _) in runs().items() if "sae_similarity" in tasks]
    for metric, name in (("dict_matched_frac", "overlap"), ("dict_mean_mcs", "overlap_mcs")):
        subprocess.run(
            [
                str(BIN / "sae-interp"),
                "overlap",
                *sims,
                "--metric",
                metric,
                "-o",
                str(HERE / "results" / f"{name}.md"),
                "--heatmap",
                str(HERE / "results" / f"{name}.png"),
            ],
            check=True,
        )
        print((HERE / "results" / f"{name}.md").read_text())


if __name__ == "__main__":
    main()
