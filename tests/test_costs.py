"""What an LLM run costs (harness/costs.py), through lm_eval: every request the scorer endpoint
answered is counted once, with the tokens its `usage` reported; the estimate line comes before the
first call and foresees the requests; a rerun on the same cache pays nothing and says so;
`max_llm_tokens` stops a run before its first call with one line and no results; the leaderboard's
JSON and CSV carry the counts."""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
import sys

import pytest

from conftest import REPO
from helpers import SMALL_PASS, OracleEndpoint, error_lines, result_files, run_lm_eval, words
from sae_interp_tasks.records import USAGE_METRICS

# every test here runs lm_eval end to end (a minute or more): outside the fast subset
pytestmark = pytest.mark.slow

META = {
    **SMALL_PASS,
    "n_latents": 2,
    "explainer": "tokens",
    "scorer": "openai",
    "scorer_model": "oracle",
}
ESTIMATE = re.compile(
    r"LLM calls this run will make on an empty cache \(estimate\): (\d+) requests, ([\d,]+) prompt"
)


def args(sae, corpus, url, out, **extra) -> list[str]:
    meta = {**META, "corpus": str(corpus), "scorer_base_url": url, **extra}
    return [
        "--model",
        "sae",
        "--model_args",
        f"path={sae},device=cpu,batch_size=8",
        "--tasks",
        "sae_detection",
        "--limit",
        "2",
        "--seed",
        "41",
        "--metadata",
        json.dumps(meta),
        "--output_path",
        str(out),
        "--log_samples",
    ]


@pytest.fixture(scope="module")
def runs(planted_sae, corpus_file, tmp_path_factory):
    """A first run on an empty cache, then the same run again, then one over budget; the endpoint's
    requests (and the tokens it reported) counted per run."""
    cache = tmp_path_factory.mktemp("costs_cache")
    outs = [tmp_path_factory.mktemp(f"costs_{i}") for i in range(3)]
    got = []
    with OracleEndpoint() as endpoint:
        for out, extra in zip(outs, ({}, {}, {"max_llm_tokens": 10}), strict=True):
            before = len(endpoint.asked)
            proc = run_lm_eval(
                args(planted_sae.path, corpus_file, endpoint.url, out, **extra), cache
            )
            got.append((proc, out, endpoint.asked[before:]))
    return got


def usage(out) -> dict:
    (path,) = result_files(out)
    results = json.loads(path.read_text())["results"]["sae_detection"]
    return {m: results[f"{m},none"] for m in USAGE_METRICS}


def test_every_request_is_counted_once_with_the_tokens_the_api_reported(runs):
    proc, out, asked = runs[0]
    assert proc.returncode == 0, proc.stderr[-3000:]
    used = usage(out)
    assert used["llm_calls"] == len(asked) > 0 and used["llm_cached_calls"] == 0
    assert used["llm_prompt_tokens"] == sum(
        words(m["content"]) for body in asked for m in body["messages"]
    )
    assert used["llm_completion_tokens"] > 0


def test_the_estimate_comes_first_and_foresees_the_requests(runs):
    proc, out, asked = runs[0]
    (line,) = [m for m in ESTIMATE.finditer(proc.stderr)]
    assert int(line.group(1)) == len(asked)  # the same prompts, counted before any was sent
    assert int(line.group(2).replace(",", "")) > 0
    # before the first call: the line precedes the scorer's progress bar
    assert proc.stderr.index(line.group(0)) < proc.stderr.index("detection:")


def test_a_rerun_on_the_same_cache_pays_nothing(runs):
    first, second = runs[0], runs[1]
    proc, out, asked = second
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert asked == []  # the endpoint was not asked again
    used = usage(out)
    assert used["llm_calls"] == 0 and used["llm_prompt_tokens"] == 0
    assert used["llm_cached_calls"] == usage(first[1])["llm_calls"]


def test_over_budget_stops_before_the_first_call_with_one_line_and_no_results(runs):
    proc, out, asked = runs[2]
    assert proc.returncode != 0
    (line,) = error_lines(proc.stderr)
    assert "max_llm_tokens=10" in line and "lower n_latents" in line
    assert asked == [] and result_files(out) == []


def test_the_leaderboard_carries_the_counts(runs):
    _, out, asked = runs[0]

    def board(fmt: str) -> str:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "sae_interp_tasks.cli",
                "leaderboard",
                str(out),
                "--format",
                fmt,
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    (row,) = json.loads(board("json"))["groups"][0]["rows"]
    assert row["tasks"]["sae_detection"]["llm_usage"] == usage(out)
    (line,) = csv.DictReader(io.StringIO(board("csv")))
    assert float(line["sae_detection/llm_calls"]) == len(asked)
    assert float(line["sae_detection/llm_prompt_tokens"]) == usage(out)["llm_prompt_tokens"]
