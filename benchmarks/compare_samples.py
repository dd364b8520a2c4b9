"""Compare two lm_eval runs of this package doc by doc: every field of every response in the samples
files, the per-doc metrics, and the aggregated results. Usage: python benchmarks/compare_samples.py BEFORE AFTER TASKS"""
import json, glob, sys, math
def rows(folder, task):
    (path,) = glob.glob(f"{folder}/**/samples_{task}_*.jsonl", recursive=True)
    out = {}
    for line in open(path):
        r = json.loads(line)
        resp = json.loads(r["resps"][0][0])
        out[json.dumps(r["doc"], sort_keys=True)] = (r, resp)
    return out
def results(folder):
    (path,) = glob.glob(f"{folder}/**/results_*.json", recursive=True)
    return json.load(open(path))["results"]
def same(a, b, path=""):
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or a == b or abs(a-b) <= 1e-9
    if isinstance(a, dict) and isinstance(b, dict):
        return all(same(a.get(k), b.get(k), path+"."+k) for k in set(a)|set(b))
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b
before, after, tasks = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
ok = True
for task in tasks:
    A, B = rows(before, task), rows(after, task)
    assert A.keys() == B.keys(), (task, A.keys(), B.keys())
    for doc in A:
        (ra, pa), (rb, pb) = A[doc], B[doc]
        keys = set(pa) | set(pb)
        diff = [k for k in keys if not same(pa.get(k), pb.get(k))]
        metric_diff = [k for k in ra if k not in ("resps", "filtered_resps", "doc_hash", "prompt_hash", "target_hash", "arguments") and not same(ra[k], rb.get(k))]
        print(task, doc, "latent", pa.get("latent", pa.get("chunk")), "response fields differing:", diff or "none", "| per-doc metrics differing:", metric_diff or "none")
        ok &= not metric_diff
    ra, rb = results(before)[task], results(after)[task]
    mdiff = {k: (ra[k], rb.get(k)) for k in ra if k not in ("alias",) and not same(ra[k], rb.get(k))}
    print(task, "aggregated results differing:", mdiff or "none")
    ok &= not mdiff
print("IDENTICAL METRICS" if ok else "DIFFERENCES FOUND")
