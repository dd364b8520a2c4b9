"""Bad input ends in one SaeInterpError whose message names the fix (saes.py, config.py,
registry.py, subject.py)."""

from __future__ import annotations

import json
import shutil

import pytest

import sae_interp_tasks.tasks  # noqa: F401  (declares the built-in task kinds)
from sae_interp_tasks import registry
from sae_interp_tasks.errors import SaeInterpError, closest, unknown
from sae_interp_tasks.stages.corpus import CorpusConfig
from sae_interp_tasks.stages.saes import SAESource, load_sae


# --- SAEs by release
# -------------------------------------------------------------------------------
def test_unknown_release_lists_close_names():
    with pytest.raises(SaeInterpError, match="unknown release 'gpt2-small-res-jbb'") as err:
        load_sae(SAESource(release="gpt2-small-res-jbb", sae_id="blocks.8.hook_resid_pre"))
    message = str(err.value)
    assert "closest: gpt2-small-res-jb," in message  # the intended release comes first
    assert "path=DIR" in message


def test_unknown_sae_id_of_a_known_release():
    with pytest.raises(SaeInterpError, match="sae_id") as err:
        load_sae(SAESource(release="gpt2-small-res-jb", sae_id="blocks.8.hook_resid_prex"))
    assert "closest: blocks.8.hook_resid_pre," in str(err.value)


def test_release_without_sae_id():
    with pytest.raises(SaeInterpError, match="needs sae_id=...; e.g. blocks.0.hook_resid_pre"):
        load_sae(SAESource(release="gpt2-small-res-jb"))


def test_release_that_cannot_be_fetched_is_a_user_error():
    """A known release/sae_id that cannot be downloaded (offline, no hub access, gated) and a hub
    repo id that does not exist are each one line naming the SAE, not a huggingface_hub
    traceback."""
    with pytest.raises(SaeInterpError, match="gpt2-small-res-jb"):
        load_sae(SAESource(release="gpt2-small-res-jb", sae_id="blocks.8.hook_resid_pre"))
    with pytest.raises(SaeInterpError, match="no-such-org/no-such-repo"):
        load_sae(SAESource(release="no-such-org/no-such-repo", sae_id="sae"))


# --- SAEs on disk
# ----------------------------------------------------------------------------------
def copy_sae(planted_sae, tmp_path, name="sae"):
    out = tmp_path / name
    shutil.copytree(planted_sae.path, out)
    return out


def test_missing_path():
    with pytest.raises(SaeInterpError, match="is not a folder"):
        load_sae(SAESource(path="/no/such/sae/folder"))


@pytest.mark.parametrize("missing", ["cfg.json", "sae_weights.safetensors"])
def test_folder_without_sae_files(planted_sae, tmp_path, missing):
    folder = copy_sae(planted_sae, tmp_path)
    (folder / missing).unlink()
    with pytest.raises(SaeInterpError, match=f"has no {missing}.*save_model"):
        load_sae(SAESource(path=str(folder)))


@pytest.mark.parametrize("edit", ["not json", "empty", "no d_sae", "unknown architecture"])
def test_malformed_cfg_json(planted_sae, tmp_path, edit):
    folder = copy_sae(planted_sae, tmp_path)
    cfg = json.loads((folder / "cfg.json").read_text())
    if edit == "not json":
        text = "{d_in: 128,"
    elif edit == "empty":
        text = "{}"
    elif edit == "no d_sae":
        del cfg["d_sae"]
        text = json.dumps(cfg)
    else:
        cfg["architecture"] = "sparse-magic"
        text = json.dumps(cfg)
    (folder / "cfg.json").write_text(text)
    with pytest.raises(SaeInterpError, match="malformed SAE.*re-save it"):
        load_sae(SAESource(path=str(folder)))


def test_weights_file_that_is_not_safetensors(planted_sae, tmp_path):
    """A weights file that is a git-lfs pointer (a clone without git-lfs) or truncated is a one-line
    "malformed SAE" error, not safetensors' own exception."""
    folder = copy_sae(planted_sae, tmp_path)
    (folder / "sae_weights.safetensors").write_text(
        "version https://git-lfs.github.com/spec/v1\noid sha256:0123\nsize 4096\n"
    )
    with pytest.raises(SaeInterpError, match="malformed SAE"):
        load_sae(SAESource(path=str(folder)))


def test_sae_without_hook_in_its_metadata(planted_sae, tmp_path):
    folder = copy_sae(planted_sae, tmp_path)
    cfg = json.loads((folder / "cfg.json").read_text())
    del cfg["metadata"]["hook_name"]
    (folder / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(SaeInterpError, match="names no hook_name/model_name"):
        load_sae(SAESource(path=str(folder)))


# --- the subject model
# -----------------------------------------------------------------------------
def test_an_sae_bigger_than_the_free_memory_is_one_line_before_loading(monkeypatch):
    """Sized from the safetensors header: the demo's 2 x 576 x 2,304 float32 weights (10.1 MiB)
    against 1 MiB free; in bfloat16 half of it, and a device with room passes."""
    from sae_interp_tasks.stages import sae_memory

    monkeypatch.setattr(sae_memory, "available_memory", lambda device: 2**20)
    with pytest.raises(SaeInterpError) as err:
        load_sae(SAESource())
    message = str(err.value)
    assert "\n" not in message
    assert "demo's weights need 10.1 MiB in float32 but cpu has 1.0 MiB free" in message
    assert "pass dtype=bfloat16 (half of it), device=cuda" in message
    with pytest.raises(SaeInterpError, match="need 5.1 MiB in bfloat16 .* pass device=cuda"):
        load_sae(SAESource(), dtype="bfloat16")
    monkeypatch.setattr(sae_memory, "available_memory", lambda device: 2**30)
    assert load_sae(SAESource())[1].d_sae == 2304


def test_unknown_dtype(tiny_model_dir):
    from sae_interp_tasks.stages.subject import load_subject

    with pytest.raises(SaeInterpError, match="unknown dtype 'float8' .closest: float32"):
        load_subject(str(tiny_model_dir), dtype="float8")


def test_subject_that_cannot_be_loaded():
    from sae_interp_tasks.stages.subject import load_subject

    with pytest.raises(
        SaeInterpError, match="cannot load subject model 'gpt2'.*model=<local HF folder>"
    ):
        load_subject("gpt2")  # offline: the hub is unreachable


# --- task settings (--metadata)
# --------------------------------------------------------------------
def test_unknown_metadata_key_lists_valid_keys():
    with pytest.raises(SaeInterpError) as err:
        registry.settings_for("core", {"corpus": "stdlib", "n_tokenz": 2048})
    message = str(err.value)
    assert message.startswith("unknown --metadata key 'n_tokenz'; did you mean n_tokens")
    for key in ("n_tokens", "context_size", "chunk_contexts", "corpus", "text_field"):
        assert key in message.split("valid keys:")[1]
    assert "release" not in message.split("valid keys:")[1]  # model_args are not --metadata keys


def test_settings_are_typed_and_coerced():
    got = registry.settings_for(
        "core",
        {
            "n_tokens": "4096",
            "context_size": 64.0,
            "corpus": "/data/x.txt",
            "version": 1.0,
            "seed": 0,
        },
    )
    assert (
        got.core.n_tokens == 4096
        and isinstance(got.core.n_tokens, int)
        and got.core.context_size == 64
    )
    assert got.core.seed == 0  # a zero seed is allowed
    assert got.corpus.spec(None).source == "/data/x.txt"


@pytest.mark.parametrize(
    "value,expected",
    [
        (True, True),
        ("true", True),
        ("Yes", True),
        ("on", True),
        (1, True),
        ("1", True),
        (False, False),
        ("false", False),
        ("no", False),
        ("OFF", False),
        (0, False),
        ("0", False),
    ],
)
def test_booleans_accept_true_and_false_words(value, expected):
    assert registry.settings_for("detection", {"constrained": value}).scorer.constrained is expected


@pytest.mark.parametrize(
    "kind,key,value,match",
    [
        ("core", "n_tokens", 0, "n_tokens=0 must be at least 1"),
        ("core", "chunk_contexts", -2, "chunk_contexts=-2 must be at least 1"),
        ("core", "context_size", 0, "context_size=0 must be at least 2"),
        ("core", "n_tokens", "many", "n_tokens='many' should be a int"),
        ("core", "n_tokens", True, "n_tokens=True should be a int"),
        (
            "detection",
            "constrained",
            "maybe",
            "constrained='maybe' should be a boolean: true or false",
        ),
        ("detection", "use_logprobs", 2, "use_logprobs=2 should be a boolean"),
        (
            "detection",
            "explainer",
            "gpt",
            "explainer='gpt' is not valid; choose from: hf, openai, tokens",
        ),
        ("detection", "scorer", "vllm", "scorer='vllm' is not valid; choose from: hf, openai"),
        (
            "detection",
            "non_activating",
            "near",
            "non_activating='near' is not valid; choose from: random, hard",
        ),
        ("detection", "n_latents", -3, "n_latents=-3 must be at least 1"),
        ("detection", "highlight_threshold", 0, "highlight_threshold=0.0 must be above 0.0"),
        ("detection", "latents", '[1, "a"]', "latents must be a non-empty list of latent ids"),
        (
            "detection",
            "min_examples",
            500,
            "min_examples \\(500\\) cannot exceed n_sample \\(200\\)",
        ),
        ("selfexplain", "patch_layer", -1, "patch_layer=-1 must be at least 0"),
        ("selfexplain", "alpha", 1.5, "alpha=1.5 must be at most 1.0"),
        (
            "selfexplain",
            "direction",
            "both",
            "direction='both' is not valid; choose from: decoder, encoder",
        ),
        ("selfexplain", "explain_template", "poem", "unknown self-explanation template 'poem'"),
        ("selfexplain", "null_quantile", 1, "null_quantile=1.0 must be below 1.0"),
    ],
)
def test_bad_setting_values(kind, key, value, match):
    with pytest.raises(SaeInterpError, match=match):
        registry.settings_for(kind, {key: value})


def test_unknown_task_kind():
    with pytest.raises(SaeInterpError, match="unknown task kind 'detektion' .closest: detection"):
        registry.lookup("detektion")


def test_corpus_sae_uses_the_sae_training_set():
    corpus = CorpusConfig(corpus="sae")
    assert corpus.spec("monology/pile-uncopyrighted").source == "hf:monology/pile-uncopyrighted"
    assert corpus.spec(None).source == "stdlib"
    assert corpus.spec("/data/local").source == "/data/local"


def test_closest_and_unknown():
    assert (
        closest("gpt2-small-res-jbb", ["gpt2-small-res-jb", "pythia-70m", "gemma-scope"])[0]
        == "gpt2-small-res-jb"
    )
    assert "valid: a, b" in str(unknown("thing", "zzz", ["b", "a"]))
    assert "100 valid names, none close" in str(
        unknown("thing", "zzz", [f"n{i:03d}" for i in range(100)])
    )
