"""sae_core: explained variance about the mean, dead/dense fractions, CE loss recovered, and
agreement with sae_lens's own `run_evals` on the same tiny model, SAE and tokens."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import HOOK, corpus_lines
from sae_interp_tasks.stages import core, core_metrics, core_plain
from sae_interp_tasks.stages.core import CoreStats


def stats_from(x: np.ndarray, recon: np.ndarray, firing=None, ce=(2.0, 3.0, 6.0)) -> CoreStats:
    """CoreStats of one chunk from its activations x [n, d] and reconstructions [n, d]."""
    return CoreStats(
        n_tokens=len(x),
        l0_sum=0.0,
        sq_err_sum=float(((x - recon) ** 2).sum()),
        x_sum=x.sum(0),
        x_sq_sum=float((x**2).sum()),
        firing=np.zeros(1, dtype=np.int64) if firing is None else np.asarray(firing),
        ce_clean=ce[0],
        ce_spliced=ce[1],
        ce_zero=ce[2],
    )


def test_explained_variance_is_about_the_mean_not_zero():
    rng = np.random.default_rng(0)
    offset = np.full(16, 100.0)  # a large constant component, as residual streams have
    z = rng.standard_normal((2000, 16))
    x, recon = offset + z, offset + 0.5 * z  # reconstruction misses half of every deviation
    ev = core_metrics.explained_variance([stats_from(x, recon)])
    assert ev == pytest.approx(0.75, abs=0.01)  # 1 - E|0.5 z|^2 / E|z|^2
    about_zero = 1 - ((x - recon) ** 2).sum() / (x**2).sum()
    assert about_zero > 0.9999  # what the about-zero formula would have reported
    # same answer as sae_lens's streaming calculator
    from sae_lens.evals import ExplainedVarianceCalculator

    calc = ExplainedVarianceCalculator()
    calc.add_batch(sae_output=torch.tensor(recon), hidden_acts=torch.tensor(x))
    assert ev == pytest.approx(calc.compute(), rel=1e-9)


def test_explained_variance_pools_chunks_about_the_corpus_mean():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((300, 8)) + 5.0  # two chunks with different means: the spread between
    b = rng.standard_normal((500, 8)) - 5.0  # chunk means is variance too
    ra, rb = a + 0.3 * rng.standard_normal(a.shape), b + 0.3 * rng.standard_normal(b.shape)
    pooled = np.concatenate([a, b])
    expected = (
        1
        - ((pooled - np.concatenate([ra, rb])) ** 2).sum() / ((pooled - pooled.mean(0)) ** 2).sum()
    )
    assert core_metrics.explained_variance([stats_from(a, ra), stats_from(b, rb)]) == pytest.approx(
        expected, rel=1e-9
    )
    per_chunk_mean = np.mean(
        [
            core_metrics.explained_variance([stats_from(a, ra)]),
            core_metrics.explained_variance([stats_from(b, rb)]),
        ]
    )
    assert per_chunk_mean < expected - 0.05  # averaging per-chunk EVs would understate it


def test_dead_and_dense_fractions():
    x = np.zeros((100, 2))
    chunk_a = stats_from(x, x, firing=[0, 0, 5, 20, 10, 60])
    chunk_b = stats_from(x, x, firing=[0, 1, 5, 20, 10, 60])
    # frequencies over 200 tokens: 0, 0.005, 0.05, 0.2, 0.1 (exactly the threshold: not dense), 0.6
    assert core_metrics.firing_frequency([chunk_a, chunk_b]).tolist() == pytest.approx(
        [0, 0.005, 0.05, 0.2, 0.1, 0.6]
    )
    assert core_metrics.dead_fraction([chunk_a, chunk_b]) == pytest.approx(1 / 6)
    assert core_metrics.dense_fraction([chunk_a, chunk_b]) == pytest.approx(2 / 6)
    # latent 1 only fires in chunk b
    assert core_metrics.dead_fraction([chunk_a]) == pytest.approx(2 / 6)


def test_ce_loss_recovered_and_per_chunk_metrics():
    x = np.zeros((10, 2))
    a = stats_from(x, x, ce=(2.0, 3.0, 6.0))
    b = stats_from(x, x, ce=(2.0, 5.0, 6.0))
    assert core_metrics.ce_loss_recovered([a]) == pytest.approx(0.75)  # (6 - 3) / (6 - 2)
    # ratio of mean losses
    assert core_metrics.ce_loss_recovered([a, b]) == pytest.approx((6 - 4) / (6 - 2))
    s = CoreStats(
        n_tokens=4,
        l0_sum=10.0,
        sq_err_sum=2.0,
        x_sum=np.zeros(2),
        x_sq_sum=1.0,
        firing=np.zeros(3, dtype=np.int64),
        ce_clean=1.0,
        ce_spliced=1.5,
        ce_zero=3.0,
    )
    assert core_metrics.per_chunk_metrics(s) == {
        "l0": 2.5,
        "mse": 0.5,
        "ce_loss_clean": 1.0,
        "ce_loss_spliced": 1.5,
        "ce_loss_zero_ablation": 3.0,
        "mse_saebench": 0.125,  # SAEBench's: each token's error over the chunk's 4 tokens
    }


def fast_stats(model, sae, tokens, reader=None, hook=HOOK):
    """sae_core's path: the SAE-independent reference, then the SAE's part."""
    special = core.special_ids(model.tokenizer)
    reference = core.chunk_reference(
        model, hook, tokens, special, reader, core.zero_ablation_logits(model, hook)
    )
    return core.chunk_stats(model, sae, hook, tokens, reference, special)


def test_exact_sae_recovers_everything(tiny_model, exact_sae_dir, eval_tokens):
    from sae_interp_tasks.stages.saes import SAESource, load_sae

    sae, _ = load_sae(SAESource(path=str(exact_sae_dir)))
    s = fast_stats(tiny_model, sae, eval_tokens)
    assert s.n_tokens == eval_tokens[:, 1:].numel()
    assert s.sq_err_sum == pytest.approx(0.0, abs=1e-8)
    assert core_metrics.explained_variance([s]) == pytest.approx(1.0)
    assert s.ce_spliced == pytest.approx(s.ce_clean, abs=1e-6)
    assert core_metrics.ce_loss_recovered([s]) == pytest.approx(1.0, abs=1e-3)


def test_planted_sae_counts(tiny_model, loaded_planted, planted_sae, eval_tokens):
    sae, _ = loaded_planted
    s = fast_stats(tiny_model, sae, eval_tokens)
    body = eval_tokens[:, 1:]
    for latent, tok in planted_sae.latent_tokens.items():
        assert s.firing[latent] == int((body == tok).sum())
    assert s.l0_sum == float(s.firing.sum())


# --- agreement with sae_lens.evals.run_evals ------------------------------------------------------
@pytest.fixture(scope="module")
def eval_tokens(tokenizer) -> torch.Tensor:
    """8 contexts of 64 tokens: BOS, then running text with no other special token (see the
    convention note)."""
    ids = tokenizer.encode(" ".join(corpus_lines(200, seed=5)), add_special_tokens=False)[: 8 * 63]
    body = torch.tensor(ids).reshape(8, 63)
    assert not torch.isin(
        body, torch.tensor([tokenizer.bos_token_id, tokenizer.eos_token_id])
    ).any()
    return torch.cat([torch.full((8, 1), tokenizer.bos_token_id), body], dim=1)


def sae_lens_metrics(
    model, sae, tokens: torch.Tensor, exclude_special_tokens: bool, **flags
) -> tuple[dict, dict]:
    """run_evals over exactly `tokens` (a pretokenized in-memory dataset read in order, 2 batches
    of 4)."""
    import datasets
    from sae_lens import ActivationsStore
    from sae_lens.evals import EvalConfig, run_evals
    from sae_lens.training.activation_scaler import ActivationScaler

    dataset = datasets.Dataset.from_dict({"tokens": tokens.tolist()})
    store = ActivationsStore.from_sae(
        model,
        sae,
        dataset=dataset,
        context_size=tokens.shape[1],
        streaming=False,
        store_batch_size_prompts=4,
        total_tokens=len(tokens),
        device="cpu",
    )
    config = EvalConfig(
        batch_size_prompts=4,
        n_eval_reconstruction_batches=2,
        n_eval_sparsity_variance_batches=2,
        **flags,
    )
    return run_evals(
        sae, store, model, ActivationScaler(), config, exclude_special_tokens=exclude_special_tokens
    )


# sae_lens: "fewer samples than tokens", "not tokenized"
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_agrees_with_sae_lens_run_evals(tiny_model, loaded_planted, eval_tokens):
    """Tolerances: L0 to 1e-6 relative (the same integer counts; sae_lens averages them in float32);
    MSE, feature density and each CE loss to 1e-5 relative (float32 sums taken in another order);
    explained variance to 1e-5 relative or 1e-6 absolute (it is ~1e-3 for this random SAE, so only
    the absolute bound means anything); CE loss recovered to 1e-3 absolute: it is a ratio of
    differences of ~1e-2 between losses of ~10.8 on this random model, which amplifies float32
    noise ~1000x (seen: 5e-5).

    Conventions (sae_lens 6.54, evals.py):
    - sparsity/variance: both drop every position holding a special token (BOS, EOS, PAD:
      sae_lens's get_special_token_ids), sae_lens's default exclude_special_tokens=True.
    - explained_variance: both about the mean, pooled over all tokens (sae_lens's
      ExplainedVarianceCalculator; its `explained_variance_legacy` is the old per-batch formula and
    is not comparable). - mse: both are the per-token squared error summed over d_in, averaged over
    tokens.
    - CE losses: both keep the original activation at special-token positions and drop the losses
      predicted from them (sae_lens's default). It matters: on this model splicing at BOS too gives
      a ce_loss_score of -0.17 instead of 0.78.
    - ce_loss_recovered = sae_lens's ce_loss_score: (ablation - with_sae) / (ablation -
      without_sae), zero ablation at the hook at every position in both.
    """
    sae, info = loaded_planted
    ours = fast_stats(tiny_model, sae, eval_tokens)
    n = ours.n_tokens

    sparse, features = sae_lens_metrics(
        tiny_model,
        sae,
        eval_tokens,
        exclude_special_tokens=True,
        compute_sparsity_metrics=True,
        compute_variance_metrics=True,
        compute_featurewise_density_statistics=True,
    )
    # sae_lens averages in float32
    assert ours.l0_sum / n == pytest.approx(sparse["sparsity"]["l0"], rel=1e-6)
    assert ours.sq_err_sum / n == pytest.approx(sparse["reconstruction_quality"]["mse"], rel=1e-5)
    assert core_metrics.explained_variance([ours]) == pytest.approx(
        sparse["reconstruction_quality"]["explained_variance"], rel=1e-5, abs=1e-6
    )
    np.testing.assert_allclose(
        core_metrics.firing_frequency([ours]), features["feature_density"], rtol=1e-6
    )

    ce, _ = sae_lens_metrics(
        tiny_model, sae, eval_tokens, exclude_special_tokens=True, compute_ce_loss=True
    )
    ce = ce["model_performance_preservation"]
    assert ours.ce_clean == pytest.approx(ce["ce_loss_without_sae"], rel=1e-5)
    assert ours.ce_spliced == pytest.approx(ce["ce_loss_with_sae"], rel=1e-5)
    assert ours.ce_zero == pytest.approx(ce["ce_loss_with_ablation"], rel=1e-5)
    assert core_metrics.ce_loss_recovered([ours]) == pytest.approx(ce["ce_loss_score"], abs=1e-3)


# --- the fast path: reference once, the SAE's part per SAE ----------------------------------------
@pytest.fixture(scope="module")
def hf_reader(tiny_model, tiny_model_dir):
    from transformers import AutoModelForCausalLM

    from sae_interp_tasks.stages.hf_forward import HFReader

    hf = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)).eval()
    reader = HFReader.check(hf, tiny_model, HOOK, torch.tensor([[1, 504, 2891, 30, 1032]]))
    assert reader is not None, "the tiny Llama's Hugging Face forward should match TransformerLens"
    return reader


@pytest.mark.parametrize("through_hf", [False, True])
def test_fast_path_equals_three_full_forwards(
    tiny_model, loaded_planted, eval_tokens, hf_reader, through_hf
):
    sae, _ = loaded_planted
    slow = core_plain.three_forward_chunk_stats(tiny_model, sae, HOOK, eval_tokens)
    fast = fast_stats(tiny_model, sae, eval_tokens, hf_reader if through_hf else None)
    assert fast.n_tokens == slow.n_tokens and fast.l0_sum == slow.l0_sum
    assert np.array_equal(fast.firing, slow.firing)
    assert fast.sq_err_sum == pytest.approx(slow.sq_err_sum, rel=1e-4)
    assert fast.x_sq_sum == pytest.approx(slow.x_sq_sum, rel=1e-5)
    for name in ("ce_clean", "ce_spliced", "ce_zero"):
        assert getattr(fast, name) == pytest.approx(getattr(slow, name), rel=1e-5), name
    # the KL divergences from the reference's terms equal those of the full distributions
    kept = core._keep_mask(eval_tokens, core.special_ids(tiny_model.tokenizer))
    assert fast.kl_tokens == slow.kl_tokens == int(kept.sum())
    assert slow.kl_sae_sum > 0 and slow.kl_zero_sum > 0
    for name in ("kl_sae_sum", "kl_zero_sum", "ev_legacy_sum"):
        assert getattr(fast, name) == pytest.approx(getattr(slow, name), rel=2e-4), name
    assert np.array_equal(fast.contexts_firing, slow.contexts_firing)
    assert (fast.contexts_firing <= eval_tokens.shape[0]).all()
    assert (fast.contexts_firing <= fast.firing).all() and fast.contexts_firing.sum() > 0


def test_a_wide_sae_is_encoded_in_blocks_with_the_same_statistics(
    tiny_model, loaded_planted, eval_tokens, monkeypatch
):
    """Above MAX_CODE_FLOATS code entries a chunk is encoded a block of positions at a time: the
    same statistics as in one piece (the legacy explained variance still about the chunk's mean,
    contexts counted across blocks)."""
    import dataclasses

    sae, _ = loaded_planted
    special = core.special_ids(tiny_model.tokenizer)
    reference = core.chunk_reference(tiny_model, HOOK, eval_tokens, special)
    whole = core.chunk_stats(tiny_model, sae, HOOK, eval_tokens, reference, special)
    monkeypatch.setattr(core, "MAX_CODE_FLOATS", 7 * sae.cfg.d_sae)  # 7 positions a block
    blocked = core.chunk_stats(tiny_model, sae, HOOK, eval_tokens, reference, special)
    for field in dataclasses.fields(CoreStats):
        mine, theirs = getattr(blocked, field.name), getattr(whole, field.name)
        assert np.allclose(mine, theirs, rtol=1e-6, atol=1e-9), field.name
    assert whole.contexts_firing.sum() > 0 and whole.ev_legacy_sum != 0


def tiny_gpt2():
    """A 3-layer GPT-2-style model (LayerNorm with biases, learned positions, biased attention and
    MLP)."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    torch.manual_seed(1)
    cfg = HookedTransformerConfig(
        n_layers=3,
        d_model=32,
        n_ctx=64,
        d_head=8,
        n_heads=4,
        d_mlp=64,
        d_vocab=50,
        act_fn="gelu_new",
        normalization_type="LN",
        positional_embedding_type="standard",
    )
    model = HookedTransformer(cfg)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(("b_Q", "b_K", "b_V", "b_O", "b_in", "b_out", ".b")):
                # biases well away from zero: the zeroed stream is not trivially zero after
                param.normal_(0, 0.5)
    return model.eval()


@pytest.mark.parametrize(
    "hook",
    [
        "blocks.0.hook_resid_pre",
        "blocks.1.hook_resid_post",
        "blocks.2.hook_resid_post",
        "blocks.1.hook_resid_pre",
    ],
)
def test_zero_ablation_from_one_position_equals_a_zeroed_forward(hook, tiny_model):
    """A zeroed residual stream gives the same logits at every position: one position computes
    them."""
    tokens = torch.randint(0, 50, (3, 40), generator=torch.Generator().manual_seed(0))
    for model, toks in ((tiny_gpt2(), tokens), (tiny_model, tokens + 100)):
        if int(hook.split(".")[1]) >= model.cfg.n_layers:
            continue
        with torch.no_grad():
            zeroed = model.run_with_hooks(
                toks, fwd_hooks=[(hook, lambda a, hook: torch.zeros_like(a))]
            )
        row = core.zero_ablation_logits(model, hook)
        assert torch.allclose(zeroed.float(), row.expand_as(zeroed), atol=1e-4), (
            model.cfg.model_name,
            hook,
        )
    # not a residual-stream hook
    assert core.zero_ablation_logits(tiny_model, "blocks.0.hook_mlp_out") is None


def test_a_second_sae_at_the_same_hook_reuses_the_reference(
    planted_sae, exact_sae_dir, corpus_file, tmp_path, monkeypatch
):
    """sae_core's cache: the reference (activations, clean and zero-ablated losses) is paid once per
    model, hook, corpus and seed; the second SAE runs no clean forward and gets the same numbers."""
    from sae_interp_tasks.harness.backend import SAEBackend
    from sae_interp_tasks.harness.request import read_request
    from sae_interp_tasks.tasks.core import serve_core

    monkeypatch.setenv("SAE_INTERP_CACHE", str(tmp_path / "cache"))
    settings = {
        "corpus": str(corpus_file),
        "n_tokens": 1024,
        "context_size": 64,
        "chunk_contexts": 4,
    }
    payloads = [
        read_request(
            json.dumps(
                {
                    "kind": "core",
                    "task": "sae_core",
                    "doc": {"chunk": i},
                    "seed": 3,
                    "settings": settings,
                }
            )
        )
        for i in range(4)
    ]
    first = serve_core(SAEBackend(path=str(planted_sae.path), device="cpu"), payloads)
    calls = []
    real = core.chunk_reference
    monkeypatch.setattr(core, "chunk_reference", lambda *a, **k: calls.append(1) or real(*a, **k))
    second = serve_core(SAEBackend(path=str(exact_sae_dir), device="cpu"), payloads)
    assert calls == []  # every chunk's reference came from the cache
    for a, b in zip(first, second, strict=True):
        assert a.stats.ce_clean == b.stats.ce_clean and a.stats.ce_zero == b.stats.ce_zero
        assert b.stats.sq_err_sum == pytest.approx(0.0, abs=1e-6)  # the exact SAE
        assert b.stats.ce_spliced == pytest.approx(b.stats.ce_clean, abs=1e-5)
