"""`sae-interp export --format delphi|neuronpedia` (reports/interop.py): a run's explanations and
scores written in delphi's run folder and Neuronpedia's explanation export. delphi's own result
analysis (the peer install, unmodified) reads the delphi export and finds our per-latent numbers;
the Neuronpedia rows carry the columns its tables require; `explainer: file` on either export reads
back the same explanations."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import CAT_LATENT, DOG_LATENT, REPO
from helpers import SMALL_PASS, OracleEndpoint, result_files, run_lm_eval, samples

pytestmark = pytest.mark.slow  # lm_eval end to end
DELPHI = REPO / ".venv" / "peers" / "delphi"
LATENTS = [CAT_LATENT, DOG_LATENT]
# the columns without a database default in Neuronpedia's Explanation and ExplanationScore
# tables (its Prisma schema), and in the config tables its import upserts
NP_REQUIRED = {
    "explanations": {"id", "modelId", "layer", "index", "description", "authorId"},
    "explanation_scores": {
        "id",
        "initiatedByUserId",
        "value",
        "explanationId",
        "explanationScoreTypeName",
        "explanationScoreModelName",
    },
    "explanation_type": {"name", "displayName", "description", "creatorName", "creatorId"},
    "explanation_model_type": {"name", "displayName", "description", "creatorName"},
    "explanation_score_type": {"name", "displayName", "description", "creatorName", "creatorId"},
    "explanation_score_model": {"name", "displayName", "description", "creatorName"},
}


def cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sae_interp_tasks.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


def lm_eval_args(
    sae, corpus, out, meta, tasks="sae_detection,sae_fuzzing,sae_embedding"
) -> list[str]:
    return [
        "--model",
        "sae",
        "--model_args",
        f"path={sae},device=cpu",
        "--tasks",
        tasks,
        "--metadata",
        json.dumps({**SMALL_PASS, "corpus": str(corpus), **meta}),
        "--log_samples",
        "--output_path",
        str(out),
    ]


@pytest.fixture(scope="module")
def scored_run(planted_sae, corpus_file, sae_cache, tmp_path_factory):
    """Detection, fuzzing and embedding of the two planted latents, scored by the oracle endpoint
    with the token-list explainer's explanations."""
    out = tmp_path_factory.mktemp("exported_run")
    meta = {"latents": LATENTS, "explainer": "tokens", "scorer": "openai", "scorer_model": "oracle"}
    with OracleEndpoint() as endpoint:
        meta["scorer_base_url"] = endpoint.url
        proc = run_lm_eval(lm_eval_args(planted_sae.path, corpus_file, out, meta), sae_cache)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_delphis_own_analysis_reads_the_delphi_export(
    scored_run, tmp_path, planted_sae, corpus_file, sae_cache
):
    if not (DELPHI / "delphi").is_dir():
        pytest.skip("the delphi peer is not installed (bash scripts/setup.sh installs it)")
    proc = cli("export", str(scored_run), "--format", "delphi", "--output", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    (root,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    config = json.loads((root / "run_config.json").read_text())
    (module,) = config["hookpoints"]
    assert sorted(config["scorers"]) == ["detection", "fuzz"]
    explained = {
        r["doc"]["latent"]: r["response"]["explanation"]
        for r in samples(scored_run, "sae_embedding")
    }
    for latent, text in explained.items():
        assert (
            json.loads((root / "explanations" / f"{module}_latent{latent}.txt").read_text()) == text
        )

    sys.path.insert(0, str(DELPHI))
    try:
        from delphi.log.result_analysis import (
            compute_classification_metrics,
            compute_confusion,
            load_data,
        )

        frame, counts = load_data(root / "scores", [module])
    finally:
        sys.path.remove(str(DELPHI))
    assert counts is None  # no firing counts file: the export says so
    for task, scorer in (("sae_detection", "detection"), ("sae_fuzzing", "fuzz")):
        ours = {r["doc"]["latent"]: r["response"]["metrics"] for r in samples(scored_run, task)}
        assert sorted(ours) == sorted(LATENTS)
        for latent, metrics in ours.items():
            rows = frame[(frame.score_type == scorer) & (frame.latent_idx == latent)]
            windows = metrics["answered_frac"] * len(rows)
            assert len(rows) > 0 and windows == pytest.approx(rows.prediction.notna().sum())
            theirs = compute_classification_metrics(compute_confusion(rows))
            assert theirs["accuracy"] == pytest.approx(metrics["balanced_acc"]), (task, latent)
            assert theirs["precision"] == pytest.approx(metrics["precision"]), (task, latent)
            assert theirs["recall"] == pytest.approx(metrics["recall"]), (task, latent)
    assert read_back(root, planted_sae, corpus_file, sae_cache, tmp_path / "back") == explained


def read_back(path, planted_sae, corpus_file, sae_cache, out) -> dict:
    """The explanations `explainer: file` reads from an export, as sae_embedding logs them."""
    meta = {"latents": LATENTS, "explainer": "file", "explanations_path": str(path)}
    proc = run_lm_eval(
        lm_eval_args(planted_sae.path, corpus_file, out, meta, "sae_embedding"), sae_cache
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert result_files(out)
    return {r["doc"]["latent"]: r["response"]["explanation"] for r in samples(out, "sae_embedding")}


def test_the_neuronpedia_export_and_the_round_trip(
    scored_run, tmp_path, planted_sae, corpus_file, sae_cache
):
    out = tmp_path / "np"
    missing = cli("export", str(scored_run), "--format", "neuronpedia", "--output", str(out))
    assert missing.returncode == 2 and not out.exists()
    assert "pass --neuronpedia-id MODEL/SOURCE" in missing.stderr
    ok = cli(
        "export",
        str(scored_run),
        "--format",
        "neuronpedia",
        "--neuronpedia-id",
        "smollm2-135m/6-planted",
        "--output",
        str(out),
    )
    assert ok.returncode == 0, ok.stderr
    base = out / "smollm2-135m" / "6-planted"

    def rows(path: Path) -> list[dict]:
        text = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        return [json.loads(line) for line in text.decode().splitlines()]

    explanations = rows(base / "explanations" / "batch-0.jsonl.gz")
    scores = rows(base / "explanation_scores" / "batch-0.jsonl.gz")
    tables = {"explanations": explanations, "explanation_scores": scores}
    for table in (
        "explanation_type",
        "explanation_model_type",
        "explanation_score_type",
        "explanation_score_model",
    ):
        tables[table] = rows(out / "config" / f"{table}.jsonl")
    for table, got in tables.items():
        assert got and all(NP_REQUIRED[table] <= set(r) for r in got), table
    assert {r["index"] for r in explanations} == {str(lat) for lat in LATENTS}
    assert all(isinstance(r["index"], str) for r in explanations)
    by_id = {r["id"]: r for r in explanations}
    assert all(s["explanationId"] in by_id for s in scores)
    typed = {r["name"] for r in tables["explanation_score_type"]}
    assert (
        typed
        == {s["explanationScoreTypeName"] for s in scores}
        == {"sae_detection", "sae_fuzzing", "sae_embedding"}
    )
    assert {r["name"] for r in tables["explanation_score_model"]} == {
        s["explanationScoreModelName"] for s in scores
    }
    detection = {
        r["doc"]["latent"]: r["response"]["metrics"] for r in samples(scored_run, "sae_detection")
    }
    for s in scores:
        if s["explanationScoreTypeName"] == "sae_detection":
            latent = int(by_id[s["explanationId"]]["index"])
            assert s["value"] == pytest.approx(detection[latent]["balanced_acc"])

    # explainer: file on the export reads the same explanations back
    before = {
        r["doc"]["latent"]: r["response"]["explanation"]
        for r in samples(scored_run, "sae_embedding")
    }
    assert read_back(base, planted_sae, corpus_file, sae_cache, tmp_path / "back") == before
