"""The weights tasks: the logit lens (sae_logitlens), the weight explainers (logits, neighbours)
and the comparison of an SAE's dictionary with a reference's (sae_similarity)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import CAT, CAT_LATENT, DOG, DOG_LATENT
from tests.helpers import result_files, run_lm_eval, samples

META = {
    "n_tokens": 4096,
    "context_size": 64,
    "window": 16,
    "n_top": 10,
    "n_sample": 40,
    "n_random": 64,
    "latents": [CAT_LATENT, DOG_LATENT],
    "min_examples": 5,
    "n_train": 10,
    "n_test_per_decile": 1,
    "n_test_non_activating": 10,
}


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


def test_sae_logitlens_end_to_end(planted_sae, corpus_file, sae_cache, tmp_path):
    """lm_eval runs the logit lens with no explainer at all (explainer hf would load a model and
    call it: the run must not), logs each latent's promoted tokens, and the planted latents'
    lenses predict the token after where they fire better than chance."""
    meta = {**META, "corpus": str(corpus_file), "explainer": "hf", "explainer_model": "nowhere"}
    proc = run_lm_eval(
        [
            "--model",
            "sae",
            "--model_args",
            f"path={planted_sae.path},device=cpu",
            "--tasks",
            "sae_logitlens",
            "--metadata",
            json.dumps(meta),
            "--log_samples",
            "--output_path",
            str(tmp_path / "run"),
        ],
        sae_cache,
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
