"""Sparse probing (stages/probe_data.py, stages/probing.py, tasks/sparse_probing.py): the binary
tasks SAEBench builds, top-k selection on a sparse matrix, the same accuracies as SAEBench's own
sparse-probing functions on the same activations (the peer install), bad input, and the task end to
end through lm_eval."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import sparse

from helpers import (
    SAEBENCH_PEER,
    SAEBENCH_RUN,
    result_files,
    run_lm_eval,
    sae_interp,
    saebench,
    saebench_row,
    samples,
)
from sae_interp_tasks.errors import SaeInterpError
from sae_interp_tasks.stages import probe_data, probing
from sae_interp_tasks.stages.probe_data import ProbeConfig


def synthetic(n_classes=4, per_class=(60, 20), width=300, seed=0) -> probing.ProbeActivations:
    """Texts of `n_classes` classes: class c lights latent c strongly and a few random ones."""
    rng = np.random.default_rng(seed)
    rows, labels, train = [], [], []
    for split, n in ((True, per_class[0]), (False, per_class[1])):
        for c in range(n_classes):
            for _ in range(n):
                v = np.zeros(width, dtype=np.float32)
                v[rng.choice(width, 5, replace=False)] = rng.random(5)
                v[c] += 1.0 + rng.random()
                rows.append(v)
                labels.append(c)
                train.append(split)
    x = np.stack(rows)
    return probing.ProbeActivations(
        llm=x[:, :32] + rng.normal(0, 0.5, (len(x), 32)).astype(np.float32),
        sae=sparse.csr_matrix(x),
        labels=np.array(labels),
        train=np.array(train),
    )


def test_a_binary_task_is_the_class_against_as_many_others_drawn_evenly():
    labels = np.repeat(np.arange(4), 30)
    rows, target = probing.binary_task(labels, np.arange(len(labels)), 2, np.random.default_rng(0))
    assert len(rows) == 60 and target.sum() == 30 and len(set(rows.tolist())) == 60
    assert (labels[rows[target == 1]] == 2).all()
    negatives = labels[rows[target == 0]]
    assert 2 not in negatives and all(8 <= (negatives == c).sum() <= 10 for c in (0, 1, 3))


def test_top_k_is_the_same_on_sparse_and_dense_and_finds_the_planted_latent():
    acts = synthetic()
    rows, target = probing.binary_task(
        acts.labels, np.flatnonzero(acts.train), 1, np.random.default_rng(0)
    )
    dense = acts.sae.toarray()
    picked = probing.top_k_columns(acts.sae[rows], target, 3)
    assert picked.tolist() == probing.top_k_columns(dense[rows], target, 3).tolist()
    assert picked[0] == 1


def test_accuracies_equal_saebench_sparse_probing_functions_on_the_same_activations():
    """SAEBench's top-k mean-difference mask and its scikit-learn probe, on the train and test sets
    our binary task draws: the same latents and the same test accuracy for every k and class."""
    (theirs,) = saebench("evals.sparse_probing.probe_training")
    import torch

    acts = synthetic(width=200)
    ks = [1, 2, 5]
    for positive in range(4):
        ours = probing.score_class(acts, positive, ks, seed=7)
        rng = np.random.default_rng([7, positive])
        rows = np.arange(len(acts.labels))
        train_rows, train_y = probing.binary_task(acts.labels, rows[acts.train], positive, rng)
        test_rows, test_y = probing.binary_task(acts.labels, rows[~acts.train], positive, rng)
        x_train = torch.tensor(acts.sae[train_rows].toarray())
        x_test = torch.tensor(acts.sae[test_rows].toarray())
        y_train, y_test = torch.tensor(train_y, dtype=torch.int), torch.tensor(test_y)
        for k in ks:
            mask = theirs.get_top_k_mean_diff_mask(x_train, y_train, k)
            assert sorted(np.flatnonzero(~mask.numpy())) == sorted(ours["_chosen"]["sae"][:k])
            _, accuracy = theirs.train_sklearn_probe(
                theirs.apply_topk_mask_reduce_dim(x_train, mask),
                y_train,
                theirs.apply_topk_mask_reduce_dim(x_test, mask),
                y_test.to(torch.int),
            )
            assert ours[f"sae_top_{k}_test_accuracy"] == pytest.approx(accuracy), (positive, k)
        assert ours["sae_top_1_test_accuracy"] > 0.9 and ours["test_chance"] == 0.5


def test_the_offline_dataset_and_bad_input(monkeypatch):
    cfg = ProbeConfig(probe_train_per_class=40, probe_test_per_class=10, probe_context=32)
    data = probe_data.load_probe_data(cfg, 0)
    assert len(data.classes) == 5 and not data.skipped
    assert all(len(data.train[c]) == 40 and len(data.test[c]) == 10 for c in data.classes)
    assert not set(data.train[data.classes[0]]) & set(data.test[data.classes[0]])
    again = probe_data.load_probe_data(cfg, 0)
    assert again.train == data.train  # seeded
    with pytest.raises(SaeInterpError, match="are not classes of stdlib .*fix probe_classes"):
        probe_data.load_probe_data(ProbeConfig(probe_classes=["asyncio", "no_such_package"]), 0)
    big = ProbeConfig(probe_train_per_class=100_000)
    with pytest.raises(SaeInterpError, match="lower probe_train_per_class"):
        probe_data.load_probe_data(big, 0)
    with pytest.raises(SaeInterpError, match="fewer than 2 classes"):
        ProbeConfig(probe_classes=["asyncio"])
    with pytest.raises(SaeInterpError, match="probe_k=.*choose from: 1, 2, 5, 10, 20, 50, 100"):
        ProbeConfig(probe_k=[3])

    # a Hugging Face dataset without the label field named: the fields it has
    import datasets

    rows = {"sentence": ["a b c"] * 6, "topic": [0, 1, 2] * 2}
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: datasets.Dataset.from_dict(rows))
    hf = ProbeConfig(probe_dataset="hf:someone/topics", probe_text_field="sentence")
    with pytest.raises(SaeInterpError, match="has no field 'label'; set probe_label_field to one"):
        probe_data.load_probe_data(hf, 0)
    with pytest.raises(SaeInterpError, match="give stdlib or hf:"):
        probe_data.load_probe_data(ProbeConfig(probe_dataset="topics.csv"), 0)


@pytest.mark.slow  # lm_eval end to end
def test_sparse_probing_end_to_end(planted_sae, sae_cache, tmp_path):
    meta = {
        "probe_train_per_class": 24,
        "probe_test_per_class": 8,
        "probe_context": 24,
        "probe_max_classes": 3,
        "probe_k": [1, 2],
    }
    args = [
        "--model",
        "sae",
        "--model_args",
        f"path={planted_sae.path},device=cpu",
        "--tasks",
        "sae_sparse_probing",
        "--metadata",
        json.dumps(meta),
        "--log_samples",
        "--output_path",
        str(tmp_path / "run"),
    ]
    proc = run_lm_eval(args, sae_cache)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(result_files(tmp_path / "run")[0].read_text())["results"]
    task = got["sae_sparse_probing"]
    for k in (1, 2):
        assert 0 <= task[f"sae_top_{k}_test_accuracy,none"] <= 1
    assert "sae_top_5_test_accuracy,none" not in task and task["test_chance,none"] == 0.5
    rows = samples(tmp_path / "run", "sae_sparse_probing")
    assert len(rows) == 3
    assert {r["response"]["probe_class"] for r in rows} == {
        "stdlib:asyncio",
        "stdlib:email",
        "stdlib:tkinter",
    }
    assert all(len(r["response"]["latents"]) == 2 for r in rows)
    assert all(r["response"]["sizes"] == {"train": 48, "test": 16} for r in rows)
    # a rerun reads the cached activations back: the same numbers
    again = run_lm_eval([*args[:-1], str(tmp_path / "again")], sae_cache)
    assert again.returncode == 0, again.stderr[-3000:]
    second = json.loads(result_files(tmp_path / "again")[0].read_text())["results"]
    assert second["sae_sparse_probing"] == task
    check_saebench_files(tmp_path, task)


def check_saebench_files(tmp_path, task: dict) -> None:
    """Our run exported in SAEBench's sparse_probing layout validates against the schema sae-bench
    ships, unrelaxed; a file SAEBench's own output classes write reads as a leaderboard row beside
    ours, with its numbers."""
    saebench()  # skips without the peer
    import jsonschema

    out = tmp_path / "saebench"
    proc = sae_interp("export", str(tmp_path / "run"), "--format", "saebench", "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    (path,) = (out / "sparse_probing").glob("*_eval_results.json")
    data = json.loads(path.read_text())
    schema_path = (
        SAEBENCH_PEER / "sae_bench/evals/sparse_probing/eval_output_schema_sparse_probing.json"
    )
    jsonschema.validate(data, json.loads(schema_path.read_text()))
    metrics = data["eval_result_metrics"]
    assert metrics["sae"]["sae_top_1_test_accuracy"] == pytest.approx(
        task["sae_top_1_test_accuracy,none"]
    )
    assert set(metrics["sae"]) == {"sae_top_1_test_accuracy", "sae_top_2_test_accuracy"}
    assert data["eval_result_details"][0]["dataset_name"] == "stdlib"
    assert data["eval_result_unstructured"]["left_out"] == {"sae": ["sae_test_accuracy"]}

    eval_config, eo = saebench(
        "evals.sparse_probing.eval_config", "evals.sparse_probing.eval_output"
    )
    theirs = eo.SparseProbingEvalOutput(
        eval_config=eval_config.SparseProbingEvalConfig(model_name="smollm2"),
        eval_result_metrics=eo.SparseProbingMetricCategories(
            llm=eo.SparseProbingLlmMetrics(llm_test_accuracy=0.91, llm_top_1_test_accuracy=0.6),
            sae=eo.SparseProbingSaeMetrics(sae_top_1_test_accuracy=0.73),
        ),
        sae_lens_id="layer_6",
        sae_cfg_dict={"d_sae": 64, "d_in": 64, "hook_name": "blocks.6.hook_resid_post"},
        **SAEBENCH_RUN,
    )
    theirs.to_json_file(str(tmp_path / "theirs_eval_results.json"))
    row = saebench_row(tmp_path / "run", tmp_path / "theirs_eval_results.json")
    cell = row["tasks"]["sae_sparse_probing"]["metrics"]["sae_top_1_test_accuracy"]
    assert cell["value"] == pytest.approx(0.73)
