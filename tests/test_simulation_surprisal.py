"""sae_simulation and sae_surprisal: the scorers' arithmetic against OpenAI's reference
implementation, the reading of prompt log-probabilities in process and over a completions endpoint,
the JSON variant for chat APIs, and bad input (no log-probabilities, unparseable answers, empty
explanations)."""

from __future__ import annotations

import json
import math
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from helpers import JsonEndpoint
from sae_interp_tasks.clients import ClientConfig, Completion, LLMClient, make_client
from sae_interp_tasks.errors import SaeInterpError
from sae_interp_tasks.records import Example, ExampleSplit, Explanation
from sae_interp_tasks.scorers import simulation, surprisal
from sae_interp_tasks.scorers.simulation import SimulationConfig, Simulator

# scripts/setup.sh puts it beside the venv
PEER = Path(sys.prefix) / "peers" / "automated-interpretability"


def openai_reference():
    """neuron_explainer (OpenAI's automated-interpretability, installed by scripts/setup.sh beside
    the venv): its simulator's expected values and its scorer's correlation. Its blob-storage and
    tokenizer dependencies are not needed for that arithmetic and are stood in for."""
    assert (PEER / "neuron_explainer").is_dir(), f"{PEER} is missing: run scripts/setup.sh"
    stubbed = []
    for name in ("blobfile", "boostedblob", "orjson", "tiktoken"):
        try:
            __import__(name)
        except ImportError:
            stub = types.ModuleType(name)
            # decorators leave functions be
            stub.__getattr__ = lambda attr: lambda fn=None, *args, **kwargs: fn
            sys.modules[name] = stub
            stubbed.append(name)
    sys.path.insert(0, str(PEER))
    try:
        from neuron_explainer.explanations import explanations, scoring, simulator
    finally:
        sys.path.remove(str(PEER))
        for name in stubbed:  # only neuron_explainer holds them: other libraries must not find them
            del sys.modules[name]
    return simulator, scoring, explanations


def test_expected_values_and_the_score_equal_openais_reference():
    """The same true activations and the same per-slot log-probabilities give the same expected
    values and the same ev_correlation_score (over all windows at once) as neuron_explainer."""
    sim_ref, scoring_ref, expl_ref = openai_reference()
    rng = np.random.default_rng(0)
    windows, ours_true, ours_pred = [], [], []
    for _ in range(6):
        n = int(rng.integers(5, 12))
        true = np.clip(rng.normal(0, 3, n), 0, None)
        slots = [
            {
                str(v): float(lp)
                for v, lp in zip(range(11), rng.normal(-3, 2, 11), strict=True)
                if rng.random() > 0.2 or v == 0
            }
            for _ in range(n)
        ]
        theirs = [float(sim_ref.compute_predicted_activation_stats_for_token(s)[1]) for s in slots]
        mine = [simulation.expected_values(s, simulation.VALUES) for s in slots]
        assert mine == pytest.approx(theirs, rel=1e-12)
        seq = expl_ref.SequenceSimulation(
            tokens=["t"] * n,
            expected_activations=theirs,
            activation_scale=expl_ref.ActivationScale.SIMULATED_NORMALIZED_ACTIVATIONS,
            distribution_values=[],
            distribution_probabilities=[],
        )
        windows.append(
            expl_ref.ScoredSequenceSimulation(
                simulation=seq, true_activations=true.tolist(), ev_correlation_score=0.0
            )
        )
        ours_true.append(true)
        ours_pred.append(np.array(mine))
    reference = scoring_ref.aggregate_scored_sequence_simulations(windows).ev_correlation_score
    assert simulation.correlation(
        np.concatenate(ours_true), np.concatenate(ours_pred)
    ) == pytest.approx(reference, abs=1e-12)


def test_a_slot_with_no_value_listed_is_unreadable_not_zero():
    assert math.isnan(simulation.expected_values({"unknown": -0.1}, simulation.VALUES))
    assert simulation.expected_values({"3": -0.1}, simulation.VALUES) == 3.0


# ------------------------------------------------------------------------------------ reading
# prompts
def model_logprobs_with_top(tiny_model_dir, k: int = 5):
    """Echoed prompt logprobs from the tiny model itself, listing at every position the top-k
    alternatives and the digits (a trained simulator puts the digits on top at its slots; a random
    tiny model does not)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)).eval()

    def logprob_of(prompt: str):
        enc = tok(prompt, add_special_tokens=True, return_offsets_mapping=True)
        with torch.no_grad():
            logp = F.log_softmax(model(torch.tensor([enc.input_ids])).logits[0].float(), -1)
        values, top = [None], [None]
        for i in range(1, len(enc.input_ids)):
            values.append(float(logp[i - 1, enc.input_ids[i]]))
            lp, ids = logp[i - 1].topk(k)
            listed = {
                tok.decode([j]): float(v) for v, j in zip(lp.tolist(), ids.tolist(), strict=True)
            }
            listed.update(
                {d: float(logp[i - 1, tok.convert_tokens_to_ids(d)]) for d in "0123456789"}
            )
            top.append(listed)
        return (
            [tok.decode([t]) for t in enc.input_ids],
            values,
            [s for s, _ in enc.offset_mapping],
            top,
        )

    return logprob_of


class EchoServer(JsonEndpoint):
    """/v1/completions with echo: prompt logprobs and top alternatives, or none
    (`with_logprobs=False`)."""

    def __init__(self, logprob_of, with_logprobs: bool = True):
        def respond(path: str, body: dict):
            tokens, values, offsets, top = logprob_of(body["prompt"])
            logprobs = (
                {
                    "tokens": tokens,
                    "token_logprobs": values,
                    "text_offset": offsets,
                    "top_logprobs": top if body.get("logprobs", 0) > 1 else None,
                }
                if with_logprobs
                else None
            )
            return 200, {
                "id": "c",
                "object": "text_completion",
                "created": 0,
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "text": body["prompt"] + "!",
                        "finish_reason": "length",
                        "logprobs": logprobs,
                    }
                ],
                "usage": {
                    "prompt_tokens": len(tokens),
                    "completion_tokens": 1,
                    "total_tokens": len(tokens) + 1,
                },
            }

        super().__init__(respond)


def example(tokens: list[int], acts: list[float], decile: int) -> Example:
    return Example(
        np.array(tokens, dtype=np.int64), np.array(acts, dtype=np.float32), decile=decile
    )


def tiny_split(tokenizer) -> ExampleSplit:
    cat, dog = (
        tokenizer.encode(" cat", add_special_tokens=False)[0],
        tokenizer.encode(" dog", add_special_tokens=False)[0],
    )
    on = [
        example([dog, cat, dog, dog], [0, 2.0, 0, 0], 10),
        example([cat, dog, cat, dog], [2.0, 0, 2.0, 0], 9),
    ]
    off = [
        example([dog, dog, dog, dog], [0, 0, 0, 0], 0),
        example([dog, cat + 1, dog, dog], [0, 0, 0, 0], 0),
    ]
    return ExampleSplit(latent=0, train=[], test_activating=on, test_non_activating=off)


def test_the_simulator_reads_the_same_values_in_process_and_over_an_echo_endpoint(
    tiny_model_dir, tmp_path, tokenizer
):
    server = EchoServer(model_logprobs_with_top(tiny_model_dir))
    try:
        split = tiny_split(tokenizer)
        results = {}
        local = make_client(ClientConfig(kind="hf", model=str(tiny_model_dir)), tmp_path / "hf")
        choices = local.single_token_choices(simulation.VALUES)
        # this tokenizer spells 10 as two tokens: a 0..9 scale
        assert choices == tuple("0123456789")
        for kind, base_url in (("hf", None), ("openai", server.url)):
            client = (
                local
                if kind == "hf"
                else make_client(
                    ClientConfig(kind=kind, model="tiny", base_url=base_url), tmp_path / kind
                )
            )
            sim = Simulator(client, SimulationConfig(), tokenizer.decode, choices)
            results[kind] = sim.simulate('the token " cat"', split.test, 2.0, "test")
            if kind == "openai":
                assert client.usage.prompt_tokens > 0 and client.usage.calls == len(split.test)
        for mine, theirs in zip(results["hf"], results["openai"], strict=True):
            assert mine.predicted is not None and theirs.predicted is not None
            # the endpoint tokenizes prefix and text at once, the local client apart: equal to a few
            # thousandths
            assert theirs.predicted == pytest.approx(mine.predicted, abs=5e-3)
            assert list(mine.true) == list(theirs.true)
        # the latent's strongest token at the scale's top
        assert max(max(s.true) for s in results["hf"]) == 9.0
        asked = [body for body in server.asked if body.get("echo")]
        assert asked and all(body["logprobs"] == 10 and body["max_tokens"] == 1 for body in asked)
    finally:
        server.close()


def test_an_endpoint_without_prompt_logprobs_is_one_clear_error_for_both_scorers(
    tmp_path, tokenizer
):
    server = EchoServer(lambda prompt: ([], [], [], []), with_logprobs=False)
    try:
        client = make_client(
            ClientConfig(kind="openai", model="m", base_url=server.url, max_retries=0), tmp_path
        )
        sim = Simulator(client, SimulationConfig(simulation_mode="logprobs"), tokenizer.decode)
        with pytest.raises(
            SaeInterpError, match="returns no prompt logprobs.*simulation_mode: json"
        ):
            sim.simulate("anything", tiny_split(tokenizer).test, 1.0, "test")
        # auto: writes JSON instead, read or not
        auto = Simulator(client, SimulationConfig(), tokenizer.decode)
        done = auto.simulate("anything", tiny_split(tokenizer).test, 1.0, "test")
        # this server answers no chat
        assert auto.mode == "json" and all(s.predicted is None for s in done)
        reader = surprisal.SurprisalReader(client, surprisal.SurprisalConfig(), tokenizer.decode)
        with pytest.raises(SaeInterpError, match="returns no prompt logprobs.*vLLM"):
            reader.statistics("anything", ["some text"], "test")
    finally:
        server.close()


class WritingClient(LLMClient):
    """A chat model for json mode: writes `answer(prompt)`."""

    supports_logprobs = False

    def __init__(self, tmp_path: Path, answer):
        from sae_interp_tasks.clients.cache import CompletionCache

        super().__init__(ClientConfig(kind="openai", model="writer"), CompletionCache(tmp_path))
        self.name, self.answer = "fake:writer", answer

    def _answer(self, prompts, on_answer) -> None:
        for i, p in enumerate(prompts):
            on_answer(i, Completion(text=self.answer(p)))


def test_json_mode_scores_written_values_and_counts_unreadable_answers(tmp_path, tokenizer):
    split = tiny_split(tokenizer)

    def perfect(prompt):  # 10 for every " cat" row of the table, else 0
        rows = prompt.messages[-1][1].split("\nTokens:\n", 1)[1].rstrip("\n").split("\n")
        return json.dumps([10 if row.startswith(" cat\t") else 0 for row in rows])

    cfg = SimulationConfig(simulation_mode="json")
    good = simulation.score_simulation(
        [split],
        {0: Explanation(0, 'the token " cat"', "t")},
        Simulator(WritingClient(tmp_path / "a", perfect), cfg, tokenizer.decode),
        0,
        shuffled_control=False,
    )[0]
    assert good.metrics["correlation"] == pytest.approx(1.0) and good.metrics["parse_failures"] == 0
    prose = simulation.score_simulation(
        [split],
        {0: Explanation(0, 'the token " cat"', "t")},
        Simulator(WritingClient(tmp_path / "b", lambda p: "I think [1, 2]"), cfg, tokenizer.decode),
        0,
        shuffled_control=False,
    )[0]
    assert (
        prose.metrics["parse_failures"] == len(split.test) and prose.metrics["answered_frac"] == 0.0
    )
    assert math.isnan(prose.metrics["correlation"])  # nothing read: no score, never 0


def test_window_statistics_read_alike_for_every_window():
    assert surprisal.window_statistic([-1.0, -2.0], [-3.0, -2.0], "mean") == pytest.approx(1.0)
    assert surprisal.window_statistic([-1.0, -2.0], [-3.0, -2.0], "max") == pytest.approx(2.0)
    # misaligned: unreadable
    assert math.isnan(surprisal.window_statistic([-1.0], [-1.0, -2.0], "mean"))
    assert math.isnan(surprisal.window_statistic([], [], "mean"))


def test_the_in_process_reader_gives_each_tokens_logprob_after_the_prefix(tiny_model_dir, tmp_path):
    """read_texts against a direct forward of prefix + text: every token's log-probability."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)).eval()
    client = make_client(ClientConfig(kind="hf", model=str(tiny_model_dir)), tmp_path)
    prefix, texts = "Description: cats\nSentences:\n", [" the cat sat", " a dog ran far away", ""]
    readings = client.read_texts(prefix, texts)
    for text, reading in zip(texts, readings, strict=True):
        p, t = tok(prefix).input_ids, tok(text, add_special_tokens=False).input_ids
        with torch.no_grad():
            logp = F.log_softmax(model(torch.tensor([p + t])).logits[0].float(), -1)
        direct = [float(logp[len(p) + j - 1, t[j]]) for j in range(len(t))]
        assert reading.logprobs == pytest.approx(direct, abs=1e-4)
    calls = client.n_calls
    assert [r.logprobs for r in client.read_texts(prefix, texts)] == [r.logprobs for r in readings]
    assert client.n_calls == calls and client.usage.cached_calls == len(texts)  # the cache answered
