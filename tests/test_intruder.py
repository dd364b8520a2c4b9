"""Intruder scoring (scorers/intruder.py, tasks/intruder.py): how questions are built from a
latent's windows, the control without a shared latent, reading the answer, the oracle's answers,
and bad settings. The known-answer run through lm_eval is in test_known_answers.py."""

from __future__ import annotations

import json
import random
from collections import Counter

import numpy as np
import pytest

from sae_interp_tasks.clients import ClientConfig, Completion
from sae_interp_tasks.errors import SaeInterpError
from sae_interp_tasks.records import Example, ExampleSplit
from sae_interp_tasks.scorers import intruder
from sae_interp_tasks.scorers.intruder import IntruderConfig

WORDS = (" apple", " river", " stone", " cloud", " table", " green")
FILLER = (" the", " of", " and", " to", " in", " on", " was", " it")


def ids(tokenizer, words) -> list[int]:
    return [tokenizer.encode(w, add_special_tokens=False)[0] for w in words]


def latent_splits(tokenizer, n_latents: int = 6, n_act: int = 20, n_non: int = 12) -> dict:
    """Latent i fires on WORDS[i] (activation growing with the window's index, so bands differ);
    its non-activating windows hold filler only."""
    rng = np.random.default_rng(0)
    words, filler = ids(tokenizer, WORDS), ids(tokenizer, FILLER)
    splits = {}
    for lat in range(n_latents):
        act = []
        for k in range(n_act):
            tokens = rng.choice(filler, size=12)
            at = sorted(rng.choice(12, size=2, replace=False))
            tokens[at] = words[lat]
            acts = np.zeros(12, np.float32)
            acts[at] = 1.0 + k
            act.append(Example(tokens.astype(np.int64), acts, decile=1 + k // 2))
        non = [
            Example(rng.choice(filler, size=12).astype(np.int64), np.zeros(12, np.float32))
            for _ in range(n_non)
        ]
        splits[lat] = ExampleSplit(lat, [], act, non)
    return splits


def test_bands_cut_by_strength_strongest_first_and_widen_to_a_question():
    examples = [Example(np.zeros(4, np.int64), np.full(4, float(k), np.float32)) for k in range(20)]
    got = intruder.bands(examples, 5, 4)
    assert [[int(e.max_act) for e in band] for band in got] == [
        [19, 18, 17, 16],
        [15, 14, 13, 12],
        [11, 10, 9, 8],
        [7, 6, 5, 4],
        [3, 2, 1, 0],
    ]
    wide = intruder.bands(examples, 10, 4)  # 2 per band: each widened around its middle
    assert all(len(b) == 4 for b in wide)
    assert [int(e.max_act) for e in wide[0]] == [19, 18, 17, 16]
    assert [int(e.max_act) for e in wide[-1]] == [3, 2, 1, 0]


def test_a_question_is_one_bands_windows_and_one_intruder_marked_like_them(tokenizer):
    splits = latent_splits(tokenizer)
    cfg = IntruderConfig()
    others = {k: v for k, v in splits.items() if k != 0}
    qs = intruder.questions(splits[0], others, cfg, 0.3, random.Random(0))
    assert len(qs) == cfg.intruder_questions
    assert [q.band for q in qs] == [1, 2, 3, 4, 5] * 2
    places = Counter(q.intruder for q in qs)
    assert len(places) > 1  # the intruder's place is drawn
    act_ids = {id(e) for e in splits[0].test_activating}
    non_ids = {id(e) for e in splits[0].test_non_activating}
    bands = intruder.bands(splits[0].test_activating, cfg.intruder_quantiles, 4)
    seen_intruders = set()
    for q in qs:
        assert len(q.shown) == cfg.intruder_windows and q.chance == 1 / cfg.intruder_windows
        assert [s.label for s in q.shown] == [i == q.intruder for i in range(len(q.shown))]
        rest = [s for i, s in enumerate(q.shown) if i != q.intruder]
        assert {id(s.example) for s in rest} <= {id(e) for e in bands[q.band - 1]}
        assert all(id(s.example) in act_ids for s in rest)
        odd = q.shown[q.intruder]
        assert id(odd.example) in non_ids and id(odd.example) not in seen_intruders
        seen_intruders.add(id(odd.example))
        # activating windows: their firing tokens marked; the intruder: as many random tokens
        for s in rest:
            assert np.array_equal(s.marks, s.example.acts > 0)
        assert odd.marks.sum() == round(np.mean([s.marks.sum() for s in rest]))
    plain = intruder.questions(
        splits[0], others, IntruderConfig(intruder_highlight=False), 0.3, random.Random(0)
    )
    assert all(s.marks is None for q in plain for s in q.shown)


def test_the_control_takes_each_window_from_another_latent(tokenizer):
    """The control: every window, the one called the intruder too, from a different other latent
    with its own tokens marked, the intruder's place drawn: right 1 time in intruder_windows
    whatever the scorer reads."""
    splits = latent_splits(tokenizer)
    others = {k: v for k, v in splits.items() if k != 0}
    owner = {id(e): lat for lat, sp in splits.items() for e in sp.test_activating}
    qs = intruder.questions(splits[0], others, IntruderConfig(), 0.3, random.Random(1), True)
    assert len(qs) == IntruderConfig().intruder_questions
    assert len({q.intruder for q in qs}) > 1
    for q in qs:
        shown = [owner[id(s.example)] for s in q.shown]
        assert 0 not in shown and len(set(shown)) == len(shown) == 5
        assert all(np.array_equal(s.marks, s.example.acts > 0) for s in q.shown)
    # too few other latents for a question without a shared one: no control, never a score
    few = {k: splits[k] for k in (1, 2, 3, 4)}
    assert intruder.questions(splits[0], few, IntruderConfig(), 0.3, random.Random(1), True) == []
    four = IntruderConfig(intruder_windows=4)
    assert intruder.questions(splits[0], few, four, 0.3, random.Random(1), True)


def test_an_intruder_from_another_latent_shows_that_latents_own_tokens(tokenizer):
    splits = latent_splits(tokenizer)
    others = {k: v for k, v in splits.items() if k != 0}
    owner = {id(e): lat for lat, sp in splits.items() for e in sp.test_activating}
    cfg = IntruderConfig(intruder_source="other_latent")
    for q in intruder.questions(splits[0], others, cfg, 0.3, random.Random(2)):
        odd = q.shown[q.intruder]
        assert owner[id(odd.example)] != 0
        assert np.array_equal(odd.marks, odd.example.acts > 0)
    # a latent with fewer activating windows than a question shows is not asked
    thin = ExampleSplit(9, [], splits[0].test_activating[:3], splits[0].test_non_activating)
    assert intruder.questions(thin, others, IntruderConfig(), 0.3, random.Random(0)) == []


@pytest.mark.parametrize(
    ("text", "n", "want"),
    [
        ("3", 5, 2),
        ("Example 4 is the intruder.", 5, 3),
        ("[RESPONSE]: 1", 5, 0),
        ("7", 5, None),
        ("none of them", 5, None),
        (None, 5, None),
    ],
)
def test_the_answer_names_one_example(text, n, want):
    picked, probs = intruder.parse_choice(Completion(text=text), n)
    assert picked == want and probs is None
    read = intruder.parse_choice(Completion(text="2", choice_probs=[0.1, 0.6, 0.1, 0.1, 0.1]), 5)
    assert read == (1, [0.1, 0.6, 0.1, 0.1, 0.1])
    assert intruder.parse_choice(Completion(text="2", choice_probs=[0.5, 0.5]), 5) == (1, None)


def test_the_oracle_finds_the_intruder_and_cannot_without_a_shared_latent(tokenizer, tmp_path):
    """The oracle (a stand-in for a perfect scorer) reads the prompts as written: right on every
    real question, and on the control it has nothing to go by (it names the first example)."""
    from sae_interp_tasks.validity.oracle import OracleClient

    answers = {
        "latents": [
            {"latent": i, "name": f'the token "{w}"', "kind": "token", "token": w, "markers": [w]}
            for i, w in enumerate(WORDS)
        ]
    }
    (tmp_path / "answers.json").write_text(json.dumps(answers))
    oracle = OracleClient(ClientConfig(kind="oracle", model=str(tmp_path)))
    splits = latent_splits(tokenizer)

    def decode(t):
        return tokenizer.decode(t)

    for lat in (0, 3):
        others = {k: v for k, v in splits.items() if k != lat}
        for shuffled in (False, True):
            qs = intruder.questions(
                splits[lat], others, IntruderConfig(), 0.3, random.Random(lat), shuffled
            )
            replies = oracle.generate([intruder.prompt(q, decode, 4, True) for q in qs])
            picked = [intruder.read(q, c)["picked"] for q, c in zip(qs, replies, strict=True)]
            if shuffled:
                assert picked == [0] * len(qs)
            else:
                assert picked == [q.intruder for q in qs]


def test_bad_intruder_settings_are_one_line_errors_naming_the_fix():
    from sae_interp_tasks import registry

    with pytest.raises(SaeInterpError, match="intruder_windows=10 must be at most 9"):
        registry.settings_for("intruder", {"intruder_windows": 10})
    with pytest.raises(
        SaeInterpError, match="raise scorer_check_windows or lower intruder_windows"
    ):
        registry.settings_for("intruder", {"intruder_windows": 8, "scorer_check_windows": 5})
    with pytest.raises(SaeInterpError, match="choose from: non_activating, other_latent"):
        registry.settings_for("intruder", {"intruder_source": "random"})
    ok = registry.settings_for("intruder", {"intruder_windows": 8, "scorer_check": False})
    assert ok.intruder.intruder_windows == 8
