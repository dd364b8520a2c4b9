"""Compare two lm_eval runs of this package doc by doc: every field of every response in the samples
files, the per-doc metrics, and the aggregated results. Exit 0 when all agree (floats to 1e-9), 1
when anything differs; every difference is printed.

    python benchmarks/compare_samples.py BEFORE_DIR AFTER_DIR
    sae_detection,sae_fuzzing,sae_embedding
"""

from __future__ import annotations

import glob
import json
import math
import sys

from sae_interp_tasks.reports.samples_io import samples_text

IGNORED_ROW_FIELDS = (
    "doc",  # compared as the key below, less the latent it names since the typed-request change
    "resps",
    "filtered_resps",
    "doc_hash",
    "prompt_hash",
    "target_hash",
    "arguments",
)


def samples(folder: str, task: str) -> dict[str, tuple[dict, dict]]:
    """doc (as JSON, without the latent a newer doc names) -> (samples row, its decoded response),
    from samples_<task>_*.jsonl[.gz]. A doc that names its latent must name the response's."""
    (path,) = glob.glob(f"{folder}/**/samples_{task}_*.jsonl*", recursive=True)
    out = {}
    for line in samples_text(path).splitlines():
        row = json.loads(line)
        response = json.loads(row["resps"][0][0])
        doc = dict(row["doc"])
        if "latent" in doc and doc.pop("latent") != response.get("latent"):
            raise SystemExit(f"{path}: doc {row['doc']} names another latent than its response")
        out[json.dumps(doc, sort_keys=True)] = (row, response)
    return out


def results(folder: str) -> dict:
    (path,) = glob.glob(f"{folder}/**/results_*.json", recursive=True)
    return json.load(open(path))["results"]


def same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b)) or abs(a - b) <= 1e-9
    if isinstance(a, dict) and isinstance(b, dict):
        return all(same(a.get(k), b.get(k)) for k in set(a) | set(b))
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def compare_task(before: str, after: str, task: str) -> bool:
    a, b = samples(before, task), samples(after, task)
    ok = a.keys() == b.keys()
    if not ok:
        print(task, "docs differ:", sorted(a.keys() ^ b.keys()))
    for doc in sorted(a.keys() & b.keys()):
        (row_a, resp_a), (row_b, resp_b) = a[doc], b[doc]
        fields = sorted(
            k for k in set(resp_a) | set(resp_b) if not same(resp_a.get(k), resp_b.get(k))
        )
        metrics = sorted(
            k for k in row_a if k not in IGNORED_ROW_FIELDS and not same(row_a[k], row_b.get(k))
        )
        print(
            task,
            doc,
            "latent",
            resp_a.get("latent", resp_a.get("chunk")),
            "response fields differing:",
            fields or "none",
            "| per-doc metrics differing:",
            metrics or "none",
        )
        ok &= not fields and not metrics
    agg_a, agg_b = results(before)[task], results(after)[task]
    differing = {
        k: (agg_a[k], agg_b.get(k))
        for k in agg_a
        if k != "alias" and not same(agg_a[k], agg_b.get(k))
    }
    print(task, "aggregated results differing:", differing or "none")
    return ok and not differing


def main() -> int:
    before, after, tasks = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
    ok = all([compare_task(before, after, task) for task in tasks])  # a list: every task is printed
    print("IDENTICAL" if ok else "DIFFERENCES FOUND")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
