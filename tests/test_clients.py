"""The explainer/scorer LLM clients: the on-disk cache, the in-process `hf` client on the bundled
model, and the `openai` client against a real OpenAI-compatible server (`transformers serve`)
behind a fault-injecting proxy. Everything runs on 127.0.0.1, offline."""

import asyncio
import hashlib
import logging
import math
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from sae_interp_tasks.clients import ClientConfig, Completion, LLMClient, Prompt, make_client
from sae_interp_tasks.clients.cache import CompletionCache
from sae_interp_tasks.clients.openai_client import OpenAIClient
from sae_interp_tasks.errors import SaeInterpError

sys.path.insert(0, str(Path(__file__).parent))
import servers

KEY_ENV = "SAE_TEST_KEY"
PLANTED_KEY = "sk-planted-SECRET-123"
# client timeout in the proxy tests: a hung request costs this much, a real answer takes ~3 s
HANG_TIMEOUT = 30.0


def ask(text: str, **kwargs) -> Prompt:
    return Prompt(messages=(("user", text),), **kwargs)


# ------------------------------------------------------------------ config and the shared cache
# logic


def test_unknown_kind_names_the_valid_kinds(tmp_path):
    with pytest.raises(SaeInterpError, match=r"'vllm'.*hf, openai"):
        make_client(ClientConfig(kind="vllm"), tmp_path)


def test_bad_settings_are_user_errors(tmp_path, monkeypatch):
    with pytest.raises(SaeInterpError, match="max_concurrency"):
        make_client(
            ClientConfig(kind="openai", max_concurrency=0, base_url="http://127.0.0.1:9/v1"),
            tmp_path,
        )
    monkeypatch.delenv("SAE_TEST_ABSENT_KEY", raising=False)
    with pytest.raises(
        SaeInterpError, match="SAE_TEST_ABSENT_KEY"
    ):  # the OpenAI API itself needs a key
        make_client(
            ClientConfig(kind="openai", model="gpt-4o-mini", api_key_env="SAE_TEST_ABSENT_KEY"),
            tmp_path,
        )


class ScriptedClient(LLMClient):
    """Answers `echo:<text>`; fails prompts containing 'fail'; raises KeyboardInterrupt at
    `interrupt_at`."""

    supports_logprobs = False

    def __init__(self, cache_dir: Path, interrupt_at: int | None = None):
        super().__init__(ClientConfig(kind="scripted"), CompletionCache(cache_dir))
        self.name = "scripted:echo"
        self.interrupt_at = interrupt_at
        self.asked: list[str] = []

    def _answer(self, prompts, on_answer):
        for i, prompt in enumerate(prompts):
            if i == self.interrupt_at:
                raise KeyboardInterrupt
            text = prompt.messages[-1][1]
            self._count_call()
            self.asked.append(text)
            on_answer(
                i,
                Completion(text=None, error="scripted failure")
                if "fail" in text
                else Completion(text=f"echo:{text}"),
            )


def test_cache_answers_reruns_keeps_order_and_retries_only_failures(tmp_path):
    prompts = [ask("a"), ask("fail b"), ask("a"), ask("c")]
    first = ScriptedClient(tmp_path).generate(prompts)
    assert [c.text for c in first] == ["echo:a", None, "echo:a", "echo:c"]
    assert first[1].error == "scripted failure"
    assert ScriptedClient(tmp_path).generate([]) == []

    again = ScriptedClient(tmp_path)
    second = again.generate(prompts)
    assert again.asked == ["fail b"]  # identical prompts asked once, successes from the cache
    assert [c.cached for c in second] == [True, False, True, True]
    assert [c.text for c in second] == [c.text for c in first]


def test_cache_key_covers_sampling_parameters(tmp_path):
    client = ScriptedClient(tmp_path)
    variants = [
        ask("x"),
        ask("x", max_tokens=5),
        ask("x", temperature=0.7),
        ask("x", logprobs=True),
        ask("x", logprobs=True, top_logprobs=3),
        Prompt(messages=(("system", "s"), ("user", "x"))),
    ]
    client.generate(variants)
    assert client.n_calls == len(variants)  # each variant is its own cache entry
    # top_logprobs means nothing without logprobs, so it does not split the cache
    assert client.generate([ask("x", top_logprobs=3)])[0].cached


def test_interrupted_run_keeps_what_was_answered(tmp_path):
    prompts = [ask("one"), ask("two"), ask("three")]
    with pytest.raises(KeyboardInterrupt):
        ScriptedClient(tmp_path, interrupt_at=2).generate(prompts)
    resumed = ScriptedClient(tmp_path)
    assert [c.text for c in resumed.generate(prompts)] == ["echo:one", "echo:two", "echo:three"]
    assert resumed.asked == ["three"]


def test_openai_logprobs_are_read_per_token(tmp_path):
    from openai.types.chat import ChatCompletion

    def top(token, lp):
        return {"token": token, "logprob": lp, "bytes": None}

    body = {
        "id": "x",
        "object": "chat.completion",
        "created": 0,
        "model": "m",
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {"role": "assistant", "content": "Yes."},
                "logprobs": {
                    "content": [
                        {**top("Yes", -0.1), "top_logprobs": [top("Yes", -0.1), top("No", -2.4)]},
                        {**top(".", -0.01), "top_logprobs": [top(".", -0.01), top("!", -4.6)]},
                    ]
                },
            }
        ],
    }
    client = OpenAIClient(
        ClientConfig(kind="openai", model="m", base_url="http://127.0.0.1:9/v1"),
        CompletionCache(tmp_path),
    )
    parsed = client._parse(ChatCompletion.model_validate(body), want_logprobs=True)
    assert parsed.text == "Yes."
    assert parsed.top_logprobs == [{"Yes": -0.1, "No": -2.4}, {".": -0.01, "!": -4.6}]
    assert client.supports_logprobs

    del body["choices"][0]["logprobs"]
    assert (
        client._parse(ChatCompletion.model_validate(body), want_logprobs=True).top_logprobs is None
    )
    assert not client.supports_logprobs  # the endpoint showed it gives none


# ------------------------------------------------------------------ hf: the bundled model
# in-process


@pytest.mark.slow
def test_hf_client_answers_with_logprobs_and_reruns_from_cache(tmp_path):
    cfg = ClientConfig(kind="hf", batch_size=4)
    prompts = [
        ask("What is the capital of France?", max_tokens=8, logprobs=True, top_logprobs=5),
        ask("Say hello.", max_tokens=4),
        ask("Name a fruit.", max_tokens=4, logprobs=True, top_logprobs=5),
    ]
    client = make_client(cfg, tmp_path)
    assert client.name == "hf:HuggingFaceTB/SmolLM2-135M-Instruct" and client.supports_logprobs
    first = client.generate(prompts, desc="hf test")
    assert client.n_calls == 3
    assert all(c.text and c.text.strip() and c.error is None for c in first)
    assert first[1].top_logprobs is None
    for completion, prompt in ((first[0], prompts[0]), (first[2], prompts[2])):
        assert 1 <= len(completion.top_logprobs) <= prompt.max_tokens
        for alternatives in completion.top_logprobs:
            assert 1 <= len(alternatives) <= 5
            assert all(lp <= 0 for lp in alternatives.values())
            assert 0.2 < sum(math.exp(lp) for lp in alternatives.values()) <= 1.0 + 1e-4
    # greedy: the first token's best alternative begins the answer
    best_first = max(first[0].top_logprobs[0], key=first[0].top_logprobs[0].get)
    assert first[0].text.startswith(best_first.strip()) or first[0].text.startswith(best_first)

    fresh = make_client(cfg, tmp_path)
    second = fresh.generate(prompts)
    assert fresh.n_calls == 0 and fresh._model is None  # nothing asked, the model never loaded
    assert [c.text for c in second] == [c.text for c in first]
    assert [c.top_logprobs for c in second] == [c.top_logprobs for c in first]
    assert all(c.cached for c in second)


def test_hf_client_constrained_choice_list_always_parses_and_reads_p1_per_digit(
    tmp_path, tiny_model_dir
):
    """A random-weight model answers gibberish when free; constrained, every answer is "[d, d,
    ...]" and each P(1) equals the softmax over the 0/1 logits at that digit, computed here by a
    plain forward pass (prompts of different lengths share a left-padded batch)."""
    import re

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sae_interp_tasks.scorers.classifier import parse_answer

    cfg = ClientConfig(kind="hf", model=str(tiny_model_dir), batch_size=4)
    prompts = [
        ask(text, max_tokens=24, logprobs=True, prefill="[", choice_list=n)
        for text, n in (
            ("Is it a cat?", 1),
            ("Label these three examples, and explain at length.", 3),
            ("Five examples follow.", 5),
            ("Five more examples follow here, a longer prompt.", 5),
        )
    ]
    client = make_client(cfg, tmp_path)
    answers = client.generate(prompts)
    assert client.n_calls == 4
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    zero, one = tokenizer.convert_tokens_to_ids(["0", "1"])
    for prompt, answer in zip(prompts, answers, strict=True):
        n = prompt.choice_list
        assert re.fullmatch(rf"\[[01](, [01]){{{n - 1}}}\]", answer.text), answer.text
        digits = [c == "1" for c in answer.text if c in "01"]
        assert len(answer.choice_probs) == n and all(0 < p < 1 for p in answer.choice_probs)
        # greedy: the likelier digit is written
        assert digits == [p > 0.5 for p in answer.choice_probs]
        preds, probs = parse_answer(answer, n)
        assert preds == digits and probs == answer.choice_probs
        assert parse_answer(answer, n, use_probs=False) == (digits, None)
        context = client._chat_text(prompt)  # ends with the prefill "["
        for k, p1 in enumerate(answer.choice_probs):  # digit k follows k times "d, " (3 characters)
            ids = tokenizer(
                context + answer.text[1 : 1 + 3 * k], return_tensors="pt", add_special_tokens=False
            )
            with torch.no_grad():
                logits = model(**ids).logits[0, -1, [zero, one]]
            assert p1 == pytest.approx(float(torch.softmax(logits, -1)[1]), abs=2e-4), k

    fresh = make_client(cfg, tmp_path)
    again = fresh.generate(prompts)
    assert fresh.n_calls == 0 and [a.choice_probs for a in again] == [
        a.choice_probs for a in answers
    ]
    # the constraint is part of the cache key: the same messages unconstrained are asked anew
    free = fresh.generate([replace(prompts[1], choice_list=0)])
    assert fresh.n_calls == 1 and free[0].choice_probs is None


def test_hf_client_constrained_single_choice_names_one_number_with_its_distribution(
    tmp_path, tiny_model_dir
):
    """choice_one=n: the answer is one digit from 1 to n, the likeliest of them, and choice_probs
    are the softmax over those n digits' logits after the prompt (checked by a plain forward); the
    constraint is part of the cache key."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cfg = ClientConfig(kind="hf", model=str(tiny_model_dir), batch_size=4)
    prompts = [
        ask(text, max_tokens=4, choice_one=n)
        for text, n in (("Which of three?", 3), ("Pick one of five examples, please.", 5))
    ]
    client = make_client(cfg, tmp_path)
    answers = client.generate(prompts)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    for prompt, answer in zip(prompts, answers, strict=True):
        n = prompt.choice_one
        assert answer.text in [str(k) for k in range(1, n + 1)], answer.text
        assert len(answer.choice_probs) == n and sum(answer.choice_probs) == pytest.approx(1.0)
        assert int(answer.text) == 1 + max(range(n), key=lambda k: answer.choice_probs[k])
        ids = tokenizer(client._chat_text(prompt), return_tensors="pt", add_special_tokens=False)
        digits = tokenizer.convert_tokens_to_ids([str(k) for k in range(1, n + 1)])
        with torch.no_grad():
            logits = model(**ids).logits[0, -1, digits]
        expected = torch.softmax(logits, -1).tolist()
        assert answer.choice_probs == pytest.approx(expected, abs=2e-4)
    free = make_client(cfg, tmp_path).generate([replace(prompts[0], choice_one=0)])
    assert free[0].choice_probs is None


# ------------------------------------------------------------------ openai: a real server behind a
# fault proxy


@pytest.fixture(scope="module")
def served_model(tmp_path_factory):
    from sae_interp_tasks.bundled import bundled_hf_dir

    model_dir = bundled_hf_dir()
    work = tmp_path_factory.mktemp("servers")
    with servers.transformers_serve(model_dir, work) as server:
        yield model_dir, server


@pytest.fixture(scope="module")
def proxy(served_model, tmp_path_factory):
    with servers.fault_proxy(served_model[1].url, tmp_path_factory.mktemp("proxy")) as server:
        yield server


@pytest.fixture
def fast_backoff(monkeypatch):
    monkeypatch.setattr(OpenAIClient, "backoff_base", 0.01)
    monkeypatch.setattr(OpenAIClient, "backoff_cap", 0.05)


def plan(proxy, **body) -> None:
    servers.post_json(proxy.url + "/_proxy/plan", body)


def stats(proxy) -> dict:
    return servers.get_json(proxy.url + "/_proxy/stats")


def openai_cfg(served_model, proxy, **overrides) -> ClientConfig:
    cfg = ClientConfig(
        kind="openai",
        model=str(served_model[0]),
        base_url=proxy.url + "/v1",
        api_key_env=KEY_ENV,
        max_concurrency=2,
        timeout=HANG_TIMEOUT,
    )
    return replace(cfg, **overrides)


FAULTS_RUN1 = {1: "500", 2: "hang", 3: "429", 5: "empty_choices", 7: "non_json", 9: "bad_json"}
# a hang costs HANG_TIMEOUT seconds: once (in the first run) is enough
FAULTS_RUN2 = {0: "500", 1: "429", 2: "empty_choices", 3: "non_json", 4: "bad_json"}


@pytest.mark.slow
def test_openai_client_survives_faults_retries_and_caches(
    served_model, proxy, tmp_path, monkeypatch, caplog, fast_backoff
):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv(KEY_ENV, PLANTED_KEY)
    prompts = [ask(f"Name a color. ({i})", max_tokens=4) for i in range(12)]
    cache_dir = tmp_path / "llm"

    # no retries: every injected fault comes back as a failed Completion, nothing raises
    plan(proxy, faults=FAULTS_RUN1, hang_s=HANG_TIMEOUT + 30)
    client = make_client(openai_cfg(served_model, proxy, max_retries=0), cache_dir)
    first = client.generate(prompts, desc="faulty run")
    failed = [c for c in first if c.text is None]
    assert len(failed) == len(FAULTS_RUN1)
    assert all(c.text for c in first if c not in failed)
    reasons = sorted(c.error.split(":")[0].split(" ")[0] for c in failed)
    assert reasons == sorted(
        [
            "InternalServerError",
            "APITimeoutError",
            "RateLimitError",
            "MalformedResponse",
            "MalformedResponse",
            "MalformedResponse",
        ]
    )
    assert client.n_calls == 12 and client.n_retries == 0
    assert stats(proxy)["count"] == 12

    # with retries: only the failures are asked again; each injected fault costs one retry
    plan(proxy, faults=FAULTS_RUN2, hang_s=HANG_TIMEOUT + 30)
    client = make_client(openai_cfg(served_model, proxy, max_retries=5), cache_dir)
    second = client.generate(prompts, desc="retrying run")
    assert all(c.text for c in second), [c.error for c in second]
    assert [c.cached for c in second] == [c.text is not None for c in first]
    assert [b.text for a, b in zip(first, second, strict=True) if a.text] == [
        a.text for a in first if a.text
    ]
    assert client.n_retries == len(FAULTS_RUN2)
    assert client.n_calls == len(failed) + client.n_retries == stats(proxy)["count"]

    # a rerun pays nothing
    client = make_client(openai_cfg(served_model, proxy), cache_dir)
    third = client.generate(prompts)
    assert client.n_calls == 0 and all(c.cached for c in third)
    assert [c.text for c in third] == [c.text for c in second]

    # the planted key (sent with every request: see the next test) is nowhere else
    assert PLANTED_KEY not in client.name
    assert all(PLANTED_KEY not in (c.error or "") for c in first + second)
    for path in cache_dir.rglob("*"):
        if path.is_file():
            assert PLANTED_KEY.encode() not in path.read_bytes(), path
    # the libraries' DEBUG logs too
    assert any(r.name.startswith(("openai", "httpx")) for r in caplog.records)
    assert PLANTED_KEY not in caplog.text
    assert all(PLANTED_KEY not in str(r.args) for r in caplog.records)


@pytest.mark.slow
def test_openai_client_sends_the_key_from_the_named_env_var(
    served_model, proxy, tmp_path, monkeypatch
):
    monkeypatch.setenv(KEY_ENV, PLANTED_KEY)
    plan(proxy, faults={})
    client = make_client(openai_cfg(served_model, proxy), tmp_path)
    assert client.generate([ask("Say yes.", max_tokens=2)])[0].text is not None
    bearer = hashlib.sha256(f"Bearer {PLANTED_KEY}".encode()).hexdigest()
    assert stats(proxy)["auth_sha256"] == [bearer]
    assert PLANTED_KEY not in client.name and client.name.startswith("openai:")


@pytest.mark.slow
def test_openai_client_drops_logprobs_an_endpoint_rejects_even_inside_an_event_loop(
    served_model, proxy, tmp_path, monkeypatch, fast_backoff
):
    monkeypatch.delenv(KEY_ENV, raising=False)  # a local endpoint needs no key
    plan(proxy, faults={}, reject_logprobs=True)
    client = make_client(
        openai_cfg(served_model, proxy, max_retries=0, max_concurrency=1), tmp_path
    )
    prompts = [
        ask("Is the sky blue? Answer yes or no.", max_tokens=2, logprobs=True, top_logprobs=3),
        ask("Is grass red? Answer yes or no.", max_tokens=2, logprobs=True, top_logprobs=3),
    ]

    async def from_async_code():
        return client.generate(prompts)

    answers = asyncio.run(from_async_code())
    assert all(c.text is not None and c.top_logprobs is None for c in answers)
    assert not client.supports_logprobs
    assert stats(proxy)["outcomes"] == ["reject_logprobs", "forward", "forward"]
    assert client.n_calls == 3 and client.n_retries == 0


@pytest.mark.slow
def test_openai_client_stops_with_a_user_error_when_the_key_is_refused(
    served_model, proxy, tmp_path, monkeypatch
):
    monkeypatch.setenv(KEY_ENV, PLANTED_KEY)
    plan(proxy, faults={0: "401"})
    client = make_client(openai_cfg(served_model, proxy), tmp_path)
    with pytest.raises(SaeInterpError, match=KEY_ENV) as refused:
        client.generate([ask("Say yes.", max_tokens=2)])
    assert PLANTED_KEY not in str(refused.value)
    assert client.n_calls == 1 and client.n_retries == 0


@pytest.mark.slow
def test_surprisal_scorer_on_a_real_server_without_prompt_logprobs_is_one_clear_error(
    served_model, tmp_path, monkeypatch
):
    """`transformers serve` answers /v1/completions but ignores echo and logprobs: the surprisal
    scorer's request reaches it, and the answer is the one-line error naming what would work, not a
    score."""
    from sae_interp_tasks.scorers.intervention import surprisal_prefix, surprisal_request

    monkeypatch.delenv(KEY_ENV, raising=False)
    model_dir, server = served_model
    client = make_client(
        ClientConfig(
            kind="openai",
            model=str(model_dir),
            base_url=server.url + "/v1",
            api_key_env=KEY_ENV,
            max_retries=0,
        ),
        tmp_path,
    )
    pairs = [surprisal_request("The cat sat on the", " mat. The cat", 'cats"')]
    with pytest.raises(SaeInterpError) as err:
        client.continuation_logprobs(surprisal_prefix(), pairs)
    message = str(err.value)
    assert "\n" not in message and "returns no prompt logprobs on /v1/completions" in message
    assert "serve the model with vLLM" in message and "intervention_scorers: [judge]" in message
    # the server answered: the request went through, it lacks what the scorer needs
    assert client.n_calls == 1
