"""EleutherAI's sparsify SAEs: a checkpoint built and saved by the library itself is scored through
lm_eval (path= a folder of hookpoints, hookpoint=, model=), encodes exactly as the library does,
and bad input (several hookpoints and none chosen, no subject model, a width that does not fit,
variants we do not score) is one line."""

from __future__ import annotations

import json

import pytest
import torch

from helpers import error_lines, result_files, run_lm_eval
from sae_interp_tasks.bundled import BUNDLED_MODEL
from sae_interp_tasks.errors import SaeInterpError
from sae_interp_tasks.records import SAESource
from sae_interp_tasks.stages.saes import load_sae

# a runtime dependency: importable wherever the package is installed
sparsify = pytest.importorskip("sparsify")


def save_coder(folder, hookpoint: str, d_in: int, seed: int = 0, **cfg):
    from sparsify import SparseCoder, SparseCoderConfig

    torch.manual_seed(seed)
    coder = SparseCoder(d_in, SparseCoderConfig(**{"num_latents": 64, "k": 8, **cfg}))
    with torch.no_grad():
        coder.encoder.bias.normal_(0, 0.1)
        coder.b_dec.normal_(0, 0.1)
    coder.save_to_disk(folder / hookpoint)
    return coder


def test_a_sparsify_sae_encodes_as_the_library_does(tmp_path):
    coder = save_coder(tmp_path, "layers.3", d_in=96)
    sae, info = load_sae(SAESource(path=str(tmp_path), hookpoint="layers.3", model="some/model"))
    assert (info.hook_name, info.model_name, info.d_in, info.d_sae) == (
        "blocks.3.hook_resid_post",
        "some/model",
        96,
        64,
    )
    assert info.label == f"{tmp_path}/layers.3" and info.architecture == "topk"
    x = torch.randn(35, 96)  # the library decodes [tokens, latents] only
    theirs = coder.encode(x)
    dense = torch.zeros(35, 64).scatter_(-1, theirs.top_indices, theirs.top_acts)
    with torch.no_grad():
        ours = sae.encode(x)
        assert torch.allclose(ours, dense, atol=1e-5)
        recon_theirs = coder.decode(theirs.top_acts, theirs.top_indices)
        assert torch.allclose(sae.decode(ours), recon_theirs, atol=1e-5)
    # the checkpoint's own folder works too, without hookpoint=
    _, alone = load_sae(SAESource(path=str(tmp_path / "layers.3"), model="some/model"))
    assert alone.fingerprint == info.fingerprint


def test_hookpoints_map_onto_transformer_lens_hooks():
    from sae_interp_tasks.stages.sparsify_saes import hook_name

    assert hook_name("layers.6") == "blocks.6.hook_resid_post"
    assert hook_name("model.layers.6.mlp") == "blocks.6.hook_mlp_out"
    assert hook_name("h.2.attn") == "blocks.2.hook_attn_out"
    with pytest.raises(
        SaeInterpError, match="maps onto no TransformerLens hook; supported: layers.N"
    ):
        hook_name("embed_tokens")


@pytest.mark.parametrize(
    "args,expected",
    [
        (
            {},
            "holds sparsify SAEs for 2 hookpoints (layers.1, layers.2); choose one with hookpoint=",
        ),
        ({"hookpoint": "layers.9"}, "has no hookpoint 'layers.9'; it has layers.1, layers.2"),
    ],
)
def test_a_folder_of_several_hookpoints_names_them(tmp_path, args, expected):
    save_coder(tmp_path, "layers.1", d_in=16)
    save_coder(tmp_path, "layers.2", d_in=16)
    with pytest.raises(SaeInterpError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        load_sae(SAESource(path=str(tmp_path), model="m", **args))


def test_no_subject_model_and_unsupported_variants_are_one_line(tmp_path):
    save_coder(tmp_path / "a", "layers.1", d_in=16)
    with pytest.raises(SaeInterpError, match="names the subject model .* give it with model="):
        load_sae(SAESource(path=str(tmp_path / "a"), hookpoint="layers.1"))
    # sparsify's run config
    (tmp_path / "a" / "config.json").write_text(json.dumps({"model": "EleutherAI/pythia-70m"}))
    assert (
        load_sae(SAESource(path=str(tmp_path / "a"), hookpoint="layers.1"))[1].model_name
        == "EleutherAI/pythia-70m"
    )
    save_coder(tmp_path / "b", "layers.1", d_in=16, activation="groupmax")
    with pytest.raises(SaeInterpError, match="has the groupmax activation"):
        load_sae(SAESource(path=str(tmp_path / "b"), hookpoint="layers.1", model="m"))
    save_coder(tmp_path / "c", "layers.1", d_in=16, skip_connection=True)
    with pytest.raises(SaeInterpError, match="has a skip connection"):
        load_sae(SAESource(path=str(tmp_path / "c"), hookpoint="layers.1", model="m"))


def test_a_width_that_does_not_fit_the_subject_model_is_one_line(
    tmp_path, tiny_model_dir, sae_cache
):
    save_coder(tmp_path / "sae", "layers.0", d_in=77)
    proc = run_lm_eval(
        [
            "--model",
            "sae",
            "--model_args",
            f"path={tmp_path / 'sae'},hookpoint=layers.0,model={tiny_model_dir},device=cpu",
            "--tasks",
            "sae_core",
            "--metadata",
            json.dumps(
                {"corpus": "stdlib", "n_tokens": 512, "context_size": 64, "chunk_contexts": 4}
            ),
            "--output_path",
            str(tmp_path / "out"),
        ],
        sae_cache,
    )
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    (line,) = error_lines(proc.stderr)
    assert (
        "the SAE reads 77-wide activations but blocks.0.hook_resid_post" in line
        and "128-wide" in line
    ), line
    assert not result_files(tmp_path / "out")


@pytest.mark.slow
def test_a_sparsify_sae_for_the_bundled_model_runs_through_lm_eval(tmp_path, sae_cache):
    save_coder(tmp_path / "sae", "layers.3", d_in=576, num_latents=256, k=16)
    save_coder(tmp_path / "sae", "layers.5", d_in=576, seed=1)
    meta = {
        "corpus": "stdlib",
        "n_tokens": 4096,
        "chunk_contexts": 4,
        "n_latents": 4,
        "min_examples": 4,
        "n_train": 8,
        "n_test_per_decile": 1,
        "n_test_non_activating": 8,
        "explainer": "tokens",
        "scorer_check": False,
    }
    proc = run_lm_eval(
        [
            "--model",
            "sae",
            "--model_args",
            f"path={tmp_path / 'sae'},hookpoint=layers.3,"
            f"model={BUNDLED_MODEL},device=cpu,batch_size=8",
            "--tasks",
            "sae_core,sae_embedding",
            "--metadata",
            json.dumps(meta),
            "--output_path",
            str(tmp_path / "out"),
        ],
        sae_cache,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (path,) = result_files(tmp_path / "out")
    results = json.loads(path.read_text())
    assert results["config"]["sae"] == f"{tmp_path / 'sae'}/layers.3"
    assert (
        results["config"]["sae_hook_name"] == "blocks.3.hook_resid_post"
        and results["config"]["sae_d_sae"] == 256
    )
    core = results["results"]["sae_core"]
    assert core["l0,none"] == pytest.approx(16.0)  # TopK: exactly k latents a token
    assert results["results"]["sae_embedding"]["skipped_dead,none"] >= 0
