"""The path every real user takes, end to end and offline: `--model_args release=...,sae_id=...`
reads a real entry of sae_lens's pretrained directory with `SAE.from_pretrained` from a local
Hugging Face hub cache (`models--org--name/snapshots/<rev>/...` with `refs/main`), nothing mocked
between lm_eval and sae_lens; the subject model is a small model of the SAE's width (`model=`, as a
user would point at a local copy). A misspelled sae_id lists close names; a release that is not in
the cache says how to get it."""

from __future__ import annotations

import json

import pytest
import torch

from helpers import error_lines, result_files, run_lm_eval

# a 768-latent gpt2 SAE
RELEASE, SAE_ID = (
    "gpt2-small-res-jb-feature-splitting",
    "blocks.8.hook_resid_pre_768",
)
REPO = "jbloom/GPT2-Small-Feature-Splitting-Experiment-Layer-8"
REVISION = "0123456789abcdef0123456789abcdef01234567"


def hub_cache(root, release_folder: str, d_in: int, d_sae: int) -> None:
    """The repo as huggingface_hub caches a download: blobs under snapshots/<rev>, refs/main naming
    it."""
    from safetensors.torch import save_file

    repo = root / f"models--{REPO.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(REVISION)
    folder = repo / "snapshots" / REVISION / release_folder
    folder.mkdir(parents=True)
    # the config as the release has it (sae_lens before 6.0 wrote these keys)
    folder.joinpath("cfg.json").write_text(
        json.dumps(
            {
                "d_in": d_in,
                "d_sae": d_sae,
                "hook_point": "blocks.8.hook_resid_pre",
                "hook_point_layer": 8,
                "model_name": "gpt2-small",
                "dtype": "float32",
                "device": "cpu",
                "apply_b_dec_to_input": True,
                "prepend_bos": True,
                "context_size": 128,
                "dataset_path": "Skylion007/openwebtext",
                "finetuning_scaling_factor": False,
                "normalize_activations": "none",
            }
        )
    )
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(d_in, d_sae, generator=gen) / d_in**0.5
    save_file(
        {
            "W_enc": w,
            "b_enc": torch.zeros(d_sae),
            "W_dec": w.T.contiguous(),
            "b_dec": torch.zeros(d_in),
        },
        str(folder / "sae_weights.safetensors"),
    )
    save_file({"sparsity": torch.full((d_sae,), -2.0)}, str(folder / "sparsity.safetensors"))


def small_subject(folder, d_model: int, n_layers: int) -> None:
    """A Llama of the SAE's width with a small byte-level BPE tokenizer of its own (no download)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from sae_interp_tasks.stages.corpus import stdlib_documents

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(
        stdlib_documents()[:50],
        trainers.BpeTrainer(
            vocab_size=400,
            special_tokens=["<|endoftext|>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token="<|endoftext|>", eos_token="<|endoftext|>"
    )
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=d_model,
        intermediate_size=64,
        num_hidden_layers=n_layers,
        num_attention_heads=12,
        num_key_value_heads=1,
        max_position_embeddings=256,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    root = tmp_path_factory.mktemp("hub")
    hub_cache(root, SAE_ID, 768, 768)
    subject = tmp_path_factory.mktemp("small_gpt2_width")
    small_subject(subject, 768, 9)
    return root, subject


def lm_eval_release(hub, sae_cache, out, sae_id: str = SAE_ID, release: str = RELEASE):
    root, subject = hub
    meta = {"corpus": "stdlib", "n_tokens": 1024, "context_size": 64, "chunk_contexts": 4}
    return run_lm_eval(
        [
            "--model",
            "sae",
            "--model_args",
            f"release={release},sae_id={sae_id},model={subject},device=cpu",
            "--tasks",
            "sae_core",
            "--metadata",
            json.dumps(meta),
            "--output_path",
            str(out),
        ],
        sae_cache,
        HF_HUB_OFFLINE="1",
        HF_HUB_CACHE=str(root),
    )


@pytest.mark.slow
def test_a_pretrained_release_runs_from_the_local_hub_cache(hub, sae_cache, tmp_path):
    proc = lm_eval_release(hub, sae_cache, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (path,) = result_files(tmp_path)
    results = json.loads(path.read_text())
    config = results["config"]
    assert (
        config["sae"] == f"{RELEASE}/{SAE_ID}"
        and config["sae_hook_name"] == "blocks.8.hook_resid_pre"
    )
    assert (config["sae_d_in"], config["sae_d_sae"]) == (768, 768)
    assert results["results"]["sae_core"]["l0,none"] > 0
    assert results["configs"]["sae_core"]["metadata"]["n_tokens"] == 1024


def test_a_misspelled_sae_id_lists_the_close_names(hub, sae_cache, tmp_path):
    proc = lm_eval_release(hub, sae_cache, tmp_path, sae_id="blocks.8.hook_resid_pre_76")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    (line,) = error_lines(proc.stderr)
    assert line.startswith(
        f"error: unknown sae_id for release '{RELEASE}' 'blocks.8.hook_resid_pre_76' (closest: "
    ), line
    assert "blocks.8.hook_resid_pre_768" in line
    assert not result_files(tmp_path)


def test_a_release_missing_from_the_cache_says_how_to_get_it(hub, sae_cache, tmp_path):
    proc = lm_eval_release(
        hub, sae_cache, tmp_path, release="gpt2-small-res-jb", sae_id="blocks.0.hook_resid_pre"
    )
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    (line,) = error_lines(proc.stderr)
    assert "is not in the local Hugging Face cache" in line, line
    assert (
        "huggingface-cli download jbloom/GPT2-Small-SAEs-Reformatted --include "
        "'blocks.0.hook_resid_pre/*'" in line
    )
    assert not result_files(tmp_path)
