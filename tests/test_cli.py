"""The real `lm_eval` console script against the installed package, in subprocesses.

One run serves several tests (module fixture `run`): sae_core on the planted SAE over a local
corpus, plus two stock loglikelihood tasks from tests/data (multiple_choice, loglikelihood_rolling)
through `--model sae`. Each lm_eval start costs ~15 s here (imports), so the runs are few.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from conftest import HOOK
from helpers import error_lines, result_files, run_lm_eval, run_python
from sae_interp_tasks.stages import core_metrics, core_plain

LIMIT = 2
CORE_META = {"n_tokens": 2048, "context_size": 64, "chunk_contexts": 4}


@pytest.fixture(scope="module")
def run(planted_sae, corpus_file, sae_cache, tmp_path_factory):
    """One lm_eval run: sae_core + the stock tasks of tests/data, with --log_samples."""
    out = tmp_path_factory.mktemp("lm_eval_out")
    meta = json.dumps({"corpus": str(corpus_file), **CORE_META})
    proc = run_lm_eval(
        [
            "--model",
            "sae",
            "--model_args",
            f"path={planted_sae.path},device=cpu",
            "--tasks",
            "sae_core,sae_test_tiny_mc,sae_test_tiny_ppl",
            "--include_path",
            "tests/data",
            "--limit",
            str(LIMIT),
            "--metadata",
            meta,
            "--output_path",
            str(out),
            "--log_samples",
        ],
        sae_cache,
        console=True,
    )  # the installed console script, plugin hook and all
    files = result_files(out)
    results = json.loads(files[0].read_text()) if files else None
    return proc, out, results


@pytest.mark.slow  # the module's lm_eval run, end to end
def test_sae_core_run_writes_results(run, planted_sae):
    proc, out, results = run
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "generation_kwargs" not in proc.stderr  # our tasks generate nothing: no warning about it
    assert results is not None, f"no results file under {out}"
    got = results["results"]["sae_core"]
    for metric in (
        "l0",
        "mse",
        "explained_variance",
        "dead_fraction",
        "dense_fraction",
        "ce_loss_recovered",
        "ce_loss_clean",
        "ce_loss_spliced",
        "ce_loss_zero_ablation",
    ):
        assert isinstance(got[f"{metric},none"], float), metric
        assert f"{metric}_stderr,none" in got
    assert got["sample_len"] == LIMIT
    assert got["l0,none"] > 0  # the planted latents fire on " cat" / " dog"
    assert 0 <= got["dead_fraction,none"] <= 1 and 0 <= got["dense_fraction,none"] <= 1
    assert results["config"]["model"] == "sae"
    assert results["config"]["model_args"]["path"] == str(planted_sae.path)
    assert results["higher_is_better"]["sae_core"]["explained_variance"] is True
    assert results["higher_is_better"]["sae_core"]["l0"] is False


def test_sae_core_numbers_match_an_in_process_computation(
    run, tiny_model, loaded_planted, corpus_file, tokenizer
):
    """The harness path (docs = chunks, the cached SAE-independent reference, the spliced forward
    from the hook on, corpus-level aggregation) gives the numbers of the plain method: three full
    hooked forwards per chunk, computed here in process."""
    from sae_interp_tasks.stages.corpus import CorpusSpec, token_contexts

    _, _, results = run
    seed = results["config"]["fewshot_seed"]  # the tasks' seed is the harness's --seed
    sae, _ = loaded_planted
    per_chunk = CORE_META["chunk_contexts"]
    contexts = torch.stack(
        list(
            token_contexts(
                CorpusSpec(source=str(corpus_file)),
                tokenizer,
                LIMIT * per_chunk * CORE_META["context_size"],
                CORE_META["context_size"],
                True,
                seed,
            )
        )
    )
    stats = [
        core_plain.three_forward_chunk_stats(
            tiny_model, sae, HOOK, contexts[i * per_chunk : (i + 1) * per_chunk]
        )
        for i in range(LIMIT)
    ]
    got = results["results"]["sae_core"]
    assert got["l0,none"] == pytest.approx(
        np.mean([s.l0_sum / s.n_tokens for s in stats]), rel=1e-6
    )
    assert got["mse,none"] == pytest.approx(
        np.mean([s.sq_err_sum / s.n_tokens for s in stats]), rel=1e-5
    )
    assert got["explained_variance,none"] == pytest.approx(
        core_metrics.explained_variance(stats), rel=1e-5, abs=1e-6
    )
    assert got["dead_fraction,none"] == pytest.approx(core_metrics.dead_fraction(stats))
    assert got["ce_loss_recovered,none"] == pytest.approx(
        core_metrics.ce_loss_recovered(stats), abs=1e-3
    )


@pytest.mark.slow  # the module's lm_eval run, end to end
def test_results_record_the_settings_used(run, corpus_file):
    """The results file records what was used: sae_core's config holds its metadata (corpus, token
    count), with the template's keys merged in (lm-eval's Task.__init__ would have lost them)."""
    _, _, results = run
    config = results["configs"]["sae_core"]
    assert config["task"] == "sae_core"
    assert config.get("metadata", {}).get("corpus") == str(corpus_file)
    assert config["metadata"]["n_tokens"] == CORE_META["n_tokens"]


@pytest.mark.slow  # the module's lm_eval run, end to end
def test_stock_tasks_through_the_sae_backend(run):
    proc, _, results = run
    assert proc.returncode == 0, proc.stderr[-3000:]
    mc = results["results"]["sae_test_tiny_mc"]
    assert 0.0 <= mc["acc,none"] <= 1.0 and mc["sample_len"] == LIMIT
    ppl = results["results"]["sae_test_tiny_ppl"]
    assert math.isfinite(ppl["word_perplexity,none"]) and ppl["word_perplexity,none"] > 1
    assert 0 < ppl["bits_per_byte,none"] < 64


@pytest.mark.slow  # the module's lm_eval run, end to end
def test_log_samples_are_written(run):
    _, out, _ = run
    for task in ("sae_core", "sae_test_tiny_mc"):
        (samples,) = out.rglob(f"samples_{task}_*.jsonl")
        rows = [json.loads(line) for line in samples.read_text().splitlines()]
        assert len(rows) == LIMIT


def test_unknown_metadata_key_is_one_error_line(planted_sae, corpus_file, sae_cache, tmp_path):
    meta = json.dumps({"corpus": str(corpus_file), "n_tokenz": 2048})
    proc = run_lm_eval(
        [
            "--model",
            "sae",
            "--model_args",
            f"path={planted_sae.path},device=cpu",
            "--tasks",
            "sae_core",
            "--limit",
            "2",
            "--metadata",
            meta,
            "--output_path",
            str(tmp_path),
        ],
        sae_cache,
    )
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    (line,) = error_lines(proc.stderr)
    assert proc.stderr.strip().splitlines()[-1] == line
    assert line.startswith("error: unknown --metadata key 'n_tokenz'; did you mean n_tokens")
    assert "valid keys:" in line and "chunk_contexts" in line
    assert not result_files(tmp_path)


def test_unknown_release_names_the_closest(sae_cache, tmp_path):
    proc = run_lm_eval(
        [
            "--model",
            "sae",
            "--model_args",
            "release=gpt2-small-res-jbb,sae_id=blocks.8.hook_resid_pre",
            "--tasks",
            "sae_core",
            "--limit",
            "1",
            "--output_path",
            str(tmp_path),
        ],
        sae_cache,
    )
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    (line,) = error_lines(proc.stderr)
    assert line.startswith(
        "error: unknown release 'gpt2-small-res-jbb' (closest: gpt2-small-res-jb,"
    )
    assert not result_files(tmp_path)


def test_registry_keeps_the_builtin_models(sae_cache):
    proc = run_python(
        "from lm_eval.api.registry import get_model\n"
        "hf, sae = get_model('hf'), get_model('sae')\n"
        "assert hf.__name__ == 'HFLM', hf\n"
        "assert sae.__module__ == 'sae_interp_tasks.harness.backend', sae\n"
        "from lm_eval.tasks import TaskManager\n"
        "assert 'sae_core' in TaskManager().all_tasks\n",
        sae_cache,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_plugin_costs_nothing_without_lm_eval(sae_cache):
    proc = run_python(
        "import sys\n"
        "assert 'sae_interp_tasks._lm_eval_hook' in sys.modules  # the .pth hook ran at startup\n"
        "import sae_interp_tasks\n"
        "heavy = [m for m in ('lm_eval', 'torch', 'transformers', 'sae_lens') if m in "
        "sys.modules]\n"
        "assert not heavy, heavy\n",
        sae_cache,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.slow
def test_embedded_default_smoke(sae_cache, tmp_path):
    """No model_args at all: the demo SAE on the bundled SmolLM2-135M, stdlib corpus."""
    from sae_interp_tasks.stages.saes import DEMO_SAE_DIR

    if not (DEMO_SAE_DIR / "cfg.json").exists():
        pytest.skip(
            f"{DEMO_SAE_DIR} has no cfg.json yet (the demo SAE is trained by "
            "scripts/train_demo_sae.py)"
        )
    proc = run_lm_eval(
        [
            "--model",
            "sae",
            "--tasks",
            "sae_core",
            "--limit",
            "1",
            "--metadata",
            json.dumps({"n_tokens": 2048, "chunk_contexts": 2}),
            "--output_path",
            str(tmp_path),
        ],
        sae_cache,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (path,) = result_files(tmp_path)
    got = json.loads(path.read_text())["results"]["sae_core"]
    assert got["l0,none"] > 0
    assert got["explained_variance,none"] > 0  # a trained SAE explains some variance
    assert got["ce_loss_clean,none"] < got["ce_loss_zero_ablation,none"]
