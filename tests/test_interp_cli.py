"""The auto-interp tasks through the real `lm_eval` console script, in subprocesses.

The scorer is an OpenAI-compatible endpoint run by this test process on 127.0.0.1: an oracle
that answers every detection/fuzzing prompt correctly (with per-token logprobs), so the run
must score the planted " cat" and " dog" latents 1.0 through the whole harness path. With
`--seed 41` the seeded latent order puts the planted latents first among the live ones (the
planted SAE's other latents are random and mostly dead on this corpus); the default seed picks
other latents.

Each lm_eval start costs ~15 s of imports, and lm-eval bootstraps the stderr of every `nanmean`
metric with 100k draws (~1 s each: about half of run A), so the runs are few and shared:
  run A: sae_interp + sae_selfexplain, oracle scorer, --seed 41;
  run B: sae_detection, scorer at a closed port with a planted API key in the environment, default
  seed;
  run C: a misspelt --metadata key.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from conftest import CAT_LATENT, D_SAE, DOG_LATENT
from helpers import OracleEndpoint, error_lines, result_files, run_lm_eval, samples
from servers import free_port

# every test here runs lm_eval end to end (a minute or more): outside the fast subset
pytestmark = pytest.mark.slow

ORACLE_SEED = 41  # first live latents in its order: 0 (cat), then 1 (dog)
OTHER_SEED = 1234  # lm-eval's default: other latents come first
KEY_ENV = "SAE_TEST_KEY"
SECRET = "sk-planted-SECRET-xyz"

PASS = {
    "n_tokens": 4096,
    "context_size": 64,
    "window": 16,
    "n_top": 10,
    "n_sample": 40,
    "n_random": 64,
}
EXAMPLES = {
    "n_latents": 2,
    "min_examples": 5,
    "n_train": 10,
    "n_test_per_decile": 1,
    "n_test_non_activating": 10,
}
SELFEXPLAIN = {
    "patch_layer": 1,
    "n_scales": 4,
    "temperature": 0,
    "n_samples": 1,
    "max_new_tokens": 4,
    "n_context_examples": 2,
}


# ------------------------------------------------------------------------------------ the oracle
# endpoint
@pytest.fixture(scope="module")
def oracle_endpoint():
    """http://127.0.0.1:PORT/v1 answering chat completions as the oracle scorer; counts its
    requests."""
    with OracleEndpoint() as endpoint:
        yield endpoint.url, endpoint.asked


# ------------------------------------------------------------------------------------ runs
def lm_eval_args(sae_path: Path, tasks: str, meta: dict, out: Path, *extra: str) -> list[str]:
    # batch_size=8: with lm-eval's default of 1 the activation pass runs one context per forward
    # (~20x slower)
    return [
        "--model",
        "sae",
        "--model_args",
        f"path={sae_path},device=cpu,batch_size=8",
        "--tasks",
        tasks,
        "--limit",
        "2",
        "--metadata",
        json.dumps(meta),
        "--output_path",
        str(out),
        *extra,
    ]


@pytest.fixture(scope="module")
def run_a(planted_sae, corpus_file, oracle_endpoint, tmp_path_factory):
    url, asked = oracle_endpoint
    out, cache = tmp_path_factory.mktemp("run_a_out"), tmp_path_factory.mktemp("run_a_cache")
    meta = {
        "corpus": str(corpus_file),
        **PASS,
        **EXAMPLES,
        **SELFEXPLAIN,
        "explainer": "tokens",
        "scorer": "openai",
        "scorer_base_url": url,
        "scorer_model": "oracle",
    }
    proc = run_lm_eval(
        lm_eval_args(
            planted_sae.path,
            "sae_interp,sae_selfexplain",
            meta,
            out,
            "--log_samples",
            "--seed",
            str(ORACLE_SEED),
        ),
        cache,
    )
    files = result_files(out)
    return proc, out, json.loads(files[0].read_text()) if files else None, asked


@pytest.fixture(scope="module")
def run_b(planted_sae, corpus_file, tmp_path_factory):
    """The scorer's endpoint is a closed port; its API key is planted in the environment."""
    out, cache = tmp_path_factory.mktemp("run_b_out"), tmp_path_factory.mktemp("run_b_cache")
    meta = {
        "corpus": str(corpus_file),
        **PASS,
        **EXAMPLES,
        "explainer": "tokens",
        "scorer": "openai",
        "scorer_base_url": f"http://127.0.0.1:{free_port()}/v1",
        "scorer_model": "gpt-test",
        "scorer_api_key_env": KEY_ENV,
    }
    proc = run_lm_eval(
        lm_eval_args(
            planted_sae.path, "sae_detection", meta, out, "--log_samples", "--seed", str(OTHER_SEED)
        ),
        cache,
        **{KEY_ENV: SECRET},
    )
    files = result_files(out)
    return proc, out, cache, json.loads(files[0].read_text()) if files else None


# ------------------------------------------------------------------------------------ run A: the
# suite
def test_suite_run_writes_every_metric_and_the_group_row(run_a):
    proc, out, results, _ = run_a
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert results is not None, f"no results file under {out}"
    got = results["results"]
    for task in ("sae_detection", "sae_fuzzing"):
        for metric in (
            "balanced_acc",
            "precision",
            "recall",
            "f1",
            "auroc",
            "balanced_acc_shuffled",
            "auroc_shuffled",
            "answered_frac",
            "parse_failures",
            "skipped_dead",
            *(f"recall_decile{d}" for d in range(1, 11)),
        ):
            assert f"{metric},none" in got[task], (task, metric)
        assert got[task]["sample_len"] == 2
        assert results["higher_is_better"][task]["balanced_acc"] is True
        assert results["higher_is_better"][task]["balanced_acc_shuffled"] is False
    assert set(got["sae_embedding"]) >= {"auroc,none", "auroc_shuffled,none", "skipped_dead,none"}
    group = results["groups"]["sae_interp"]
    assert group == got["sae_interp"]
    assert sorted(results["group_subtasks"]["sae_interp"]) == [
        "sae_detection",
        "sae_embedding",
        "sae_fuzzing",
        "sae_simulation",
        "sae_surprisal",
    ]
    assert "correlation,none" in got["sae_simulation"] and "auroc,none" in got["sae_surprisal"]
    with_auroc = [
        got[t]["auroc,none"]
        for t in results["group_subtasks"]["sae_interp"]
        if "auroc,none" in got[t]
    ]
    assert len(with_auroc) == 4  # simulation scores a correlation
    # unweighted mean over the tasks that have it
    assert group["auroc,none"] == pytest.approx(sum(with_auroc) / 4)


def test_the_oracle_scores_the_planted_latents_perfectly(run_a):
    _, _, results, asked = run_a
    got = results["results"]
    for task in ("sae_detection", "sae_fuzzing"):
        r = got[task]
        assert r["balanced_acc,none"] == pytest.approx(1.0), task
        assert r["auroc,none"] == pytest.approx(1.0), task  # the endpoint's logprobs came through
        assert r["f1,none"] == pytest.approx(1.0) and r["answered_frac,none"] == 1.0
        assert r["parse_failures,none"] == 0
        # cat scored as dog and vice versa
        assert 0.2 <= r["balanced_acc_shuffled,none"] <= 0.8, task
        assert r["skipped_dead,none"] == 5  # the dead latents ahead of 0 and 1 in seed 41's order
    assert got["sae_embedding"]["auroc,none"] >= 0.9
    assert got["sae_embedding"]["auroc,none"] > got["sae_embedding"]["auroc_shuffled,none"]
    assert asked and all(body["model"] == "oracle" for body in asked)
    classifier = [
        b for b in asked if "Your list of" in (b.get("messages") or [{}])[-1].get("content", "")
    ]
    assert classifier and all(body.get("logprobs") is True for body in classifier)


def test_samples_show_explanation_windows_and_answers(run_a):
    _, out, _, _ = run_a
    det = samples(out, "sae_detection")
    assert [r["response"]["latent"] for r in det] == [CAT_LATENT, DOG_LATENT]
    # the doc names the latent that filled its slot: readers need not parse the response
    assert [r["doc"] for r in det] == [
        {"slot": 0, "latent": CAT_LATENT},
        {"slot": 1, "latent": DOG_LATENT},
    ]
    cat = det[0]["response"]
    assert cat["explanation"] == 'the token " cat"' and cat["explainer"] == "tokens"
    assert cat["skipped_before"] == 4
    assert cat["metrics"]["balanced_acc"] == 1.0 and det[0]["balanced_acc"] == 1.0
    assert all(" cat" in w["text"] and w["max_act"] > 0 for w in cat["train_windows"])
    windows = cat["scorer"]["windows"]
    assert len(windows) == 20 and sum(w["label"] for w in windows) == 10
    assert all(w["label"] == (w["max_act"] > 0) == w["prediction"] for w in windows)
    assert all(w["probability"] == pytest.approx(0.9 if w["label"] else 0.1) for w in windows)
    assert cat["scorer"]["batches"] == len(cat["scorer"]["answers"]) == 4
    assert all(a.startswith("[") and a.endswith("]") for a in cat["scorer"]["answers"])

    fuz = samples(out, "sae_fuzzing")[0]["response"]
    assert fuz["explanation"] == cat["explanation"]  # one explanation shared by the tasks
    assert all("<<" in w["text"] for w in fuz["scorer"]["windows"])

    emb = samples(out, "sae_embedding")[0]["response"]
    assert emb["latent"] == CAT_LATENT and emb["metrics"]["auroc"] >= 0.9
    assert all(
        {"text", "max_act", "label", "similarity"} <= set(w) for w in emb["scorer"]["windows"]
    )


def test_settings_are_recorded_in_the_results(run_a, corpus_file):
    _, _, results, _ = run_a
    meta = results["configs"]["sae_detection"]["metadata"]
    assert meta["corpus"] == str(corpus_file)
    assert meta["n_latents"] == 2 and meta["explainer"] == "tokens" and meta["scorer"] == "openai"
    assert results["config"]["fewshot_seed"] == ORACLE_SEED


def test_selfexplain_task_end_to_end(run_a):
    proc, out, results, _ = run_a
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = results["results"]["sae_selfexplain"]
    for metric in (
        "retrieval_auroc",
        "top1_match",
        "top1_chance",
        "matched_similarity",
        "peak_selfsim",
        "selfsim_threshold",
        "selfexplain_failure",
        "selfexplain_balanced_acc",
        "autointerp_balanced_acc",
        "skipped_dead",
    ):
        assert f"{metric},none" in got, metric
    assert got["top1_chance,none"] == pytest.approx(0.5)  # two latents
    assert 0.0 <= got["retrieval_auroc,none"] <= 1.0
    assert got["top1_match,none"] in (0.0, 0.5, 1.0)
    # the same scores sae_detection has
    assert got["autointerp_balanced_acc,none"] == pytest.approx(1.0)
    rows = samples(out, "sae_selfexplain")
    assert [r["response"]["latent"] for r in rows] == [CAT_LATENT, DOG_LATENT]
    thresholds = {r["response"]["metrics"]["selfsim_threshold"] for r in rows}
    # one calibrated threshold per run
    assert len(thresholds) == 1 and math.isfinite(thresholds.pop())
    for r in rows:
        m = r["response"]["metrics"]
        assert m["selfexplain_failure"] == float(m["peak_selfsim"] < m["selfsim_threshold"])
    resp = rows[0]["response"]
    assert resp["autointerp_explanation"] == 'the token " cat"'
    assert isinstance(resp["selfexplanation"], str)
    assert set(resp["sweeps"]) == {"meaning", "neutral", "repeat", "in_context"}
    for name, sweep in resp["sweeps"].items():
        n = SELFEXPLAIN["n_scales"]
        assert (
            len(sweep["scales"])
            == len(sweep["selfsim"])
            == len(sweep["entropy"])
            == len(sweep["composite"])
            == n
        )
        assert sweep["scales"][0] == 0.0 and sweep["scales"] == sorted(sweep["scales"])
        assert len(sweep["chosen_scales"]) == 3 and set(sweep["chosen_scales"]) <= set(range(n))
        assert sweep["chosen_scales"][0] == max(range(n), key=lambda i: sweep["composite"][i]), name
        assert set(sweep["generations"]) == {str(i) for i in range(n)}
        assert all(len(texts) == 1 for texts in sweep["generations"].values())  # greedy: one sample


# ------------------------------------------------------------------------------------ run B: seed
# and secrets
def test_seed_changes_the_chosen_latents(run_a, run_b):
    from sae_interp_tasks.stages.selection import candidate_order

    proc, out, _, _ = run_b
    assert proc.returncode == 0, proc.stderr[-3000:]
    other = [r["response"]["latent"] for r in samples(out, "sae_detection")]
    oracle = [r["response"]["latent"] for r in samples(run_a[1], "sae_detection")]
    assert oracle == [CAT_LATENT, DOG_LATENT]
    assert other != oracle and len(set(other)) == 2
    for seed, chosen in ((ORACLE_SEED, oracle), (OTHER_SEED, other)):
        order = candidate_order(D_SAE, None, seed)
        assert order.index(chosen[0]) < order.index(chosen[1])  # slots fill in the seeded order
    assert other == [8, 12]  # seed 1234's first live latents (random ones that fire on this corpus)


def test_unreachable_scorer_is_counted_not_scored(run_b):
    proc, out, _, results = run_b
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = results["results"]["sae_detection"]
    assert got["answered_frac,none"] == 0.0
    assert math.isnan(got["balanced_acc,none"]) and math.isnan(got["auroc,none"])
    assert got["parse_failures,none"] == 8  # 2 latents x 4 batches, every one failed
    resp = samples(out, "sae_detection")[0]["response"]
    assert all(a.startswith("<failed: APIConnectionError") for a in resp["scorer"]["answers"])


def test_api_key_never_leaks(run_b):
    proc, out, cache, results = run_b
    assert results is not None, proc.stderr[-3000:]
    for text, where in ((proc.stdout, "stdout"), (proc.stderr, "stderr")):
        assert SECRET not in text, where
    files = [p for folder in (out, cache) for p in folder.rglob("*") if p.is_file()]
    assert any(p.suffix == ".jsonl" for p in files) and any(
        p.name.endswith(".sqlite") for p in files
    )
    for path in files:
        assert SECRET.encode() not in path.read_bytes(), path
    # the variable's NAME is recorded (it says where the key came from); that is all
    assert results["configs"]["sae_detection"]["metadata"]["scorer_api_key_env"] == KEY_ENV


# ------------------------------------------------------------------------------------ run C: bad
# input
def test_unknown_metadata_key_is_one_error_line(planted_sae, corpus_file, sae_cache, tmp_path):
    meta = {"corpus": str(corpus_file), "n_latent": 2}
    proc = run_lm_eval(lm_eval_args(planted_sae.path, "sae_interp", meta, tmp_path), sae_cache)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    (line,) = error_lines(proc.stderr)
    assert proc.stderr.strip().splitlines()[-1] == line
    assert line.startswith("error: unknown --metadata key 'n_latent'; did you mean n_latents")
    valid = line.split("valid keys:")[1]
    for key in (
        "n_latents",
        "explainer",
        "scorer_model",
        "windows_per_prompt",
        "embedding_model",
        "patch_layer",
    ):
        assert key in valid, key
    assert not result_files(tmp_path)
