"""The README's auto-interp and self-explanation tables, from the lm_eval results files that
`benchmarks/readme_results.sh` writes under benchmarks/results/runs/<name>/ (newest file per run).

    python benchmarks/interp_tables.py > benchmarks/results/interp_tables.md

Each cell is mean ± stderr over latents; "95% interval" is mean ± 1.96 stderr. The standard error is
the closed form this package reports (the sample standard deviation over the latents that have a
value, over the square root of their number), recomputed from the samples files where they are,
so runs made while lm-eval still bootstrapped it read like new ones. A run that is missing is left
out (its step of readme_results.sh has not been run).
"""

from __future__ import annotations

import math
from pathlib import Path

from sae_interp_tasks import stats
from sae_interp_tasks.reports.results_io import Run, TaskResult, read_run

RUNS = Path(__file__).parent / "results" / "runs"
SAES = (("demo SAE", "demo"), ("`control=random`", "random"))


Z95 = stats.z_for(0.95)  # the tables print 95% intervals


def newest_run(name: str) -> Run | None:
    files = sorted((RUNS / name).glob("*/results_*.json"), key=lambda p: p.name)
    return read_run(files[-1]) if files else None


def stderr(result: TaskResult, metric: str) -> float | None:
    """Closed form from the per-latent values when the samples are there, else lm-eval's."""
    if result.samples is not None and metric in result.samples.values:
        err = stats.stderr_of_mean(result.samples.values[metric])
        return None if math.isnan(err) else err
    return result.metrics[metric].stderr


def cell(result: TaskResult, metric: str, ci: bool = False) -> str:
    found = result.metrics.get(metric)
    if found is None or not math.isfinite(found.value):
        return "n/a"
    value, err = found.value, (stderr(result, metric) if found.stderr is not None else None)
    if err is None or not math.isfinite(err):
        return f"{value:.3f}"
    text = f"{value:.3f} ± {err:.3f}"
    return text + (f" [{value - Z95 * err:.3f}, {value + Z95 * err:.3f}]" if ci else "")


def total(result: TaskResult, metric: str) -> str:
    found = result.metrics.get(metric)
    return "n/a" if found is None else f"{found.value:g}"


def embedding_table(prefix: str, title: str) -> list[str]:
    rows = []
    for label, suffix in SAES:
        run = newest_run(f"{prefix}_{suffix}")
        if run is None:
            continue
        res = run.tasks["sae_embedding"]
        rows.append(
            f"| {label} | {res.n_docs} | {cell(res, 'auroc', ci=True)} | "
            f"{cell(res, 'auroc_shuffled')} |"
        )
    if not rows:
        return []
    return [
        f"**{title}**",
        "",
        "| SAE | latents | AUROC [95% interval] | shuffled-explanation AUROC (chance) |",
        "|---|---:|---|---:|",
        *rows,
        "",
    ]


def interp_table() -> list[str]:
    rows = []
    for label, suffix in SAES:
        run = newest_run(f"interp_{suffix}")
        if run is None:
            continue
        for task in ("sae_detection", "sae_fuzzing", "sae_embedding"):
            res = run.tasks.get(task)
            if res is None:
                continue
            if task == "sae_embedding":
                rows.append(
                    f"| {label} | {task} | {res.n_docs} | n/a | n/a | "
                    f"{cell(res, 'auroc', ci=True)} | "
                    f"{cell(res, 'auroc_shuffled')} | n/a |"
                )
                continue
            rows.append(
                f"| {label} | {task} | {res.n_docs} | {cell(res, 'balanced_acc')} | "
                f"{cell(res, 'balanced_acc_shuffled')} | {cell(res, 'auroc', ci=True)} | "
                f"{cell(res, 'auroc_shuffled')} | {total(res, 'parse_failures')} |"
            )
    if not rows:
        return []
    return [
        "| SAE | task | latents | balanced acc | balanced acc, shuffled | AUROC [95% interval] | "
        "AUROC, shuffled "
        "| parse failures |",
        "|---|---|---:|---:|---:|---|---:|---:|",
        *rows,
        "",
    ]


def selfexplain_table(prefix: str) -> list[str]:
    rows = []
    for label, suffix in SAES:
        run = newest_run(f"{prefix}_{suffix}")
        if run is None or "sae_selfexplain" not in run.tasks:
            continue
        res = run.tasks["sae_selfexplain"]
        rows.append(
            f"| {label} | {res.n_docs} | {cell(res, 'retrieval_auroc', ci=True)} | "
            f"{cell(res, 'top1_match')} | "
            f"{cell(res, 'top1_chance')} | {cell(res, 'selfexplain_balanced_acc')} | "
            f"{cell(res, 'autointerp_balanced_acc')} | {cell(res, 'peak_selfsim')} | "
            f"{cell(res, 'selfsim_threshold')} | {total(res, 'selfexplain_failure')} |"
        )
    if not rows:
        return []
    return [
        "| SAE | latents | retrieval AUROC [95% interval] | top-1 match | top-1 chance | "
        "self-explanation "
        "balanced acc | auto-interp balanced acc | peak self-similarity | failure threshold | "
        "failures |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|",
        *rows,
        "",
    ]


def main() -> None:
    lines = ["### sae_embedding", ""]
    lines += embedding_table(
        "embedding", "SmolLM2-135M-Instruct explanations (the default explainer)"
    )
    lines += embedding_table("embedding_tokens", "token-list explanations (`explainer: tokens`)")
    lines += ["### sae_interp on 16 latents (detection, fuzzing, embedding)", "", *interp_table()]
    lines += ["### sae_selfexplain with detection (16 latents)", "", *selfexplain_table("interp")]
    lines += ["### sae_selfexplain agreement (32 latents)", "", *selfexplain_table("selfexplain")]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
