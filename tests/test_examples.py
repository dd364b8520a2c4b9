"""Example splits (train/test never overlap, per-decile test windows) and the one highlighting
function."""

from __future__ import annotations

import numpy as np
import pytest

from sae_interp_tasks.errors import SaeInterpError
from sae_interp_tasks.records import Example, LatentRecord
from sae_interp_tasks.stages.examples import (
    ExampleConfig,
    activating_marks,
    assign_deciles,
    highlight,
    split_examples,
)

W = 8


def graded_record(n_activating: int = 100, n_quiet: int = 80, latent: int = 3) -> LatentRecord:
    """A latent whose i-th activating window peaks at i + 1 (so the deciles are known exactly)."""
    rng = np.random.default_rng(0)
    activating = []
    for i in range(n_activating):
        acts = np.zeros(W, dtype=np.float32)
        acts[rng.integers(W)] = i + 1
        activating.append(Example(tokens=rng.integers(100, 200, W), acts=acts, window_id=1000 + i))
    rng.shuffle(activating)
    # all of them: "top" train sampling skips test windows
    top = sorted(activating, key=lambda e: -e.max_act)
    quiet = [
        Example(tokens=rng.integers(100, 200, W), acts=np.zeros(W, dtype=np.float32), window_id=i)
        for i in range(n_quiet)
    ]
    return LatentRecord(
        latent=latent,
        n_firing=n_activating,
        n_tokens=10_000,
        max_act=float(n_activating),
        top=top,
        activating=activating,
        non_activating=quiet,
    )


def test_deciles_rank_windows_by_max_activation():
    record = graded_record()
    labelled = assign_deciles(record.activating, 10)
    for ex in labelled:
        rank = int(ex.max_act) - 1  # 0 .. 99
        assert ex.decile == 1 + rank // 10
    # the originals are untouched (records are frozen; labelling returns copies)
    assert all(ex.decile == 0 for ex in record.activating)


@pytest.mark.parametrize("sampling", ["deciles", "top", "random"])
def test_train_and_test_never_share_a_window(sampling):
    record = graded_record()
    cfg = ExampleConfig(
        n_train=40, train_sampling=sampling, n_test_per_decile=5, n_test_non_activating=50
    )
    split = split_examples(record, cfg, seed=0)
    train_ids = {ex.window_id for ex in split.train}
    test_ids = {ex.window_id for ex in split.test}
    assert not train_ids & test_ids
    assert len(split.train) == 40
    assert len(split.test_activating) == 50
    assert len(split.test_non_activating) == 50
    assert all(ex.is_activating for ex in split.train + split.test_activating)
    assert not any(ex.is_activating for ex in split.test_non_activating)


def test_test_windows_cover_every_decile():
    record = graded_record()
    cfg = ExampleConfig(n_test_per_decile=3, n_deciles=10)
    split = split_examples(record, cfg, seed=0)
    per_decile = {d: [ex for ex in split.test_activating if ex.decile == d] for d in range(1, 11)}
    assert all(len(group) == 3 for group in per_decile.values())
    for d, group in per_decile.items():  # each decile holds the windows of that activation range
        assert all(10 * (d - 1) < ex.max_act <= 10 * d for ex in group)


def test_decile_train_sampling_spreads_across_deciles():
    record = graded_record()
    split = split_examples(record, ExampleConfig(n_train=20, n_test_per_decile=5), seed=0)
    deciles = [ex.decile for ex in split.train]
    assert sorted(set(deciles)) == list(range(1, 11))
    assert all(deciles.count(d) == 2 for d in range(1, 11))


def test_top_train_sampling_takes_the_strongest_unused_windows():
    record = graded_record()
    split = split_examples(record, ExampleConfig(n_train=5, train_sampling="top"), seed=0)
    test_ids = {ex.window_id for ex in split.test}
    expected = [ex for ex in record.top if ex.window_id not in test_ids][:5]
    assert [ex.window_id for ex in split.train] == [ex.window_id for ex in expected]


def test_split_is_seeded():
    record = graded_record()
    cfg = ExampleConfig()

    def ids(s):
        return [e.window_id for e in s.train], [e.window_id for e in s.test]

    assert ids(split_examples(record, cfg, seed=1)) == ids(split_examples(record, cfg, seed=1))
    assert ids(split_examples(record, cfg, seed=1)) != ids(split_examples(record, cfg, seed=2))


def test_split_of_the_planted_cat_latent(planted_sae, planted_pass):
    """End to end from the pass: every train and test activating window holds " cat", no negative
    does."""
    record = planted_pass.record(planted_sae.cat_latent)
    ex_cfg = ExampleConfig(
        n_train=10, n_test_per_decile=2, n_test_non_activating=20, min_examples=20
    )
    assert len(record.activating) >= ex_cfg.min_examples
    split = split_examples(record, ex_cfg, seed=0)
    cat = planted_sae.latent_tokens[planted_sae.cat_latent]
    assert not {e.window_id for e in split.train} & {e.window_id for e in split.test}
    assert len(split.test_activating) == 2 * 10 and len(split.train) == 10
    assert all(cat in ex.tokens for ex in split.train + split.test_activating)
    assert split.test_non_activating and all(
        cat not in ex.tokens for ex in split.test_non_activating
    )


def test_bad_example_config():
    with pytest.raises(
        SaeInterpError,
        match="train_sampling='best' is not valid; choose from: deciles, top, random",
    ):
        ExampleConfig(train_sampling="best")
    with pytest.raises(SaeInterpError, match="n_train=0 must be at least 1"):
        ExampleConfig(n_train=0)


def test_highlight_marks_tokens(tokenizer):
    tokens = np.array(tokenizer.encode("The cat sat on the cat mat", add_special_tokens=False))
    cat = tokenizer.encode(" cat", add_special_tokens=False)[0]
    text = highlight(tokens, tokens == cat, tokenizer.decode)
    assert text == "The<< cat>> sat on the<< cat>> mat"
    # adjacent marked tokens share one pair; a mark running to the end is closed
    marks = np.zeros(len(tokens), dtype=bool)
    marks[-3:] = True
    assert highlight(tokens, marks, tokenizer.decode) == "The cat sat on<< the cat mat>>"
    assert (
        highlight(tokens, np.zeros(len(tokens), bool), tokenizer.decode)
        == "The cat sat on the cat mat"
    )
    assert (
        highlight(tokens, tokens == cat, tokenizer.decode, "[", "]")
        == "The[ cat] sat on the[ cat] mat"
    )


def test_activating_marks_threshold():
    ex = Example(tokens=np.arange(5), acts=np.array([0.0, 1.0, 0.3, 0.29, 0.0], dtype=np.float32))
    assert activating_marks(ex).tolist() == [False, True, True, False, False]
    quiet = Example(tokens=np.arange(3), acts=np.zeros(3, dtype=np.float32))
    assert not activating_marks(quiet).any()


@pytest.mark.parametrize("n_activating", [20, 21, 25, 49, 60])
def test_a_rare_latent_keeps_at_least_half_of_its_windows_for_its_explanation(n_activating):
    """With exactly min_examples activating windows (or a few more) the test set takes at most
    half, spread across deciles, and the explainer gets the rest (never nothing)."""
    record = graded_record(n_activating=n_activating)
    cfg = ExampleConfig(n_train=40, min_examples=20)
    split = split_examples(record, cfg, seed=0)
    assert len(split.test_activating) <= n_activating // 2
    assert len(split.train) >= n_activating - n_activating // 2
    # every window is used once
    assert len(split.train) + len(split.test_activating) == n_activating
    assert not {ex.window_id for ex in split.train} & {ex.window_id for ex in split.test_activating}
    # spread over deciles
    assert len({ex.decile for ex in split.test_activating}) >= min(10, n_activating // 4)


def test_a_frequent_latent_is_split_as_before():
    """Thousands of activating windows: 5 test windows per decile and 40 for the explainer, as
    always."""
    record = graded_record(n_activating=2000, n_quiet=100)
    split = split_examples(record, ExampleConfig(), seed=0)
    assert len(split.test_activating) == 50 and len(split.train) == 40
    assert all(sum(ex.decile == d for ex in split.test_activating) == 5 for d in range(1, 11))
