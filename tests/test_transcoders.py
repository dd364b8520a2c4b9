"""Transcoders (read one hook, write another): sae_core measures the output hook they predict and
splices their prediction in there (checked against a hand computation on the tiny model), a
transcoder that writes nothing costs exactly the zero-ablation, sparsify's `transcode: true`
checkpoints read TransformerLens's hooks as the library reads the module (the norm's gain folded
in), both formats run the weights, latent and core tasks through lm_eval with the hooks in the
results and the leaderboard, and bad input is one line."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import sae_metadata
from helpers import SMALL_PASS, error_lines, result_files, run_lm_eval, sae_interp
from sae_interp_tasks.errors import SaeInterpError
from sae_interp_tasks.records import SAESource
from sae_interp_tasks.stages import core
from sae_interp_tasks.stages.saes import load_sae

HOOK_IN, HOOK_OUT = "blocks.0.ln2.hook_normalized", "blocks.0.hook_mlp_out"


def save_transcoder(model_dir, folder, *, zero_out=False, hook_out=HOOK_OUT, seed=0, arch=None):
    """A sae_lens Transcoder of the tiny model's first MLP (64 latents, sparse random encoder)."""
    from sae_lens import StandardSAE, StandardSAEConfig, Transcoder, TranscoderConfig
    from sae_lens.saes.sae import SAEMetadata

    gen = torch.Generator().manual_seed(seed)
    if arch == "standard":  # an SAE that (wrongly) names an output hook
        cfg = StandardSAEConfig(d_in=128, d_sae=64)
        cls = StandardSAE
    else:
        cfg = TranscoderConfig(d_in=128, d_sae=64, d_out=128, apply_b_dec_to_input=False)
        cls = Transcoder
    cfg.metadata = SAEMetadata(
        **sae_metadata(model_dir, HOOK_IN), **({"hook_name_out": hook_out} if hook_out else {})
    )
    tc = cls(cfg)
    with torch.no_grad():
        tc.W_enc.copy_(torch.randn(128, 64, generator=gen) / 128**0.5)
        tc.b_enc.fill_(-0.2)
        tc.W_dec.copy_(0 if zero_out else torch.randn(64, 128, generator=gen) * 0.05)
        tc.b_dec.zero_()
    tc.save_model(folder)
    return folder


@pytest.fixture(scope="module")
def transcoder_dir(tiny_model_dir, tmp_path_factory):
    return save_transcoder(tiny_model_dir, tmp_path_factory.mktemp("transcoder"))


def tokens_for(model, n=2, length=24, seed=0):
    gen = torch.Generator().manual_seed(seed)
    special = set(core.special_ids(model.tokenizer))
    ids = [i for i in range(1000, 3000) if i not in special]
    pick = torch.randint(len(ids), (n, length), generator=gen)
    return torch.tensor(ids)[pick]


@torch.no_grad()
def test_sae_core_measures_the_output_hook_and_splices_there(tiny_model, transcoder_dir, tmp_path):
    """The statistics of a chunk against a hand computation: the squared error is the prediction's
    against the output hook's activation (not the input's), the spliced loss is the model's with the
    prediction in place of the MLP's output; a transcoder that writes nothing costs exactly what
    zeroing the output hook costs."""
    sae, info = load_sae(SAESource(path=str(transcoder_dir)))
    assert (info.hook_name, info.hook_name_out, info.write_hook) == (HOOK_IN, HOOK_OUT, HOOK_OUT)
    model, tokens = tiny_model, tokens_for(tiny_model)
    special = core.special_ids(model.tokenizer)
    reference = core.chunk_reference(model, HOOK_IN, tokens, special, out_hook=HOOK_OUT)
    stats = core.chunk_stats(model, sae, HOOK_IN, tokens, reference, special, HOOK_OUT)
    _, cache = model.run_with_cache(tokens, names_filter=[HOOK_IN, HOOK_OUT])
    x, y = cache[HOOK_IN], cache[HOOK_OUT]
    predicted = sae(x)
    assert stats.sq_err_sum == pytest.approx(float(((predicted - y) ** 2).sum()), rel=1e-5)
    assert stats.sq_err_sum != pytest.approx(float(((predicted - x) ** 2).sum()), rel=1e-2)

    def splice(a, hook):
        return sae(splice.x)

    def read(a, hook):
        splice.x = a

    logits = model.run_with_hooks(tokens, fwd_hooks=[(HOOK_IN, read), (HOOK_OUT, splice)])
    losses = -torch.log_softmax(logits[:, :-1].double(), -1).gather(-1, tokens[:, 1:, None])
    assert stats.ce_spliced == pytest.approx(float(losses.mean()), rel=1e-5)
    zeroed = model.run_with_hooks(tokens, fwd_hooks=[(HOOK_OUT, lambda a, hook: a * 0)])
    zero_ce = -torch.log_softmax(zeroed[:, :-1].double(), -1).gather(-1, tokens[:, 1:, None])
    assert stats.ce_zero == pytest.approx(float(zero_ce.mean()), rel=1e-5)
    silent, _ = load_sae(
        SAESource(path=str(save_transcoder(model.cfg.model_name, tmp_path / "z", zero_out=True)))
    )
    nothing = core.chunk_stats(model, silent, HOOK_IN, tokens, reference, special, HOOK_OUT)
    assert nothing.ce_spliced == pytest.approx(nothing.ce_zero, rel=1e-6)
    assert nothing.kl_sae_sum == pytest.approx(nothing.kl_zero_sum, rel=1e-4)


def sparsify_transcoder(folder, d_in=128, seed=0):
    from sparsify import SparseCoder, SparseCoderConfig

    torch.manual_seed(seed)
    coder = SparseCoder(d_in, SparseCoderConfig(num_latents=64, k=8, transcode=True))
    with torch.no_grad():
        coder.encoder.bias.normal_(0, 0.1)
        coder.W_dec.normal_(0, 0.05)
        coder.b_dec.normal_(0, 0.01)
    coder.save_to_disk(folder / "layers.0.mlp")
    return coder


@torch.no_grad()
def test_a_sparsify_transcoder_reads_the_hooks_as_the_library_reads_the_module(
    tiny_model, tiny_model_dir, tmp_path
):
    """sparsify trains on the MLP module's input (the norm's output, gain applied) and predicts its
    output; loaded here, it reads TransformerLens's ln2.hook_normalized with the gain folded in and
    writes hook_mlp_out: the same codes and the same prediction."""
    from transformers import AutoModelForCausalLM

    from sae_interp_tasks.stages.sparsify_saes import fold_input_norm

    coder = sparsify_transcoder(tmp_path)
    sae, info = load_sae(SAESource(path=str(tmp_path), hookpoint="layers.0.mlp", model="m"))
    assert (info.hook_name, info.hook_name_out, info.architecture) == (
        HOOK_IN,
        HOOK_OUT,
        "transcoder",
    )
    fold_input_norm(sae, tiny_model)
    fold_input_norm(sae, tiny_model)  # once only
    hf = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    seen = {}
    mlp = hf.model.layers[0].mlp
    handle = mlp.register_forward_hook(lambda m, a, out: seen.update(x=a[0], y=out))
    tokens = tokens_for(tiny_model)
    hf(tokens)
    handle.remove()
    _, cache = tiny_model.run_with_cache(tokens, names_filter=[HOOK_IN, HOOK_OUT])
    assert torch.allclose(cache[HOOK_OUT], seen["y"], atol=1e-4)
    theirs = coder.encode(seen["x"].flatten(0, 1))
    dense = torch.zeros(theirs.top_acts.shape[0], 64).scatter_(
        -1, theirs.top_indices, theirs.top_acts
    )
    ours = sae.encode(cache[HOOK_IN].flatten(0, 1))
    assert torch.allclose(ours, dense, atol=1e-4)
    assert torch.allclose(
        sae.decode(ours), coder.decode(theirs.top_acts, theirs.top_indices), atol=1e-4
    )


TASKS = "sae_core,sae_logitlens,sae_embedding,sae_similarity,sae_absorption"
META = {
    **SMALL_PASS,
    "n_latents": 4,
    "explainer": "tokens",
    "chunk_contexts": 2,
    "absorption_letters": "abc",
    "absorption_words_per_letter": 12,
    "absorption_min_letters": 1,
    "absorption_min_probe_f1": 0.0,
}


@pytest.mark.slow  # lm_eval end to end, both formats
@pytest.mark.parametrize("fmt", ["sae_lens", "sparsify"])
def test_both_formats_run_through_lm_eval(
    fmt, transcoder_dir, tiny_model_dir, corpus_file, sae_cache, tmp_path
):
    if fmt == "sae_lens":
        margs = f"path={transcoder_dir},device=cpu"
    else:
        sparsify_transcoder(tmp_path / "sp")
        margs = f"path={tmp_path / 'sp'},hookpoint=layers.0.mlp,model={tiny_model_dir},device=cpu"
    meta = {**META, "corpus": str(corpus_file)}
    args = ["--model", "sae", "--model_args", margs, "--tasks", TASKS, "--limit", "2"]
    args += ["--metadata", json.dumps(meta), "--output_path", str(tmp_path / "run")]
    proc = run_lm_eval(args, sae_cache)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(result_files(tmp_path / "run")[0].read_text())
    config = data["config"]
    assert (config["sae_hook_name"], config["sae_hook_name_out"]) == (HOOK_IN, HOOK_OUT)
    assert set(data["results"]) == set(TASKS.split(","))
    core_result = data["results"]["sae_core"]
    assert core_result["mse,none"] > 0 and "ce_loss_recovered,none" in core_result
    board = sae_interp("leaderboard", str(tmp_path / "run"), "--format", "json")
    assert board.returncode == 0, board.stderr
    (row,) = [r for g in json.loads(board.stdout)["groups"] for r in g["rows"]]
    assert f"(transcoder {HOOK_IN} -> {HOOK_OUT})" in row["sae"]


def test_bad_transcoders_are_one_line(tiny_model_dir, tmp_path):
    """No output hook named, an output hook named by an SAE that reconstructs its input, and a
    control asked of a transcoder: one line each, naming the fix."""
    no_out = save_transcoder(tiny_model_dir, tmp_path / "a", hook_out=None)
    with pytest.raises(SaeInterpError, match="names no hook_name_out .*set cfg.metadata"):
        load_sae(SAESource(path=str(no_out)))
    standard = save_transcoder(tiny_model_dir, tmp_path / "b", arch="standard")
    with pytest.raises(SaeInterpError, match="names hook_name_out=.* save it as a sae_lens"):
        load_sae(SAESource(path=str(standard)))
    fine = save_transcoder(tiny_model_dir, tmp_path / "c")
    with pytest.raises(SaeInterpError, match="control=random is defined for SAEs"):
        load_sae(SAESource(path=str(fine), control="random"))


@pytest.mark.slow  # lm_eval
def test_an_output_hook_the_model_lacks_is_one_line_and_writes_nothing(
    tiny_model_dir, sae_cache, tmp_path
):
    bad = save_transcoder(tiny_model_dir, tmp_path / "tc", hook_out="blocks.0.hook_mlp_outt")
    proc = run_lm_eval(
        ["--model", "sae", "--model_args", f"path={bad},device=cpu", "--tasks", "sae_core",
         "--limit", "1", "--output_path", str(tmp_path / "run")],
        sae_cache,
    )  # fmt: skip
    (line,) = error_lines(proc.stderr)
    assert proc.returncode != 0 and "blocks.0.hook_mlp_outt" in line
    assert "blocks.0.hook_mlp_out" in line.split("blocks.0.hook_mlp_outt", 1)[1]  # close names
    assert not result_files(tmp_path / "run")
