"""Explainers and scorers in a tiny world with planted latents.

The planted SAE's latent 0 fires exactly on " cat" and latent 1 exactly on " dog". An oracle
scorer, which reads the prompt the way an ideal LLM would (does the explanation's word occur
in the example, or in its marked tokens?), must then score the true explanation 1.0 and a
shuffled one near 0.5; a scorer whose answers cannot be read must score nothing at all (NaN),
never 0 or 1. The embedding scorer uses the real packaged all-MiniLM-L6-v2. The last tests
run the whole pipeline through a real `SAEBackend`, counting LLM calls: explanations are
shared between tasks, and a rerun on the same on-disk cache asks no model anything.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter

import numpy as np
import pytest

from conftest import CAT_LATENT, DOG_LATENT
from helpers import SMALL_PASS, read_scorer_prompt, verdicts
from sae_interp_tasks import clients as clients_mod
from sae_interp_tasks.clients import ClientConfig, Completion, LLMClient, Prompt
from sae_interp_tasks.clients.cache import CompletionCache
from sae_interp_tasks.records import Explanation
from sae_interp_tasks.scorers import classifier
from sae_interp_tasks.scorers.classifier import ScorerConfig, parse_answer
from sae_interp_tasks.scorers.detection import Detection
from sae_interp_tasks.scorers.fuzzing import Fuzzing
from sae_interp_tasks.stages.examples import ExampleConfig, split_examples
from sae_interp_tasks.stages.explainers import (
    ExplainerConfig,
    explain,
    explainer_prompt,
    token_explanation,
)

EX_CFG = ExampleConfig(n_train=10, n_test_per_decile=2, n_test_non_activating=20, min_examples=5)
SEED = 0
TRUE = {CAT_LATENT: "the word cat", DOG_LATENT: "the word dog"}
LOG_YES, LOG_NO = math.log(0.9), math.log(0.1)


# ------------------------------------------------------------------------------------ oracle
# clients
def oracle_verdicts(prompt: Prompt) -> list[bool]:
    return verdicts(prompt.messages[0][1], prompt.messages[-1][1])


def explanation_of(prompt: Prompt) -> str:
    return read_scorer_prompt(prompt.messages[0][1], prompt.messages[-1][1])[0]


def n_examples(prompt: Prompt) -> int:
    return len(read_scorer_prompt(prompt.messages[0][1], prompt.messages[-1][1])[1])


class FakeClient(LLMClient):
    """A client whose answers come from a function of the prompt; counts and records what it is
    asked."""

    supports_logprobs = True

    def __init__(self, cache_dir, reply, name: str = "fake"):
        super().__init__(ClientConfig(kind="fake", model=name), CompletionCache(cache_dir))
        self.name = f"fake:{name}"
        self.reply = reply
        self.asked: list[Prompt] = []

    def _answer(self, prompts, on_answer):
        for i, prompt in enumerate(prompts):
            self._count_call()
            self.asked.append(prompt)
            on_answer(i, self.reply(prompt))


def oracle_list(prompt: Prompt) -> Completion:
    return Completion(
        text="[" + ", ".join("1" if v else "0" for v in oracle_verdicts(prompt)) + "]"
    )


def oracle_with_logprobs(prompt: Prompt) -> Completion:
    """The same list, with per-token top logprobs as an endpoint returns them ("[" is the
    prefill)."""
    said = oracle_verdicts(prompt)
    top: list[dict[str, float]] = []
    for i, v in enumerate(said):
        top.append({"1": LOG_YES, "0": LOG_NO} if v else {"0": LOG_YES, "1": LOG_NO})
        top.append({", " if i < len(said) - 1 else "]": 0.0})
    return Completion(text="[" + ", ".join("1" if v else "0" for v in said) + "]", top_logprobs=top)


def oracle_explainer(prompt: Prompt) -> Completion:
    """Names the most frequent marked token of the explainer prompt's excerpts."""
    user = prompt.messages[-1][1]
    marked = Counter(
        m.strip() for m in re.findall(r"<<(.*?)>>", user.split("\n\nFiring tokens")[0])
    )
    return Completion(text=f"Explanation: the word {marked.most_common(1)[0][0]}")


# ------------------------------------------------------------------------------------ the tiny
# world
@pytest.fixture(scope="module")
def splits(planted_pass):
    return {
        lat: split_examples(planted_pass.record(lat), EX_CFG, SEED)
        for lat in (CAT_LATENT, DOG_LATENT)
    }


@pytest.fixture(scope="module")
def decode(tokenizer):
    return tokenizer.decode


SCORERS = {"detection": Detection(), "fuzzing": Fuzzing()}


def run_scorer(method, splits, explanations, reply, tmp_path, decode, **cfg):
    client = FakeClient(tmp_path, reply)
    scored = SCORERS[method].score(
        [splits[lat] for lat in explanations],
        explanations,
        ScorerConfig(**cfg),
        client,
        decode,
        SEED,
        method,
    )
    return scored, client


def expls(texts: dict[int, str]) -> dict[int, Explanation]:
    return {lat: Explanation(lat, text, "test") for lat, text in texts.items()}


def test_the_oracle_reads_prompts_as_intended(splits, decode):
    """The oracle itself, on one hand-checked batch: cat windows yes, others no."""
    split = splits[CAT_LATENT]
    shown = split.test_activating[:2] + split.test_non_activating[:3]
    batch = [classifier.Shown(ex, ex.is_activating, None) for ex in shown]
    prompt = Detection().prompt("the word cat", batch, decode, ScorerConfig())
    assert prompt.prefill == "["
    assert oracle_verdicts(prompt) == [True, True, False, False, False]


@pytest.mark.parametrize("method", ["detection", "fuzzing"])
def test_true_explanation_scores_one_and_shuffled_scores_chance(method, splits, decode, tmp_path):
    scored, client = run_scorer(method, splits, expls(TRUE), oracle_list, tmp_path, decode)
    for lat in (CAT_LATENT, DOG_LATENT):
        m = scored[lat].metrics
        assert m["balanced_acc"] >= 0.95, (lat, m)
        assert m["f1"] >= 0.95 and m["recall"] >= 0.95 and m["precision"] >= 0.95
        assert m["answered_frac"] == 1.0 and m["parse_failures"] == 0
        # each latent borrowed the other's explanation: chance level
        assert 0.35 <= m["balanced_acc_shuffled"] <= 0.65, (lat, m)
        assert math.isnan(m["auroc"])  # a plain list carries no probabilities
        n_windows = len(splits[lat].test)
        assert scored[lat].detail["batches"] == math.ceil(n_windows / 5)
        assert len(scored[lat].detail["windows"]) == n_windows
        assert all(w["prediction"] == w["label"] for w in scored[lat].detail["windows"])
    if method == "fuzzing":  # every shown window carries marks, the activating ones on their cats
        cat_windows = scored[CAT_LATENT].detail["windows"]
        assert all("<<" in w["text"] for w in cat_windows)
        assert all("<< cat>>" in w["text"] for w in cat_windows if w["label"])
    # real and shuffled batches of both latents, each asked once
    assert (
        client.n_calls
        == len(client.asked)
        == 2 * sum(math.ceil(len(splits[lat].test) / 5) for lat in TRUE)
    )


@pytest.mark.parametrize("method", ["detection", "fuzzing"])
def test_wrong_explanation_scores_chance(method, splits, decode, tmp_path):
    scored, _ = run_scorer(
        method,
        splits,
        expls({CAT_LATENT: "the word dog"}),
        oracle_list,
        tmp_path,
        decode,
        shuffled_control=False,
    )
    m = scored[CAT_LATENT].metrics
    assert 0.35 <= m["balanced_acc"] <= 0.65, m
    assert math.isnan(m["balanced_acc_shuffled"])  # no control asked for


def test_logprobs_give_probabilities_and_auroc(splits, decode, tmp_path):
    scored, _ = run_scorer("detection", splits, expls(TRUE), oracle_with_logprobs, tmp_path, decode)
    for lat in TRUE:
        judged = scored[lat].judgements
        assert all(j.probability is not None for j in judged)
        assert all(j.probability == pytest.approx(0.9 if j.label else 0.1) for j in judged)
        assert scored[lat].metrics["auroc"] == pytest.approx(1.0)
        assert scored[lat].metrics["balanced_acc"] == pytest.approx(1.0)
        assert 0.25 <= scored[lat].metrics["auroc_shuffled"] <= 0.75
        assert all(w["probability"] in (0.9, 0.1) for w in scored[lat].detail["windows"])


def garbage(prompt: Prompt) -> Completion:
    """Prose for some batches, a list of the wrong length for the others."""
    n = n_examples(prompt)
    return Completion(
        text="I think so"
        if len(prompt.messages[-1][1]) % 2
        else "[" + ", ".join(["1"] * (n + 1)) + "]"
    )


@pytest.mark.parametrize("method", ["detection", "fuzzing"])
def test_unparseable_answers_are_failures_never_scores(method, splits, decode, tmp_path):
    scored, _ = run_scorer(method, splits, expls(TRUE), garbage, tmp_path, decode)
    for lat in TRUE:
        m, detail = scored[lat].metrics, scored[lat].detail
        assert m["parse_failures"] == detail["batches"] == math.ceil(len(splits[lat].test) / 5)
        assert m["answered_frac"] == 0.0
        for name in (
            "balanced_acc",
            "precision",
            "recall",
            "f1",
            "auroc",
            "balanced_acc_shuffled",
            "recall_decile1",
            "recall_decile10",
        ):
            assert math.isnan(m[name]), (name, m[name])
        assert all(j.prediction is None for j in scored[lat].judgements)
    answers = {a for lat in TRUE for a in scored[lat].detail["answers"]}
    # both kinds of garbage were given, and shown
    assert answers == {
        "I think so",
        "[1, 1, 1, 1, 1, 1]",
    }


def test_parse_failures_are_counted_per_latent(splits, decode, tmp_path):
    """The scorer garbles every batch about dogs: the dog latent fails, the cat latent is scored."""

    def dog_averse(prompt):
        return (
            Completion(text="no idea") if "dog" in explanation_of(prompt) else oracle_list(prompt)
        )

    scored, _ = run_scorer("detection", splits, expls(TRUE), dog_averse, tmp_path, decode)
    cat, dog = scored[CAT_LATENT].metrics, scored[DOG_LATENT].metrics
    assert cat["parse_failures"] == 0 and cat["balanced_acc"] >= 0.95
    assert math.isnan(cat["balanced_acc_shuffled"])  # scored with the dog explanation: all failed
    assert dog["parse_failures"] == scored[DOG_LATENT].detail["batches"] > 0
    assert math.isnan(dog["balanced_acc"]) and dog["answered_frac"] == 0.0
    assert 0.35 <= dog["balanced_acc_shuffled"] <= 0.65  # its control used the cat explanation


def test_failed_calls_are_failures_and_shown_as_such(splits, decode, tmp_path):
    scored, client = run_scorer(
        "detection",
        splits,
        expls({CAT_LATENT: "the word cat"}),
        lambda p: Completion(text=None, error="HTTP 503"),
        tmp_path,
        decode,
    )
    m = scored[CAT_LATENT].metrics
    assert (
        math.isnan(m["balanced_acc"])
        and m["parse_failures"] == scored[CAT_LATENT].detail["batches"]
    )
    assert set(scored[CAT_LATENT].detail["answers"]) == {"<failed: HTTP 503>"}
    assert len(client.cache) == 0  # failures are not cached: a rerun asks again


# ------------------------------------------------------------------------------------ parse_answer
@pytest.mark.parametrize(
    "text, n, expected",
    [
        ("[1, 0, 1]", 3, [True, False, True]),
        ("[1,0,1]", 3, [True, False, True]),
        ("[ 1 ,0 , 1 ]", 3, [True, False, True]),
        ("[0]", 1, [False]),
        # trailing prose is ignored
        (
            "[1, 0]\nThe first example mentions a cat.",
            2,
            [True, False],
        ),
        ("Sure: [0, 1]", 2, [False, True]),
        ("[[1, 0]]", 2, [True, False]),
    ],
)
def test_parse_answer_reads_lists(text, n, expected):
    preds, probs = parse_answer(Completion(text=text), n)
    assert preds == expected
    assert probs is None


@pytest.mark.parametrize(
    "text, n",
    [
        ("[1, 0]", 3),  # too short
        ("[1, 0, 1, 1]", 3),  # too long
        ("[1, 2, 0]", 3),  # not binary
        ("[yes, no]", 2),
        ("[True, False]", 2),
        ("[1.0, 0.0]", 2),
        ("[1, 0,", 2),  # cut off by max_tokens
        ("[", 2),  # only the prefill
        ("1, 0", 2),  # no brackets
        ("", 2),
        (None, 2),  # the call failed
    ],
)
def test_parse_answer_rejects_everything_else(text, n):
    assert parse_answer(Completion(text=text), n) == (None, None)


def test_parse_answer_probabilities_from_top_logprobs():
    top = [
        {"1": math.log(0.8), "0": math.log(0.2)},
        {",": 0.0},
        {" 0": math.log(0.7), " 1": math.log(0.3)},
        {"]": 0.0},
    ]
    preds, probs = parse_answer(Completion(text="[1, 0]", top_logprobs=top), 2)
    assert preds == [True, False]
    assert probs == pytest.approx([0.8, 0.3])
    # logprobs that do not line up with the list: predictions kept, probabilities dropped
    preds, probs = parse_answer(Completion(text="[1, 0]", top_logprobs=top[:1]), 2)
    assert preds == [True, False] and probs is None


def test_parse_answer_probabilities_ignore_digits_after_the_list():
    """Probabilities are read at the list's digits only: a "1" in prose after the list (a scorer
    explaining itself, "Example 1 ...") neither shifts nor drops them."""
    top = [
        {"1": math.log(0.8), "0": math.log(0.2)},
        {",": 0.0},
        {" 0": math.log(0.7), " 1": math.log(0.3)},
        {"]": 0.0},
        {"\n": 0.0},
        {"Example": 0.0},
        {" 1": -0.1, " 2": -3.0},
        {" fits": 0.0},
    ]
    preds, probs = parse_answer(Completion(text="[1, 0]\nExample 1 fits", top_logprobs=top), 2)
    assert preds == [True, False]
    assert probs == pytest.approx([0.8, 0.3])


# ------------------------------------------------------------------------------------ explainers
def test_token_explanation_names_the_planted_token(splits, decode):
    assert token_explanation(splits[CAT_LATENT].train, decode, 0.3) == 'the token " cat"'
    assert token_explanation(splits[DOG_LATENT].train, decode, 0.3) == 'the token " dog"'
    assert token_explanation([], decode, 0.3) == "nothing recognisable"


def test_explainer_prompt_marks_the_firing_tokens(splits, decode):
    prompt = explainer_prompt(splits[CAT_LATENT].train, decode, 0.3, 48)
    user = prompt.messages[-1][1]
    assert user.count("Excerpt ") == len(splits[CAT_LATENT].train)
    assert {m for m in re.findall(r"<<(.*?)>>", user)} == {" cat"}
    assert "' cat' 10" in user  # the strongest activation of each window, scaled to 10
    assert prompt.prefill == "Explanation:"


def test_explain_with_an_llm_returns_its_parsed_answer(splits, decode, tmp_path):
    client = FakeClient(tmp_path, oracle_explainer, name="explainer")
    out = explain(
        [splits[CAT_LATENT], splits[DOG_LATENT]], ExplainerConfig(explainer="hf"), client, decode
    )
    assert out[CAT_LATENT] == Explanation(CAT_LATENT, "the word cat", "fake:explainer")
    assert out[DOG_LATENT] == Explanation(DOG_LATENT, "the word dog", "fake:explainer")
    assert client.n_calls == 2


@pytest.mark.parametrize(
    "answer, expected",
    [
        ('Explanation: "the word cat"', "the word cat"),
        ("Explanation: the word cat\nExplanation of my reasoning follows.", "the word cat"),
        ("Some thinking first.\nExplanation: the word cat", "the word cat"),
        ("the word cat", "the word cat"),
    ],
)
def test_explain_parses_the_explanation_line(answer, expected, splits, decode, tmp_path):
    client = FakeClient(tmp_path, lambda p: Completion(text=answer))
    out = explain([splits[CAT_LATENT]], ExplainerConfig(explainer="hf"), client, decode)
    assert out[CAT_LATENT].text == expected


@pytest.mark.parametrize(
    "answer",
    [
        Completion(text=""),
        Completion(text="Explanation:"),
        Completion(text="Explanation:  \n"),
        Completion(text=None, error="timeout"),
    ],
)
def test_unparseable_explanation_falls_back_to_tokens(answer, splits, decode, tmp_path):
    client = FakeClient(tmp_path, lambda p: answer)
    out = explain([splits[CAT_LATENT]], ExplainerConfig(explainer="hf"), client, decode)
    assert out[CAT_LATENT] == Explanation(CAT_LATENT, 'the token " cat"', "tokens(fallback)")


def test_tokens_explainer_asks_no_llm(splits, decode, tmp_path):
    client = FakeClient(tmp_path, oracle_explainer)
    out = explain([splits[CAT_LATENT]], ExplainerConfig(explainer="tokens"), client, decode)
    assert out[CAT_LATENT] == Explanation(CAT_LATENT, 'the token " cat"', "tokens")
    assert client.n_calls == 0


def test_token_explanations_of_token_latents_score_like_the_truth(splits, decode, tmp_path):
    """The non-LLM floor names the planted token, which is all there is to say about these
    latents."""
    floor = {
        lat: Explanation(lat, token_explanation(splits[lat].train, decode, 0.3), "tokens")
        for lat in TRUE
    }
    scored = Detection().score(
        list(splits.values()),
        floor,
        ScorerConfig(),
        FakeClient(tmp_path, oracle_list),
        decode,
        SEED,
        "detection",
    )
    assert all(scored[lat].metrics["balanced_acc"] >= 0.95 for lat in TRUE)


# ------------------------------------------------------------------------------------ embedding
# scorer
@pytest.fixture(scope="module")
def embedder():
    from sae_interp_tasks.stages.embedder import load_embedder

    return load_embedder("sentence-transformers/all-MiniLM-L6-v2")


def test_embedding_scores_the_true_explanation_above_an_unrelated_one(splits, embedder, decode):
    from sae_interp_tasks.scorers.embedding import score_embedding

    def auroc(text):
        scored = score_embedding(
            [splits[CAT_LATENT]], expls({CAT_LATENT: text}), embedder, decode, SEED
        )
        return scored[CAT_LATENT]

    true, unrelated = auroc("the word cat"), auroc("financial markets and stock prices")
    assert true.metrics["auroc"] >= 0.9
    assert true.metrics["auroc"] >= unrelated.metrics["auroc"] + 0.3
    assert math.isnan(true.metrics["auroc_shuffled"])  # one latent: nobody to borrow from
    assert len(true.judgements) == len(true.detail["windows"]) == len(splits[CAT_LATENT].test)
    assert all(j.prediction is None and j.probability is not None for j in true.judgements)


def test_embedding_shuffled_control_is_near_chance(splits, embedder, decode):
    from sae_interp_tasks.scorers.embedding import score_embedding

    scored = score_embedding(list(splits.values()), expls(TRUE), embedder, decode, SEED)
    for lat in TRUE:
        assert scored[lat].metrics["auroc"] >= 0.9
        assert scored[lat].metrics["auroc_shuffled"] <= 0.75  # the other animal's word
        assert scored[lat].metrics["auroc"] > scored[lat].metrics["auroc_shuffled"] + 0.2


def test_hard_negatives_are_quiet_windows_nearest_the_top_windows(planted_pass, embedder, decode):
    from sae_interp_tasks.stages.embedder import embed, hard_negatives

    record = planted_pass.record(CAT_LATENT)
    pool = list(record.non_activating)
    chosen = hard_negatives(record.top, pool, embedder, decode, n=10)
    assert len(chosen) == 10
    assert all(any(c is p for p in pool) for c in chosen)  # drawn from the candidates, unchanged
    assert all(not c.is_activating for c in chosen)
    top_vecs = embed(embedder, [decode(ex.tokens.tolist()) for ex in record.top])
    pool_vecs = embed(embedder, [decode(ex.tokens.tolist()) for ex in pool])
    nearness = (pool_vecs @ top_vecs.T).max(axis=1)
    index = [next(i for i, p in enumerate(pool) if p is c) for c in chosen]
    near = nearness[index]
    assert list(near) == sorted(near, reverse=True)  # ordered by similarity, nearest first
    rest = np.delete(nearness, index)
    assert near.min() >= rest.max() - 1e-6  # and no left-out window is nearer
    assert hard_negatives([], pool, embedder, decode, n=3) == pool[:3]


# ------------------------------------------------------------------------------------ the
# pipeline: sharing and caching
def interp_settings(corpus_file, explainer_model, scorer_model, **extra) -> dict:
    return {
        **SMALL_PASS,
        "corpus": str(corpus_file),
        "latents": [CAT_LATENT, DOG_LATENT],
        "n_test_per_decile": 2,
        "explainer": "hf",
        "explainer_model": explainer_model,
        "scorer": "hf",
        "scorer_model": scorer_model,
        **extra,
    }


def payloads(settings: dict, kinds=("detection", "fuzzing"), seed: int = 1234) -> list:
    """The requests two tasks send, as lm-eval would carry them if they had lost their typed
    record: JSON, parsed by the backend's reader."""
    from sae_interp_tasks.harness.request import read_request

    return [
        read_request(
            json.dumps(
                {
                    "kind": kind,
                    "task": f"sae_{kind}",
                    "doc": {"slot": slot},
                    "seed": seed,
                    "settings": settings,
                }
            )
        )
        for kind in kinds
        for slot in range(len(settings["latents"]))
    ]


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    """An empty SAE_INTERP_CACHE of this test's own (activation passes and LLM answers)."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("SAE_INTERP_CACHE", str(cache))
    return cache


@pytest.fixture
def made_clients(monkeypatch):
    """Every client the pipeline makes, in order (the real make_client still makes them)."""
    made: list[LLMClient] = []
    real = clients_mod.make_client

    def spy(cfg, cache_dir=None, kinds=None):
        client = real(cfg, cache_dir, kinds)
        client.asked = []
        answer = client._answer

        def recording(prompts, on_answer):
            client.asked += prompts
            return answer(prompts, on_answer)

        client._answer = recording
        made.append(client)
        return client

    monkeypatch.setattr(clients_mod, "make_client", spy)
    return made


def test_detection_and_fuzzing_share_one_explanation_per_latent(
    planted_sae, corpus_file, fresh_cache, monkeypatch
):
    from sae_interp_tasks.harness.backend import SAEBackend
    from sae_interp_tasks.harness.serve import serve_latents

    fakes: dict[str, FakeClient] = {}

    def fake_make_client(cfg, cache_dir=None, kinds=None):
        reply = oracle_explainer if cfg.model == "oracle-explainer" else oracle_list
        fakes[cfg.model] = FakeClient(fresh_cache / "llm", reply, name=cfg.model)
        return fakes[cfg.model]

    monkeypatch.setattr(clients_mod, "make_client", fake_make_client)
    backend = SAEBackend(path=str(planted_sae.path), device="cpu")
    settings = interp_settings(corpus_file, "oracle-explainer", "oracle-scorer")
    out = serve_latents(backend, payloads(settings))

    explainer = fakes["oracle-explainer"]
    assert explainer.n_calls == 2  # one explanation per latent, for both tasks
    assert Counter(oracle_explainer(p).text for p in explainer.asked) == {
        "Explanation: the word cat": 1,
        "Explanation: the word dog": 1,
    }
    assert set(fakes) == {"oracle-explainer", "oracle-scorer"}  # one client per config
    by = {(p.kind, p.slot): r.to_json() for p, r in zip(payloads(settings), out, strict=True)}
    for slot, lat in enumerate(settings["latents"]):
        det, fuz = by[("detection", slot)], by[("fuzzing", slot)]
        assert det["latent"] == fuz["latent"] == lat
        assert det["explanation"] == fuz["explanation"] == TRUE[lat]
        assert det["explainer"] == "fake:oracle-explainer"
        assert det["train_windows"] == fuz["train_windows"]
        assert det["metrics"]["balanced_acc"] >= 0.95 and fuz["metrics"]["balanced_acc"] >= 0.95
        # fuzzing shows marks, detection does not
        assert det["scorer"]["windows"] != fuz["scorer"]["windows"]
        # the frequency-weighted F1's statistics: F1 x the latent's firing count in the pass
        firing = det["stats"]["firing_scored"]
        assert firing >= 1 and det["stats"]["f1_x_firing"] == det["metrics"]["f1"] * firing
    # delphi's frequency-weighted F1: sum of F1 x firing over the sum of firing
    from sae_interp_tasks.harness.classifier_run import FREQ_WEIGHTED_F1

    dets = [
        r.to_json() for p, r in zip(payloads(settings), out, strict=True) if p.kind == "detection"
    ]
    weights = [d["stats"]["firing_scored"] for d in dets]
    expected = sum(d["metrics"]["f1"] * w for d, w in zip(dets, weights, strict=True)) / sum(
        weights
    )
    assert FREQ_WEIGHTED_F1([d["stats"] for d in dets] + [None]) == pytest.approx(expected)

    # answering the same docs again on this backend asks nobody anything
    calls = {name: c.n_calls for name, c in fakes.items()}
    again = serve_latents(backend, payloads(settings))
    assert {name: c.n_calls for name, c in fakes.items()} == calls
    assert [str(r) for r in again] == [str(r) for r in out]


def test_a_rerun_on_the_same_cache_calls_no_model(
    planted_sae, tiny_model_dir, corpus_file, fresh_cache, made_clients
):
    """The real in-process hf client on the tiny model: the second backend answers from disk."""
    from sae_interp_tasks.clients.hf_client import HFClient
    from sae_interp_tasks.harness.backend import SAEBackend
    from sae_interp_tasks.harness.serve import serve_latents

    settings = interp_settings(
        corpus_file,
        str(tiny_model_dir),
        str(tiny_model_dir),
        scorer_max_tokens=8,
        explainer_max_tokens=8,
        n_test_per_decile=1,
        n_test_non_activating=5,
        shuffled_control=False,
    )  # few prompts: the tiny model's answers are noise anyway
    first = serve_latents(SAEBackend(path=str(planted_sae.path), device="cpu"), payloads(settings))
    # explainer and scorer have the same client settings here, so the run makes one client for both
    (client,) = made_clients
    assert isinstance(client, HFClient)
    explained = [p for p in client.asked if p.prefill == "Explanation:"]
    assert len(explained) == 2  # one explanation per latent, shared by detection and fuzzing
    assert client.n_calls == len(client.asked) > len(explained)
    n_answers = len(client.cache)
    assert n_answers == client.n_calls  # every answer is on disk

    made_clients.clear()
    second = serve_latents(SAEBackend(path=str(planted_sae.path), device="cpu"), payloads(settings))
    (client,) = made_clients
    assert client.n_calls == 0 and client.asked == []
    assert client._model is None  # the cache answered everything: the model was never loaded
    assert len(client.cache) == n_answers
    assert [without_usage(r) for r in second] == [without_usage(r) for r in first]
    # what each run paid: the first asked the model, the second the cache, for the same requests
    paid = [
        sum(json.loads(str(r))["metrics"][m] for r in run)
        for run in (first, second)
        for m in ("llm_calls", "llm_cached_calls")
    ]
    assert paid[1] == 0 and paid[2] == 0 and paid[0] == paid[3] > 0


def without_usage(response) -> dict:
    """A response's JSON without the LLM usage it reports (which differs between a paid run and a
    cached one)."""
    from sae_interp_tasks.records import USAGE_METRICS

    data = json.loads(str(response))
    data["metrics"] = {k: v for k, v in data["metrics"].items() if k not in USAGE_METRICS}
    return data


def test_explanation_on_the_line_after_its_lead_is_kept():
    """Regression: SmolLM2 answers 'Explanation:\\nThe feature ...' (lead alone on its line)."""
    from sae_interp_tasks.stages.explainers import parse_explanation

    assert (
        parse_explanation("Explanation:\nThe feature detects method names.\n\nThe feature also")
        == "The feature detects method names."
    )
    assert parse_explanation("Explanation: the word cat") == "the word cat"
    assert parse_explanation("Explanation:") is None
    # a lead-in line continues with its list; markdown and the prompt's <<marks>> are dropped
    assert (
        parse_explanation(
            "Explanation:\nThe feature detects the following:\n\n1. **LATIN CAP<<IT>>AL I**\n"
            "2. **LATIN CAPITAL E**"
        )
        == "The feature detects the following: LATIN CAPITAL I LATIN CAPITAL E"
    )
    assert (
        parse_explanation("Explanation: the `__x<<or>>__` decorator") == "the `__xor__` decorator"
    )
    assert (
        len(
            parse_explanation(
                "Explanation: items:\n" + "\n".join(f"- item {i}" for i in range(40))
            ).split()
        )
        == 30
    )


def test_a_latent_without_an_f1_weighs_nothing_in_the_frequency_weighted_f1():
    from sae_interp_tasks.harness.classifier_run import FREQ_WEIGHTED_F1, with_firing
    from sae_interp_tasks.records import ScoredLatent

    answered = with_firing(ScoredLatent(1, "", [], metrics={"f1": 0.5}), n_firing=30)
    frequent = with_firing(ScoredLatent(2, "", [], metrics={"f1": 1.0}), n_firing=90)
    silent = with_firing(ScoredLatent(3, "", [], metrics={"f1": float("nan")}), n_firing=1000)
    assert silent.stats == {"f1_x_firing": 0.0, "firing_scored": 0.0}
    got = FREQ_WEIGHTED_F1([answered.stats, frequent.stats, silent.stats])
    assert got == pytest.approx((0.5 * 30 + 1.0 * 90) / 120)
