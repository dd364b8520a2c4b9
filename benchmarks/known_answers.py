"""The known-answer suite: does each method recover the planted meanings of a known-answer SAE?

Builds the full suite for the bundled model once (16 token latents and 3 concepts, see
sae_interp_tasks/validity/known_answers.py), then runs through lm_eval, with the embedded defaults
otherwise, every scorer the machine has: the token-list and the bundled LLM explainer, and for the
LLM-scored tasks the bundled SmolLM2-135M scorer and the oracle (a stand-in for a perfect scorer
that knows the planted answers). Prints a markdown table (method, explainer, scorer: score [95%
interval], shuffled control, scorer check, recovered?) and writes results/known_answers.{md,json}.

    python benchmarks/known_answers.py                 # everything (about an hour on a 2-core CPU)
    python benchmarks/known_answers.py --runs tokens_oracle tokens_embedding
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import _common
from sae_interp_tasks import stats

HERE = Path(__file__).parent
HEADLINES = {
    "sae_embedding": "auroc",
    "sae_detection": "balanced_acc",
    "sae_fuzzing": "balanced_acc",
    "sae_simulation": "correlation",
    "sae_surprisal": "auroc",
    "sae_selfexplain": "retrieval_auroc",
    "sae_intruder": "accuracy",
}
# what counts as recovering the planted meanings, as the README's targets say
TARGETS = {
    "sae_embedding": 0.75,
    "sae_detection": 0.95,
    "sae_fuzzing": 0.95,
    "sae_simulation": 0.9,
    "sae_surprisal": 0.95,
    "sae_intruder": 0.95,
}
LLM_TASKS = "sae_detection,sae_fuzzing,sae_simulation,sae_surprisal"


Z95 = stats.z_for(0.95)  # the tables print 95% intervals


def runs(sae: Path) -> dict[str, tuple[str, dict, int | None]]:
    """name -> (tasks, metadata, --limit). The bundled scorer reads the first 10 latents: about a
    minute per latent and task on a 2-core CPU, and enough to show whether it can score."""
    oracle = {
        "scorer": "oracle",
        "scorer_model": str(sae),
        "surprisal_scorer": "oracle",
        "surprisal_model": str(sae),
    }
    return {
        "tokens_embedding": ("sae_embedding", {"explainer": "tokens"}, None),
        "tokens_oracle": (
            LLM_TASKS,
            {"explainer": "tokens", "surprisal_statistic": "mean", **oracle},
            None,
        ),
        "tokens_bundled": (LLM_TASKS, {"explainer": "tokens", "surprisal_statistic": "mean"}, 10),
        # sae_surprisal's per-window statistic: the mean over the window's tokens (the default of
        # task version 1.0)
        # or the largest (the default since 1.1, chosen from these two runs)
        "tokens_bundled_max": (
            "sae_surprisal",
            {"explainer": "tokens", "surprisal_statistic": "max"},
            10,
        ),
        "llm_embedding": ("sae_embedding,sae_selfexplain", {"selfexplain_detection": False}, None),
        # no explanation read: the scorer picks the window of another kind among a latent's
        "intruder_oracle": ("sae_intruder", oracle, None),
        "intruder_bundled": ("sae_intruder", {}, 10),
    }


def run(name: str, tasks: str, meta: dict, limit: int | None, sae: Path, out: Path) -> float:
    folder = out / name
    if list(
        folder.glob("*/results_*.json")
    ):  # measured already: the results are kept, never paid for twice
        kept = folder / "wall_seconds.txt"
        return float(kept.read_text()) if kept.exists() else math.nan
    seconds = _common.lm_eval_run(folder, out / f"{name}.log", f"path={sae}", tasks, meta, limit)
    (folder / "wall_seconds.txt").write_text(f"{seconds:.1f}")
    return seconds


def read(out: Path, name: str) -> tuple[dict, dict]:
    from sae_interp_tasks.reports.samples_io import samples_text

    (path,) = glob.glob(str(out / name / "*" / "results_*.json"))
    data = json.load(open(path))
    samples = {}
    for task in data["results"]:
        # kept gzipped in the repository
        found = glob.glob(str(Path(path).parent / f"samples_{task}_*.jsonl*"))
        if found:
            lines = samples_text(Path(found[0])).splitlines()
            samples[task] = [
                json.loads(json.loads(line)["resps"][0][0]) for line in lines if line.strip()
            ]
    return data["results"], samples


def rows_for(name: str, results: dict, samples: dict, answers: dict) -> list[dict]:
    from sae_interp_tasks.validity.known_answers import names_meaning

    explainer = (
        "token list"
        if name.startswith("tokens")
        else "none"
        if name.startswith("intruder")
        else "SmolLM2-135M"
    )
    scorer = "oracle" if "oracle" in name else "SmolLM2-135M" if "bundled" in name else ""
    out = []
    first = next(iter(samples.values()), [])
    named = [
        names_meaning(r["explanation"], answers[r["latent"]])
        for r in first
        if r.get("latent") is not None and "explanation" in r
    ]
    if name in ("tokens_embedding", "llm_embedding"):
        out.append(
            {
                "method": "explanation names the meaning",
                "explainer": explainer,
                "scorer": "",
                "value": sum(named) / len(named),
                "lo": None,
                "hi": None,
                "shuffled": None,
                "check": None,
                "target": 0.9,
                "n": len(named),
            }
        )
    for task, metric in HEADLINES.items():
        got = results.get(task)
        if not got:
            continue
        value, se = got[f"{metric},none"], got.get(f"{metric}_stderr,none")
        se = se if isinstance(se, float) else None
        check = got.get("scorer_check_passed,none")
        method = task + (
            f" (surprisal_statistic: {statistic(name)})" if task == "sae_surprisal" else ""
        )
        out.append(
            {
                "method": method,
                "explainer": explainer,
                "scorer": scorer or ("MiniLM" if "embedding" in task else ""),
                "value": value,
                "lo": None if se is None else value - Z95 * se,
                "hi": None if se is None else value + Z95 * se,
                "shuffled": got.get(f"{metric}_shuffled,none"),
                "check": None if check is None or math.isnan(check) else bool(check),
                "target": TARGETS.get(task),
                "n": len(samples.get(task, [])),
            }
        )
    return out


def merged(rows: list[dict], seconds: dict) -> tuple[list[dict], dict]:
    """These rows and seconds over the last full run's: a row measured again replaces its old
    one (the same method, explainer and scorer)."""
    saved = HERE / "results" / "known_answers.json"
    if not saved.exists():
        return rows, seconds
    old = json.loads(saved.read_text())

    def same(r):
        return (r["method"], r["explainer"], r["scorer"])

    fresh = {same(r) for r in rows}
    return [r for r in old["rows"] if same(r) not in fresh] + rows, {**old["seconds"], **seconds}


def statistic(name: str) -> str:
    return runs(Path())[name][1].get("surprisal_statistic", "max")


def fmt(x) -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def table(rows: list[dict]) -> str:
    lines = [
        "| method | explainer | scorer | score [95% interval] | shuffled | scorer check | "
        "recovered |",
        "|---|---|---|---|---:|---|---|",
    ]
    for r in rows:
        interval = f" [{fmt(r['lo'])}, {fmt(r['hi'])}]" if r["lo"] is not None else ""
        check = {True: "passed", False: "failed", None: ""}[r["check"]]
        recovered = (
            ""
            if r["target"] is None
            else ("yes" if r["value"] >= r["target"] else f"no (target {r['target']})")
        )
        if r["check"] is False:
            recovered = "no: the scorer cannot score"
        lines.append(
            f"| {r['method']} | {r['explainer']} | {r['scorer']} | {fmt(r['value'])}{interval} | "
            f"{fmt(r['shuffled'])} | {check} | {recovered} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    from sae_interp_tasks.caching import cache_root
    from sae_interp_tasks.validity import known_answers as ka

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sae",
        type=Path,
        default=cache_root() / "known_answers" / "full",
        help="where the suite's SAE is built (once) and read",
    )
    parser.add_argument("--out", type=Path, default=HERE / "results" / "known_answers")
    parser.add_argument("--runs", nargs="*", help="a subset of the runs (default: all)")
    args = parser.parse_args()
    if not (args.sae / ka.ANSWERS_FILE).exists():
        ka.build(args.sae)
    answers = ka.load_answers(args.sae)
    args.out.mkdir(parents=True, exist_ok=True)
    chosen = {k: v for k, v in runs(args.sae).items() if not args.runs or k in args.runs}
    seconds, rows = {}, []
    for name, (tasks, meta, limit) in chosen.items():
        seconds[name] = run(name, tasks, meta, limit, args.sae, args.out)
        rows += rows_for(name, *read(args.out, name), answers)
    if args.runs:  # a subset: the other runs' rows and seconds stay as they were
        rows, seconds = merged(rows, seconds)
    probes = json.loads((args.sae / ka.ANSWERS_FILE).read_text())["latents"]
    text = (
        f"known-answer suite: {len(answers)} latents "
        f"({sum(m.kind == 'token' for m in answers.values())} tokens, "
        f"{sum(m.kind == 'concept' for m in answers.values())} concepts) at {ka.HOOK_NAME} of the "
        "bundled model; "
        f"probe precision {min(p['probe']['precision'] for p in probes):.3f}..1, recall "
        f"{min(p['probe']['recall'] for p in probes):.3f}..1; {_common.machine()}\n\n" + table(rows)
    )
    print(text)
    (HERE / "results" / "known_answers.md").write_text(text)
    (HERE / "results" / "known_answers.json").write_text(
        json.dumps({"rows": rows, "seconds": seconds}, indent=1)
    )


if __name__ == "__main__":
    main()
