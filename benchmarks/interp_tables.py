"""The README's auto-interp and self-explanation tables, from the lm_eval results files that
`benchmarks/readme_results.sh` writes under benchmarks/results/runs/<name>/ (newest file per run).

    python benchmarks/interp_tables.py > benchmarks/results/interp_tables.md

Each cell is mean ± stderr over latents as lm-eval reports it; "95% interval" is mean ± 1.96
stderr. A run that is missing is left out (its step of readme_results.sh has not been run).
"""

from __future__ import annotations

import json
from pathlib import Path

RUNS = Path(__file__).parent / "results" / "runs"
SAES = (("demo SAE", "demo"), ("`control=random`", "random"))


def newest_results(name: str) -> dict | None:
    files = sorted((RUNS / name).glob("*/results_*.json"), key=lambda p: p.name)
    return json.loads(files[-1].read_text()) if files else None


def cell(res: dict, metric: str, ci: bool = False) -> str:
    value, err = res.get(f"{metric},none"), res.get(f"{metric}_stderr,none")
    if value is None or value != value:  # absent or NaN
        return "n/a"
    if not isinstance(err, (int, float)) or err != err:
        return f"{value:.3f}"
    text = f"{value:.3f} ± {err:.3f}"
    return text + (f" [{value - 1.96 * err:.3f}, {value + 1.96 * err:.3f}]" if ci else "")


def embedding_table(prefix: str, title: str) -> list[str]:
    rows = []
    for label, suffix in SAES:
        results = newest_results(f"{prefix}_{suffix}")
        if results is None:
            continue
        res = results["results"]["sae_embedding"]
        n = results["n-samples"]["sae_embedding"]["effective"]
        rows.append(f"| {label} | {n} | {cell(res, 'auroc', ci=True)} | {cell(res, 'auroc_shuffled')} |")
    if not rows:
        return []
    return [f"**{title}**", "", "| SAE | latents | AUROC [95% interval] | shuffled-explanation AUROC (chance) |",
            "|---|---:|---|---:|", *rows, ""]


def interp_table() -> list[str]:
    rows = []
    for label, suffix in SAES:
        results = newest_results(f"interp_{suffix}")
        if results is None:
            continue
        for task in ("sae_detection", "sae_fuzzing", "sae_embedding"):
            res = results["results"].get(task)
            if res is None:
                continue
            n = results["n-samples"][task]["effective"]
            if task == "sae_embedding":
                rows.append(f"| {label} | {task} | {n} | n/a | n/a | {cell(res, 'auroc', ci=True)} | "
                            f"{cell(res, 'auroc_shuffled')} | n/a |")
                continue
            rows.append(f"| {label} | {task} | {n} | {cell(res, 'balanced_acc')} | {cell(res, 'balanced_acc_shuffled')} | "
                        f"{cell(res, 'auroc', ci=True)} | {cell(res, 'auroc_shuffled')} | "
                        f"{res.get('parse_failures,none', 'n/a')} |")
    if not rows:
        return []
    return ["| SAE | task | latents | balanced acc | balanced acc, shuffled | AUROC [95% interval] | AUROC, shuffled "
            "| parse failures |", "|---|---|---:|---:|---:|---|---:|---:|", *rows, ""]


def selfexplain_table(prefix: str) -> list[str]:
    rows = []
    for label, suffix in SAES:
        results = newest_results(f"{prefix}_{suffix}")
        if results is None or "sae_selfexplain" not in results["results"]:
            continue
        res = results["results"]["sae_selfexplain"]
        n = results["n-samples"]["sae_selfexplain"]["effective"]
        rows.append(f"| {label} | {n} | {cell(res, 'retrieval_auroc', ci=True)} | {cell(res, 'top1_match')} | "
                    f"{cell(res, 'top1_chance')} | {cell(res, 'selfexplain_balanced_acc')} | "
                    f"{cell(res, 'autointerp_balanced_acc')} | {cell(res, 'peak_selfsim')} | "
                    f"{cell(res, 'selfsim_threshold')} | {res.get('selfexplain_failure,none', 'n/a')} |")
    if not rows:
        return []
    return ["| SAE | latents | retrieval AUROC [95% interval] | top-1 match | top-1 chance | self-explanation "
            "balanced acc | auto-interp balanced acc | peak self-similarity | failure threshold | failures |",
            "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|", *rows, ""]


def main() -> None:
    lines = ["### sae_embedding", ""]
    lines += embedding_table("embedding", "SmolLM2-135M-Instruct explanations (the default explainer)")
    lines += embedding_table("embedding_tokens", "token-list explanations (`explainer: tokens`)")
    lines += ["### sae_interp on 16 latents (detection, fuzzing, embedding)", "", *interp_table()]
    lines += ["### sae_selfexplain with detection (16 latents)", "", *selfexplain_table("interp")]
    lines += ["### sae_selfexplain agreement (32 latents)", "", *selfexplain_table("selfexplain")]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
