"""The weights tasks: the logit lens (sae_logitlens), the weight explainers (logits, neighbours)
and the comparison of an SAE's dictionary with a reference's (sae_similarity)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from tests.conftest import CAT, CAT_LATENT, DOG, DOG_LATENT
from tests.helpers import SMALL_PASS, result_files, run_lm_eval, samples

META = {**SMALL_PASS, "latents": [CAT_LATENT, DOG_LATENT]}


def run_planted(planted_sae, corpus_file, sae_cache, out, task: str, **extra):
    """lm_eval with the planted SAE on the test corpus, META's settings plus `extra`, samples
    logged under `out`."""
    meta = {**META, "corpus": str(corpus_file), **extra}
    return run_lm_eval(
        [
            "--model",
            "sae",
            "--model_args",
            f"path={planted_sae.path},device=cpu",
            "--tasks",
            task,
            "--metadata",
            json.dumps(meta),
            "--log_samples",
            "--output_path",
            str(out),
        ],
        sae_cache,
    )


def test_the_lens_reads_a_planted_token_direction_first(loaded_planted, tiny_model, tokenizer):
    """A latent whose decoder row is one token's unembedding (tied embeddings: the planted " cat"
    latent) promotes that token first, and the logits explainer names it."""
    from sae_interp_tasks.stages.explainers import ExplainerConfig, weight_explanations
    from sae_interp_tasks.stages.lens import WeightLens, enrichment, top_tokens

    sae, _ = loaded_planted
    lens = WeightLens(tiny_model, sae, tokenizer.decode)
    weights = lens.logits([CAT_LATENT, DOG_LATENT]).numpy()
    assert lens.token_text(top_tokens(weights[0], 1)[0]) == CAT
    assert lens.token_text(top_tokens(weights[1], 1)[0]) == DOG
    explained = weight_explanations(
        [CAT_LATENT], ExplainerConfig(explainer="logits", neighbour_tokens=1), lens
    )
    assert explained[CAT_LATENT].text == f'the token "{CAT}"'
    near = weight_explanations(
        [DOG_LATENT], ExplainerConfig(explainer="neighbours", neighbour_tokens=3), lens
    )
    assert f'"{DOG}"' in near[DOG_LATENT].text
    # the known-answer planting: a random latent's decoder row set to " dog"'s unembedding (read
    # back through the final norm's gain) puts " dog" first
    from sae_interp_tasks.validity.planted_weights import plant_lens

    planted = sae.__class__(sae.cfg)
    planted.load_state_dict(sae.state_dict())
    dog = tokenizer.encode(DOG, add_special_tokens=False)[0]
    plant_lens(planted, tiny_model, {5: dog})
    lens = WeightLens(tiny_model, planted, tokenizer.decode)
    assert lens.token_text(top_tokens(lens.logits([5]).numpy()[0], 1)[0]) == DOG
    # a set holding the top of the lens is enriched (rank statistic 1), one at its bottom is not
    w = np.arange(10.0)
    got = enrichment(w, {"top": w >= 8, "bottom": w <= 1, "empty": w > 100})
    assert got["top"] == 1.0 and got["bottom"] == 0.0 and np.isnan(got["empty"])


def test_the_lens_refuses_an_sae_no_unembedding_reads(loaded_planted, tiny_model, tokenizer):
    from sae_lens import StandardSAE, StandardSAEConfig

    from sae_interp_tasks.errors import SaeInterpError
    from sae_interp_tasks.stages.lens import WeightLens

    narrow = StandardSAE(StandardSAEConfig(d_in=64, d_sae=8))
    with pytest.raises(SaeInterpError, match="64-wide but the residual stream .* 128-wide"):
        WeightLens(tiny_model, narrow, tokenizer.decode)


def test_shape_classes():
    from scipy.stats import kurtosis, skew

    from sae_interp_tasks.stages.lens import shape_class

    rng = np.random.default_rng(0)
    spike = rng.normal(size=5000)
    spike[:5] = 40.0
    assert shape_class(skew(spike), kurtosis(spike), 3.0) == "prediction"
    assert shape_class(skew(-spike), kurtosis(-spike), 3.0) == "suppression"
    two = np.r_[rng.normal(-2, 0.3, 2500), rng.normal(2, 0.3, 2500)]
    assert shape_class(skew(two), kurtosis(two), 3.0) == "partition"


@pytest.mark.slow  # lm_eval end to end
def test_sae_logitlens_end_to_end(planted_sae, corpus_file, sae_cache, tmp_path):
    """lm_eval runs the logit lens with no explainer at all (explainer hf would load a model and
    call it: the run must not), logs each latent's promoted tokens, and the planted latents'
    lenses predict the token after where they fire better than chance."""
    proc = run_planted(
        planted_sae,
        corpus_file,
        sae_cache,
        tmp_path / "run",
        "sae_logitlens",
        explainer="hf",
        explainer_model="nowhere",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "nowhere" not in proc.stderr  # no explainer was built
    got = json.loads(result_files(tmp_path / "run")[0].read_text())["results"]["sae_logitlens"]
    for metric in ("auroc", "auroc_shuffled", "skewness", "kurtosis", "enrichment_numbers"):
        assert f"{metric},none" in got
    rows = samples(tmp_path / "run", "sae_logitlens")
    docs = {row["doc"]["latent"]: row["response"] for row in rows}
    assert docs[CAT_LATENT]["promoted"][0][0] == CAT
    assert docs[DOG_LATENT]["promoted"][0][0] == DOG
    assert docs[CAT_LATENT]["lens_class"] in ("prediction", "suppression", "partition")


# --- sae_similarity ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def demo():
    from sae_interp_tasks.stages.saes import DEMO_SAE_DIR, SAESource, load_sae

    sae, info = load_sae(SAESource(path=str(DEMO_SAE_DIR)))
    return sae, info


def test_a_permuted_noised_copy_of_the_demo_matches_itself(demo):
    """Known answer: at least 99% of latents matched one-to-one to their own copy, MCS >= 0.95; a
    random reference of the same shape sits at the chance level the task reports."""
    from sae_interp_tasks.stages.saes import DEMO_SAE_DIR, SAESource, load_sae
    from sae_interp_tasks.stages.similarity import SimilarityConfig, compare
    from sae_interp_tasks.validity.planted_weights import permuted_copy

    sae, _ = demo
    copy, _ = load_sae(SAESource(path=str(DEMO_SAE_DIR)))
    perm = permuted_copy(copy, noise=0.2)
    dec_b, enc_b = copy.W_dec.detach(), copy.W_enc.detach().T
    cfg = SimilarityConfig(similarity_block=512)
    got = compare(sae.W_dec.detach(), sae.W_enc.detach().T, dec_b, enc_b, cfg, seed=0)
    own = torch.argsort(perm).numpy()  # original latent i sits at row own[i] of the copy
    assert (got.partner == own).mean() >= 0.99
    assert np.median(got.mcs) >= 0.95 and (got.mcs >= 0.95).mean() >= 0.99
    summary = got.summary(cfg.match_threshold)
    assert summary["dict_matched_frac"] >= 0.99
    # a random dictionary as the reference: its MCS is the chance level, nothing matches
    rand = torch.randn(dec_b.shape, generator=torch.Generator().manual_seed(5))
    chance = compare(sae.W_dec.detach(), sae.W_enc.detach().T, rand, rand, cfg, seed=0)
    assert abs(chance.mcs.mean() - chance.mcs_random.mean()) < 0.01
    assert chance.summary(cfg.match_threshold)["dict_matched_frac"] == 0.0
    assert chance.mcs.mean() < 0.3


def test_max_cosine_to_itself_equals_saebench(demo):
    """Without a reference, each latent's max cosine to the other latents is SAEBench's own
    calculate_max_cosine_sim (the peer install of sae-bench, as benchmarks/saebench_core.py)."""
    import sys
    from pathlib import Path

    from sae_interp_tasks.stages.similarity import SimilarityConfig, compare

    peer = Path(sys.prefix) / "peers" / "sae-bench"
    if not (peer / "sae_bench").is_dir():
        pytest.fail(f"{peer} is missing: run scripts/setup.sh")
    sys.path.insert(0, str(peer))
    try:
        from sae_bench.evals.core.main import calculate_max_cosine_sim
    finally:
        sys.path.remove(str(peer))
    sae, _ = demo
    got = compare(sae.W_dec.detach(), sae.W_enc.detach().T, None, None, SimilarityConfig())
    theirs_dec = calculate_max_cosine_sim(sae.W_dec.detach().T).numpy()
    theirs_enc = calculate_max_cosine_sim(sae.W_enc.detach()).numpy()
    np.testing.assert_allclose(got.mcs, theirs_dec, atol=1e-5)
    np.testing.assert_allclose(got.mcs_encoder, theirs_enc, atol=1e-5)
    assert abs(got.summary(0.7)["dict_mean_mcs"] - float(theirs_dec.mean())) < 1e-5


def test_the_matching_is_one_to_one_and_leaves_poor_rows_unmatched():
    from sae_interp_tasks.stages.similarity import one_to_one

    # rows 0 and 1 both want column 0; row 1 has a second choice; row 2 only has negative cosines
    values = np.array([[0.9, 0.1], [0.8, 0.7], [-0.2, -0.5]], dtype=np.float32)
    indices = np.array([[0, 1], [0, 2], [1, 2]])
    partner = one_to_one(values, indices, n_b=3)
    assert partner.tolist() == [0, 2, -1]


def test_a_dictionary_too_large_for_memory_gb_is_refused():
    from sae_interp_tasks.errors import SaeInterpError
    from sae_interp_tasks.stages.similarity import SimilarityConfig, check_memory

    with pytest.raises(SaeInterpError, match="more than memory_gb=0.5; raise memory_gb"):
        check_memory(1_048_576, 1_048_576, 2304, SimilarityConfig(memory_gb=0.5))


@pytest.mark.slow  # lm_eval end to end
def test_sae_similarity_end_to_end(planted_sae, tiny_model, corpus_file, sae_cache, tmp_path):
    """lm_eval: the planted SAE against a permuted copy of itself (every latent matched to its own
    copy, activations correlated 1, the two sides' explanations the same) and against itself (no
    reference); the results file records the reference's identity; bad references are one-line
    errors and write no results."""
    from sae_lens import SAE

    from sae_interp_tasks.validity.planted_weights import permuted_copy

    sae = SAE.load_from_disk(str(planted_sae.path))
    perm = permuted_copy(sae, noise=0.0, seed=3)
    copy = tmp_path / "copy"
    sae.save_model(copy)

    def run(out: str, **extra):
        return run_planted(
            planted_sae, corpus_file, sae_cache, tmp_path / out, "sae_similarity", **extra
        )

    proc = run("ref", reference=f"path={copy}", semantic_overlap=True, explainer="tokens")
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(result_files(tmp_path / "ref")[0].read_text())
    got = data["results"]["sae_similarity"]
    assert got["mcs,none"] == pytest.approx(1.0, abs=1e-5)
    assert got["dict_matched_frac,none"] == 1.0
    assert got["activation_corr,none"] == pytest.approx(1.0, abs=1e-4)
    assert got["mcs_random,none"] < 0.6
    # the same windows on both sides: the same token-list explanation; a shuffled partner's differs
    assert got["explanation_sim,none"] == pytest.approx(1.0, abs=1e-4)
    assert got["explanation_sim_shuffled,none"] < 0.95
    # a reference as wide as the SAE: no feature splitting is read
    assert got["dict_split_frac,none"] != got["dict_split_frac,none"]  # NaN
    (ref,) = data["config"]["sae_references"].values()
    assert ref["label"] == str(copy) and ref["d_sae"] == planted_sae.d_sae
    own = torch.argsort(perm).tolist()
    for row in samples(tmp_path / "ref", "sae_similarity"):
        lat = row["doc"]["latent"]
        assert row["response"]["partner"] == own[lat]
        assert row["response"]["explanation"] == row["response"]["partner_explanation"]

    alone = run("alone")
    assert alone.returncode == 0, alone.stderr[-3000:]
    got = json.loads(result_files(tmp_path / "alone")[0].read_text())["results"]["sae_similarity"]
    assert got["mcs,none"] < 1.0 and got["dict_mean_mcs,none"] < 1.0
    assert got["dict_matched_frac,none"] != got["dict_matched_frac,none"]  # NaN: nothing matched

    # the pair, never the SAE alone: the leaderboard row and the overlap matrix
    def cli(*args):
        return subprocess.run(
            [sys.executable, "-m", "sae_interp_tasks.cli", *args], capture_output=True, text=True
        )

    board = cli("leaderboard", str(tmp_path / "ref"))
    assert board.returncode == 0 and f"{planted_sae.path} vs {copy}" in board.stdout
    page = cli(
        "leaderboard",
        str(tmp_path / "ref"),
        str(tmp_path / "alone"),
        "--format",
        "html",
        "--plots",
        str(tmp_path / "plots"),
    )
    assert page.returncode == 0, page.stderr
    assert "<h2>Overlap of dictionaries</h2>" in page.stdout and "itself" in page.stdout
    assert (tmp_path / "plots" / "overlap.png").read_bytes()[:4] == b"\x89PNG"
    png = tmp_path / "overlap.png"
    table = cli("overlap", str(tmp_path / "ref"), str(tmp_path / "alone"), "--heatmap", str(png))
    assert table.returncode == 0, table.stderr
    header = [ln for ln in table.stdout.splitlines() if ln.startswith("| SAE |")][0]
    assert str(copy) in header and "itself" in header
    assert "| 1.000 |" in table.stdout  # every latent matched to its copy
    assert png.read_bytes()[:4] == b"\x89PNG"
    mcs = cli("overlap", str(tmp_path / "alone"), "--metric", "dict_mean_mcs")
    assert mcs.returncode == 0 and "(chance " in mcs.stdout
    wrong = cli("overlap", str(tmp_path / "ref"), "--metric", "dict_nothing")
    assert wrong.returncode == 2 and "dict_matched_frac" in wrong.stderr

    bad = run("bad", reference="path=/nowhere")
    assert bad.returncode != 0 and not (tmp_path / "bad").exists()
    assert "the reference SAE does not load" in bad.stderr and "/nowhere" in bad.stderr
    typo = run("typo", reference="relase=x")
    assert typo.returncode != 0 and "'relase=x' is not KEY=VALUE" in typo.stderr


def narrower_reference(planted_sae, out):
    """A 4-latent reference at the same hook: latent 0 a parent that fires on both " cat" and
    " dog" (decoder between the two planted latents'), latents 1-3 copies of the planted SAE's
    random latents 2-4."""
    from sae_lens import SAE, StandardSAE, StandardSAEConfig

    sae = SAE.load_from_disk(str(planted_sae.path))
    cfg = StandardSAEConfig(d_in=sae.cfg.d_in, d_sae=4, apply_b_dec_to_input=True)
    cfg.metadata = sae.cfg.metadata
    ref = StandardSAE(cfg)
    cat, dog = CAT_LATENT, DOG_LATENT
    with torch.no_grad():
        dec = sae.W_dec.detach()
        parent = dec[cat] / dec[cat].norm() + dec[dog] / dec[dog].norm()
        ref.W_dec.copy_(torch.cat([parent[None], dec[2:5]]))
        ref.W_enc.copy_(
            torch.cat([(sae.W_enc[:, cat] + sae.W_enc[:, dog])[:, None], sae.W_enc[:, 2:5]], 1)
        )
        ref.b_enc.copy_(
            torch.cat([torch.maximum(sae.b_enc[cat], sae.b_enc[dog])[None], sae.b_enc[2:5]])
        )
        ref.b_dec.zero_()
    ref.save_model(out)
    return out


@pytest.mark.slow  # lm_eval end to end
def test_feature_splitting_against_a_narrower_reference(
    planted_sae, corpus_file, sae_cache, tmp_path
):
    """Known answer: a reference latent that fires on " cat" and " dog" is taken over by the
    planted SAE's two latents (each fires on its share of the parent's positions): both read
    it as their parent with 2 children; the copied random latents are taken over one to one."""
    ref = narrower_reference(planted_sae, tmp_path / "narrow")
    proc = run_planted(
        planted_sae,
        corpus_file,
        sae_cache,
        tmp_path / "run",
        "sae_similarity",
        reference=f"path={ref}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(result_files(tmp_path / "run")[0].read_text())["results"]["sae_similarity"]
    assert got["split_children,none"] == 2.0
    assert got["dict_split_frac,none"] == pytest.approx(0.25)  # the parent, of 4
    assert got["dict_children_mean,none"] > 1.0
    for row in samples(tmp_path / "run", "sae_similarity"):
        assert row["response"]["split_parent"] == 0
        assert row["response"]["split_share"] >= 0.1


def test_bad_references_and_models_are_one_line_errors(loaded_planted, planted_sae, tmp_path):
    """A reference of another width of activation, at another hook, of another subject model, or
    a subject model with no unembedding: each a one-line error that names the fix."""
    from types import SimpleNamespace

    from sae_lens import SAE, StandardSAE, StandardSAEConfig

    from sae_interp_tasks.errors import SaeInterpError
    from sae_interp_tasks.stages.lens import WeightLens
    from sae_interp_tasks.stages.saes import load_reference

    sae, info = loaded_planted
    saved = SAE.load_from_disk(str(planted_sae.path))
    narrow_cfg = StandardSAEConfig(d_in=64, d_sae=8)
    narrow_cfg.metadata = saved.cfg.metadata
    StandardSAE(narrow_cfg).save_model(tmp_path / "narrow")
    with pytest.raises(SaeInterpError, match="reads 64-wide activations .* pass a reference"):
        load_reference({"path": str(tmp_path / "narrow")}, sae, info, other_hook=False)

    saved.cfg.metadata.hook_name = "blocks.1.hook_resid_pre"
    saved.save_model(tmp_path / "other_hook")
    with pytest.raises(SaeInterpError, match='reference_other_hook": true'):
        load_reference({"path": str(tmp_path / "other_hook")}, sae, info, other_hook=False)
    ref, ref_info = load_reference(
        {"path": str(tmp_path / "other_hook")}, sae, info, other_hook=True
    )
    assert ref_info.hook_name == "blocks.1.hook_resid_pre"

    saved.cfg.metadata.hook_name = info.hook_name
    saved.cfg.metadata.model_name = "someone/else"
    saved.save_model(tmp_path / "other_model")
    with pytest.raises(SaeInterpError, match="same subject model"):
        load_reference({"path": str(tmp_path / "other_model")}, sae, info, other_hook=False)
    with pytest.raises(SaeInterpError, match="unknown reference control 'randm'"):
        load_reference({"control": "randm"}, sae, info, other_hook=False)

    no_head = SimpleNamespace(cfg=SimpleNamespace(model_name="an-encoder"), W_U=None)
    with pytest.raises(SaeInterpError, match="has no unembedding .* with an LM head"):
        WeightLens(no_head, sae, str)


def test_the_weights_tasks_draw_the_same_latent_slots_as_detection():
    """Under one seed and corpus a weights task's selection key is detection's (so slot i names
    the same latent and `compare` pairs their docs), and it reads no explanations unless the
    semantic overlap asks; an explanations file changes the draw (only covered latents)."""
    import sae_interp_tasks.tasks  # noqa: F401 (declares the built-in task kinds)
    from sae_interp_tasks import registry
    from sae_interp_tasks.harness.run_stages import selection_key

    meta = {"n_tokens": 4096, "n_latents": 16}
    settings = {
        kind: registry.lookup(kind).settings.from_metadata(meta)
        for kind in ("detection", "logitlens", "similarity")
    }
    keys = {kind: selection_key(s, 1234) for kind, s in settings.items()}
    assert keys["logitlens"] == keys["detection"] == keys["similarity"]
    similarity = registry.lookup("similarity")
    assert not registry.lookup("logitlens").reads_explanations(settings["logitlens"])
    assert not similarity.reads_explanations(settings["similarity"])
    semantic = similarity.settings.from_metadata(
        {**meta, "reference": "demo", "semantic_overlap": True}
    )
    assert similarity.reads_explanations(semantic)
    from_file = registry.lookup("detection").settings.from_metadata(
        {**meta, "explainer": "file", "explanations_path": "x.json"}
    )
    assert selection_key(from_file, 1234) != keys["detection"]
