"""More than one process: `torchrun` (what `accelerate launch` sets up too) runs lm_eval on two CPU
processes (gloo on 127.0.0.1); the results and samples must equal one process's, latent for latent.

Each rank answers its share of every task's docs; the activation pass is split by corpus shard and
merged exactly; explanations and scores of a latent are computed by the rank that answers its doc
and gathered. The explainer is the token list and the scorer an oracle endpoint, so every answer is
a function of the prompt (an in-process LLM's answers can differ in floating-point near-ties when
its batches are composed differently)."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from conftest import CAT_LATENT, DOG_LATENT, REPO, subprocess_env
from helpers import FAST_DRIVER, SMALL_PASS, OracleEndpoint, result_files, run_lm_eval
from sae_interp_tasks.records import USAGE_METRICS
from servers import free_port

# every test here runs lm_eval end to end (a minute or more): outside the fast subset
pytestmark = pytest.mark.slow

TASKS = "sae_core,sae_detection,sae_fuzzing,sae_embedding"
META = {
    **SMALL_PASS,
    "n_latents": 5,
    "explainer": "tokens",
    "scorer": "openai",
    "scorer_model": "oracle",
    "chunk_contexts": 4,
}


def args_for(planted_sae, corpus_file, url, out) -> list[str]:
    meta = {**META, "corpus": str(corpus_file), "scorer_base_url": url}
    return [
        "--model",
        "sae",
        "--model_args",
        f"path={planted_sae.path},device=cpu,batch_size=8",
        "--tasks",
        TASKS,
        "--metadata",
        json.dumps(meta),
        "--seed",
        "41",
        "--log_samples",
        "--output_path",
        str(out),
    ]


@pytest.fixture(scope="module")
def runs(planted_sae, corpus_file, tmp_path_factory):
    one_out, two_out = (
        tmp_path_factory.mktemp("one_process"),
        tmp_path_factory.mktemp("two_processes"),
    )
    driver = tmp_path_factory.mktemp("driver") / "lm_eval_driver.py"
    driver.write_text(FAST_DRIVER)
    with OracleEndpoint() as endpoint:
        one = run_lm_eval(
            args_for(planted_sae, corpus_file, endpoint.url, one_out),
            tmp_path_factory.mktemp("one_cache"),
        )
        env = {
            **subprocess_env(tmp_path_factory.mktemp("two_cache")),
            "DISABLE_MULTIPROC": "1",
            "OMP_NUM_THREADS": "1",
        }
        two = subprocess.run(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--nproc_per_node",
                "2",
                "--master_addr",
                "127.0.0.1",
                "--master_port",
                str(free_port()),
                str(driver),
                *args_for(planted_sae, corpus_file, endpoint.url, two_out),
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=600,
            env=env,
        )
    return one, one_out, two, two_out


def rows(out, task) -> dict:
    (path,) = out.rglob(f"samples_{task}_*.jsonl")
    found = {}
    for line in path.read_text().splitlines():
        row = json.loads(line)
        response = json.loads(row["resps"][0][0])
        response["metrics"] = without_usage(response.get("metrics", {}))
        found[json.dumps(row["doc"], sort_keys=True)] = (
            response,
            without_usage({k: v for k, v in row.items() if k not in ("resps", "filtered_resps")}),
        )
    return found


def without_usage(metrics: dict) -> dict:
    """LLM usage is a run's total spread evenly over the docs of the process that paid it
    (harness.costs): per doc it depends on how docs are split across processes; its sum over docs
    is compared in the results."""
    return {k: v for k, v in metrics.items() if k not in USAGE_METRICS}


# sae_core's KL divergences go through float32 products over the vocabulary (the clean
# distribution times the unembedding) whose rounding depends on how many threads BLAS splits them
# over (one per process here, two in one process): equal to a few parts in 1e9, not to the bit
BLAS_ROUNDED = (
    "kl_sae_sum",
    "kl_zero_sum",
    "kl_div_score",
    "kl_div_with_sae",
    "kl_div_with_ablation",
)


def same(a, b, rel: float = 0.0) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return abs(a - b) <= rel * abs(a) or (math.isnan(a) and math.isnan(b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(
            same(a[k], b[k], max(rel, 1e-6) if k.split(",")[0] in BLAS_ROUNDED else rel) for k in a
        )
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y, rel) for x, y in zip(a, b, strict=True))
    return a == b


def test_two_processes_give_one_process_results(runs):
    one, one_out, two, two_out = runs
    assert one.returncode == 0, one.stderr[-3000:]
    assert two.returncode == 0, two.stderr[-3000:]
    # both ranks built their share of each task's requests (lm-eval logs it per rank)
    for rank in (0, 1):
        assert f"Building contexts for sae_detection on rank {rank}" in two.stderr, two.stderr[
            -3000:
        ]
    (a,) = result_files(one_out)
    (b,) = result_files(two_out)  # rank 0 alone writes the results
    first, second = json.loads(a.read_text()), json.loads(b.read_text())
    for task in TASKS.split(","):
        # aggregates are sums over docs gathered in rank order: equal up to the order of additions
        assert same(first["results"][task], second["results"][task], rel=1e-9), (
            task,
            {
                k: (v, second["results"][task].get(k))
                for k, v in first["results"][task].items()
                if not same(v, second["results"][task].get(k), 1e-9)
            },
        )
        assert first["n-samples"][task] == second["n-samples"][task]
        A, B = rows(one_out, task), rows(two_out, task)
        assert A.keys() == B.keys()
        for doc in A:
            assert same(A[doc], B[doc]), (task, doc)
    latents = [response["latent"] for response, _ in rows(one_out, "sae_detection").values()]
    # the planted latents are among those scored
    assert CAT_LATENT in latents and DOG_LATENT in latents
    # and the oracle scored them
    assert first["results"]["sae_detection"]["balanced_acc,none"] > 0.9
    # the LLM calls a run paid for (scorer check included, made once on rank 0) add up the same
    assert first["results"]["sae_detection"]["llm_calls,none"] > 0
    assert second["results"]["sae_detection"]["llm_cached_calls,none"] == 0
