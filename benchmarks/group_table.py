"""The `sae_interp` group on the embedded default for the demo SAE and both controls: every task's
headline with its 95% interval and chance level, whether its scorer passed the known-answer check,
and the seconds per latent of each scorer, from the runs `benchmarks/readme_results.sh group` writes
(benchmarks/results/runs/group_<sae>/ and the run's stderr, benchmarks/results/group_<sae>.log).

    python benchmarks/group_table.py > benchmarks/results/group_table.md

Seconds come from the progress bars each stage draws (tqdm's final states: the explainer, each
scorer and its shuffled control, each scorer check), divided by the latents the run explained. A
stage whose work was already cached (the activation pass of an earlier run) draws no bar. Then the
LLM cost: the estimate line each run printed against the usage its tasks report.
"""

from __future__ import annotations

import math
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import _common
from sae_interp_tasks import stats
from sae_interp_tasks.reports.results_io import read_run

RESULTS = Path(__file__).parent / "results"
SAES = (("demo", "demo"), ("random", "`control=random`"), ("neurons", "`control=neurons`"))
TASKS = ("sae_detection", "sae_fuzzing", "sae_simulation", "sae_embedding", "sae_surprisal")
USAGE = ("llm_calls", "llm_cached_calls", "llm_prompt_tokens", "llm_completion_tokens")
ESTIMATE = re.compile(
    r"\(estimate\): (\d+) requests, ([\d,]+) prompt \+ ([\d,]+) completion tokens"
)
SKIP = ("Loading weights",)  # bars that are not a stage of the run


Z95 = stats.z_for(0.95)  # the tables print 95% intervals


def _ratio(a, b) -> str:
    return f"{a / b:.2f}" if b else ""


def newest(name: str):
    files = sorted(
        (RESULTS / "runs" / f"group_{name}").glob("*/results_*.json"), key=lambda p: p.name
    )
    return read_run(files[-1]) if files else None


def fmt(x: float | None) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.3f}"


def cell(result, metric: str) -> str:
    m = result.metrics.get(metric)
    if m is None:
        return ""
    lo, hi = (
        (m.value - Z95 * m.stderr, m.value + Z95 * m.stderr)
        if m.stderr is not None
        else (None, None)
    )
    return f"{fmt(m.value)}" + (f" [{fmt(lo)}, {fmt(hi)}]" if lo is not None else "")


def check(result) -> str:
    passed = [k for k in result.metrics if k.endswith("check_passed")]
    if not passed:
        return "(none)"
    return ", ".join("passed" if result.metrics[k].value >= 1 else "**failed**" for k in passed)


def latents_scored(run) -> int:
    """The latents the run explained: the docs of its first task that name a latent."""
    result = next(iter(run.tasks.values()))
    return max(1, len(result.samples.keys) if result.samples is not None else result.n_docs)


def main() -> None:
    runs = {name: newest(name) for name, _ in SAES}
    present = [(name, label) for name, label in SAES if runs[name] is not None]
    if not present:
        raise SystemExit("no runs: bash benchmarks/readme_results.sh group")
    print(
        "`sae_interp` (five tasks) on the embedded default, the demo's instrument defaults (8 "
        "latents, 32,768 "
        f"tokens), seed 1234; {_common.machine()}\n"
    )
    print(
        "| task (headline) | "
        + " | ".join(label for _, label in present)
        + " | chance (demo) | scorer check |"
    )
    print("|---|" + "---|" * len(present) + "---|---|")
    for task in TASKS:
        first = runs[present[0][0]].tasks.get(task)
        if first is None:
            continue
        head = first.report.headline
        cells = [
            cell(runs[name].tasks[task], head) if task in runs[name].tasks else ""
            for name, _ in present
        ]
        chance = first.report.chance.get(head, f"{head}_shuffled")
        checks = "; ".join(
            f"{label}: {check(runs[name].tasks[task])}"
            for name, label in present
            if task in runs[name].tasks
        )
        print(
            f"| {task} ({head}) | " + " | ".join(cells) + f" | {cell(first, chance)} | {checks} |"
        )
    print(
        "\nSeconds per latent of each stage (from its progress bar; checks are per run, shown per "
        "latent):\n"
    )
    print("| stage | " + " | ".join(label for _, label in present) + " |")
    print("|---|" + "---|" * len(present))
    seconds = {}
    for name, _ in present:
        log = RESULTS / f"group_{name}.log"
        seconds[name] = _common.bar_seconds(log.read_text()) if log.exists() else {}
    scored = {name: latents_scored(runs[name]) for name, _ in present}
    stages = [d for name, _ in present for d in seconds[name] if d not in SKIP]
    for stage in dict.fromkeys(stages):
        row = [seconds[name].get(stage) for name, _ in present]
        if all(v is None for v in row):
            continue
        per = [
            ("" if v is None else f"{v / scored[name]:.1f}")
            for v, (name, _) in zip(row, present, strict=True)
        ]
        print(f"| {stage} | " + " | ".join(per) + " |")
    print(
        "\nLLM cost: the estimate line each run printed before its first call (what an empty cache "
        "would have the "
        "model answer) vs what the run's tasks report (requests the model answered, and those the "
        "cache answered: "
        "the same window read twice in one run, or the known-answer check an earlier run already "
        "paid for):\n"
    )
    print(
        "| SAE | requests estimated | answered by the model | by the cache | estimated / model | "
        "tokens estimated (prompt + completion) | tokens counted (model's) | estimated / counted |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    costs = {}
    for name, label in present:
        log = RESULTS / f"group_{name}.log"
        estimate = ESTIMATE.search(log.read_text()) if log.exists() else None
        if estimate is None:
            continue
        used = {
            m: sum(r.metrics[m].value for r in runs[name].tasks.values() if m in r.metrics)
            for m in USAGE
        }
        calls, prompt, completion = (int(g.replace(",", "")) for g in estimate.groups())
        tokens = used["llm_prompt_tokens"] + used["llm_completion_tokens"]
        costs[name] = {"estimated_calls": calls, "estimated_tokens": prompt + completion, **used}
        print(
            f"| {label} | {calls:,} | {used['llm_calls']:,.0f} | {used['llm_cached_calls']:,.0f} | "
            f"{_ratio(calls, used['llm_calls'])} | {prompt + completion:,} | {tokens:,.0f} | "
            f"{_ratio(prompt + completion, tokens)} |"
        )
    _common.save("group_table", {"seconds": seconds, "latents": scored, "llm_cost": costs})


if __name__ == "__main__":
    main()
