"""The activation pass: a planted " cat" latent, subset encodes, the cache, resumes, the memory
bound."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from conftest import CAT_LATENT, DOG_LATENT, PASS_BATCH
from conftest import PASS_CFG as CFG
from conftest import PASS_SEED as SEED
from sae_interp_tasks.stages import activations, corpus
from sae_interp_tasks.stages.activations import run_activation_pass

TENSORS = (
    "firing",
    "max_act",
    "top_key",
    "top_id",
    "top_tokens",
    "top_acts",
    "sample_key",
    "sample_id",
    "sample_tokens",
    "sample_acts",
    "random_key",
    "random_id",
    "random_tokens",
    "random_max",
)


@pytest.fixture(scope="module")
def spec(corpus_file):
    return corpus.CorpusSpec(source=str(corpus_file))


@pytest.fixture(scope="module")
def full_pass(planted_pass):
    return planted_pass


@pytest.fixture(scope="module")
def pass_tokens(tiny_model, spec) -> torch.Tensor:
    """The contexts the pass saw, [n_contexts, context_size]."""
    return torch.stack(
        list(
            corpus.token_contexts(
                spec,
                tiny_model.tokenizer,
                CFG.n_tokens,
                CFG.context_size,
                prepend_bos=True,
                seed=SEED,
            )
        )
    )


def run(model, sae, info, spec, cfg=CFG, batch_size=PASS_BATCH, **kwargs):
    return run_activation_pass(
        model, sae, info, spec, cfg, SEED, batch_size, progress=False, **kwargs
    )


def assert_same_state(a, b, latents=None):
    """Two pass states hold the same thing (optionally: b restricted to a's latents). Each latent's
    kept windows are a set; canonical() puts both in record order."""
    a, b = a.canonical(), b.canonical()
    rows = slice(None) if latents is None else [b.index_of(int(lat)) for lat in latents]
    assert a.n_tokens == b.n_tokens and a.n_contexts == b.n_contexts
    for name in TENSORS:
        x, y = getattr(a, name), getattr(b, name)
        if latents is not None and name == "random_max":
            y = y[:, rows]
        elif latents is not None and not name.startswith("random"):
            y = y[rows]
        assert torch.equal(x, y), name


def test_planted_latent_fires_exactly_on_cat(full_pass, pass_tokens, planted_sae):
    cat = planted_sae.latent_tokens[CAT_LATENT]
    record = full_pass.record(CAT_LATENT)
    n_cat = int((pass_tokens[:, 1:] == cat).sum())  # position 0 is BOS
    assert n_cat > 20
    assert record.n_firing == n_cat
    assert record.n_tokens == pass_tokens.numel() == CFG.n_tokens
    assert len(record.top) == CFG.n_top
    for ex in record.top + record.activating:
        assert cat in ex.tokens
        # fires on every cat of the window, nowhere else
        assert set(ex.tokens[ex.acts > 0].tolist()) == {cat}
        assert (ex.acts[ex.tokens == cat] > 0).all()
    assert record.non_activating, "the shared random sample should hold windows without ' cat'"
    for ex in record.non_activating:
        assert cat not in ex.tokens
    # top windows strongest first; the planted latent's activation is the same on every cat
    maxima = [ex.max_act for ex in record.top]
    assert maxima == sorted(maxima, reverse=True)
    assert record.max_act == pytest.approx(maxima[0])


def test_second_planted_latent_and_window_ids(full_pass, pass_tokens, planted_sae):
    dog = planted_sae.latent_tokens[DOG_LATENT]
    record = full_pass.record(DOG_LATENT)
    assert record.n_firing == int((pass_tokens[:, 1:] == dog).sum())
    windows = pass_tokens.reshape(-1, CFG.window)  # window_id indexes the pass's windows in order
    for ex in record.top + record.activating + record.non_activating:
        assert torch.equal(torch.from_numpy(ex.tokens), windows[ex.window_id])
    assert len({ex.window_id for ex in record.activating}) == len(record.activating)


def test_bos_never_counts(full_pass, pass_tokens):
    # the activations at BOS are zeroed before any statistic: no window's first token of a context
    # is active
    first_windows = set(range(0, pass_tokens.numel() // CFG.window, CFG.context_size // CFG.window))
    for latent in full_pass.latents.tolist():
        for ex in full_pass.record(latent).top:
            if ex.window_id in first_windows:
                assert ex.acts[0] == 0


def test_subset_encode_matches_full_encode(tiny_model, loaded_planted, spec, full_pass, tmp_path):
    sae, info = loaded_planted
    subset = torch.tensor([CAT_LATENT, 5, 7, DOG_LATENT])  # unsorted on purpose
    part = run(tiny_model, sae, info, spec, latents=subset, cache_dir=tmp_path)
    assert part.latents.tolist() == subset.tolist()
    assert_same_state(part, full_pass, latents=subset.tolist())
    for latent in subset.tolist():
        a, b = part.record(latent), full_pass.record(latent)
        assert a.n_firing == b.n_firing
        assert [e.window_id for e in a.top] == [e.window_id for e in b.top]
        assert [e.window_id for e in a.activating] == [e.window_id for e in b.activating]
        assert [e.window_id for e in a.non_activating] == [e.window_id for e in b.non_activating]


def test_subset_encoder_is_exact(loaded_planted):
    sae, _ = loaded_planted
    x = torch.randn(3, 5, sae.cfg.d_in) * 0.05
    latents = torch.tensor([3, 0, 11])
    assert torch.allclose(
        activations.subset_encoder(sae, latents)(x), sae.encode(x)[..., latents], atol=1e-6
    )
    assert activations.subset_encoder(sae, torch.arange(sae.cfg.d_sae)) == sae.encode


def test_a_wide_topk_subset_is_encoded_in_blocks_with_the_same_codes(loaded_planted, monkeypatch):
    """A TopK SAE's subset needs its full encode; over MAX_CODE_FLOATS entries it runs a block of
    positions at a time, giving the same codes."""
    from sae_interp_tasks.stages.saes import control_sae

    topk = control_sae(loaded_planted[0], "random", k=4)
    x = torch.randn(3, 5, topk.cfg.d_in)
    latents = torch.tensor([3, 0, 11])
    whole = activations.subset_encoder(topk, latents)(x)
    monkeypatch.setattr(activations, "MAX_CODE_FLOATS", 2 * topk.cfg.d_sae)  # 2 positions a block
    blocked = activations.subset_encoder(topk, latents)(x)
    assert blocked.shape == whole.shape == (3, 5, 3)
    assert torch.allclose(blocked, whole, atol=1e-6)  # the matmul rounds per block size
    assert torch.allclose(whole, topk.encode(x)[..., latents], atol=1e-6) and (whole > 0).any()


def test_second_call_is_served_from_cache(tiny_model, loaded_planted, spec, tmp_path, monkeypatch):
    sae, info = loaded_planted
    first = run(tiny_model, sae, info, spec, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*/pass.pt"))) == 1

    def no_model(*args, **kwargs):
        raise AssertionError("a cached pass must not run the model")

    monkeypatch.setattr(activations, "hook_activations", no_model)
    monkeypatch.setattr(corpus, "token_contexts", no_model)
    second = run(tiny_model, sae, info, spec, cache_dir=tmp_path)
    assert_same_state(second, first)
    # batch_size and checkpoint_seconds do not change the result, so they share the cache entry
    third = run(tiny_model, sae, info, spec, batch_size=3, checkpoint_seconds=0, cache_dir=tmp_path)
    assert_same_state(third, first)


def test_batch_layout_does_not_change_the_pass(
    tiny_model, loaded_planted, spec, full_pass, tmp_path
):
    sae, info = loaded_planted
    other = run(tiny_model, sae, info, spec, batch_size=5, cache_dir=tmp_path)
    assert_same_state(other, full_pass)


def test_interrupted_pass_resumes(
    tiny_model, loaded_planted, spec, full_pass, tmp_path, monkeypatch
):
    sae, info = loaded_planted
    cfg = CFG
    real_contexts = corpus.token_contexts
    stop_after = 3 * PASS_BATCH + 2  # dies inside the fourth batch

    def dying_contexts(*args, **kwargs):
        for i, ctx in enumerate(real_contexts(*args, **kwargs)):
            if i == stop_after:
                raise KeyboardInterrupt("simulated crash")
            yield ctx

    monkeypatch.setattr(corpus, "token_contexts", dying_contexts)
    with pytest.raises(KeyboardInterrupt):
        # checkpoint after every batch
        run(tiny_model, sae, info, spec, checkpoint_seconds=0, cache_dir=tmp_path)
    (folder,) = tmp_path.iterdir()
    assert (folder / "partial.pt").exists() and not (folder / "pass.pt").exists()
    monkeypatch.setattr(corpus, "token_contexts", real_contexts)

    forwards = []
    real_hook = activations.hook_activations
    monkeypatch.setattr(
        activations,
        "hook_activations",
        lambda model, hook, tokens: forwards.append(len(tokens)) or real_hook(model, hook, tokens),
    )
    resumed = run(tiny_model, sae, info, spec, checkpoint_seconds=0, cache_dir=tmp_path)
    n_contexts = cfg.n_tokens // cfg.context_size
    assert sum(forwards) == n_contexts - 3 * PASS_BATCH, (
        "the resumed pass must skip the checkpointed batches"
    )
    assert_same_state(resumed, full_pass)
    assert (folder / "pass.pt").exists() and not (folder / "partial.pt").exists()


def test_memory_is_bounded_by_sampling_sizes_not_tokens(
    tiny_model, loaded_planted, spec, full_pass, tmp_path
):
    sae, info = loaded_planted
    half = run(
        tiny_model, sae, info, spec, replace(CFG, n_tokens=CFG.n_tokens // 2), cache_dir=tmp_path
    )
    assert half.n_tokens == CFG.n_tokens // 2
    n_lat, w = info.d_sae, CFG.window
    expected = {
        "top_tokens": (n_lat, CFG.n_top, w),
        "top_acts": (n_lat, CFG.n_top, w),
        "sample_tokens": (n_lat, CFG.n_sample, w),
        "sample_acts": (n_lat, CFG.n_sample, w),
        "random_tokens": (CFG.n_random, w),
        "random_max": (CFG.n_random, n_lat),
    }
    for name in TENSORS:
        assert getattr(half, name).shape == getattr(full_pass, name).shape, name
    for name, shape in expected.items():
        assert tuple(getattr(full_pass, name).shape) == shape, name
    stored = sum(getattr(full_pass, name).numel() for name in TENSORS)
    assert stored == sum(getattr(half, name).numel() for name in TENSORS)


@pytest.mark.parametrize("bad", [dict(n_tokens=0), dict(window=0), dict(n_top=-1), dict(window=48)])
def test_bad_pass_config(bad):
    from sae_interp_tasks.errors import SaeInterpError

    with pytest.raises(SaeInterpError, match="must be"):
        replace(CFG, **bad)


def test_latent_ids_out_of_range(tiny_model, loaded_planted, spec, tmp_path):
    from sae_interp_tasks.errors import SaeInterpError

    sae, info = loaded_planted
    with pytest.raises(SaeInterpError, match=f"0..{info.d_sae - 1}"):
        run(tiny_model, sae, info, spec, latents=torch.tensor([0, info.d_sae]), cache_dir=tmp_path)


class ShardOnly:
    """A process group stub: rank `rank` of `world`, whose gather returns only its own state, so
    the pass returns that rank's shard unmerged."""

    def __init__(self, rank: int, world: int):
        self.rank, self.world_size = rank, world

    def all_gather_object(self, obj):
        return [obj]


def test_shards_merge_into_the_single_process_pass(
    tiny_model, loaded_planted, spec, full_pass, tmp_path
):
    """Under a launcher each rank reads every world_size-th context; merging the ranks' states (k
    best by key, ties to the earlier window; counts summed) gives exactly the pass one process
    makes."""
    from sae_interp_tasks.stages.activations import PassState

    sae, info = loaded_planted
    shards = [
        run(tiny_model, sae, info, spec, cache_dir=tmp_path / f"rank{r}", group=ShardOnly(r, 3))
        for r in range(3)
    ]
    assert sum(s.n_contexts for s in shards) == full_pass.n_contexts
    assert all(s.n_contexts < full_pass.n_contexts for s in shards)
    merged = PassState.empty(full_pass.latents, CFG, SEED)
    for shard in (shards[2], shards[0], shards[1]):  # the order ranks arrive in does not matter
        merged.merge(shard)
    assert_same_state(merged, full_pass)


class PeerCache:
    """Rank 0 of 2 whose peer reports `peer_cached` when the ranks ask each other whether the
    finished pass is cached; every other gather returns this rank's object alone (its shard,
    unmerged)."""

    rank, world_size = 0, 2

    def __init__(self, peer_cached: bool):
        self.peer_cached, self.gathered = peer_cached, []

    def all_gather_object(self, obj):
        self.gathered.append(obj)
        return [obj, self.peer_cached] if isinstance(obj, bool) else [obj]


def test_ranks_agree_on_a_cached_pass(tiny_model, loaded_planted, spec, tmp_path):
    """A rank that finds the finished pass cached loads it only when every rank does; otherwise it
    runs its shard with the others (with per-machine caches, a rank alone on the cached path would
    leave the others waiting in the merge)."""
    sae, info = loaded_planted
    # writes pass.pt
    shard = run(tiny_model, sae, info, spec, cache_dir=tmp_path, group=ShardOnly(0, 2))
    both = PeerCache(peer_cached=True)
    assert_same_state(run(tiny_model, sae, info, spec, cache_dir=tmp_path, group=both), shard)
    assert both.gathered == [True]  # asked, then loaded: no shard run, no merge
    alone = PeerCache(peer_cached=False)
    assert_same_state(run(tiny_model, sae, info, spec, cache_dir=tmp_path, group=alone), shard)
    assert (
        alone.gathered[0] is True
        and len(alone.gathered) == 2
        and isinstance(alone.gathered[1], dict)
    )
