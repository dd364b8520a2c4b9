"""Intervention scoring on a steerable tiny world: a tiny model like conftest's, but with an untied
unembedding whose " cat" and " dog" rows point along those tokens' embeddings (the rest random and
small, so the clean model's next token is close to uniform). The planted " cat" latent's decoder row
is the " cat" embedding, so steering it makes " cat" likelier. The search must reach the target KL,
steered continuations must say " cat" far more often than clean ones, the edit must be applied at
every generated position, an oracle explanation must beat its shuffled control, and the surprisal
scorer must read the same log-probabilities in process and through an OpenAI-compatible completions
endpoint."""

from __future__ import annotations

import json
import math
import random
import re
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import (
    CAT,
    CAT_LATENT,
    D_SAE,
    DOG,
    DOG_LATENT,
    HOOK,
    PASS_BATCH,
    PASS_CFG,
    PASS_SEED,
    build_planted_sae,
    token_id,
)
from helpers import (
    SMALL_PASS,
    JsonEndpoint,
    chat_completion,
    error_lines,
    result_files,
    run_lm_eval,
    samples,
)
from sae_interp_tasks.errors import SaeInterpError
from sae_interp_tasks.stages import steering as iv

FOX = " fox"  # steerable too, for the judge's third set
CFG = iv.InterventionConfig(
    n_intervention_prompts=8,
    n_output_prompts=2,
    n_strata=2,
    prompt_tokens=24,
    continuation_tokens=6,
    target_kl=1.0,
)
WINDOWS_PER_CONTEXT = PASS_CFG.context_size // PASS_CFG.window


LOGIT_GAIN = 15.0  # the steered token's logit when the residual points along its embedding


@pytest.fixture(scope="module")
def steerable_dir(tmp_path_factory, tiny_model_dir, tokenizer):
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    config = LlamaConfig.from_pretrained(str(tiny_model_dir))
    config.tie_word_embeddings = False
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    base = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    model.load_state_dict(
        {k: v for k, v in base.state_dict().items() if k != "lm_head.weight"}, strict=False
    )
    with torch.no_grad():
        embed = model.get_input_embeddings().weight
        for word in (CAT, DOG, FOX):
            tok = token_id(tokenizer, word)
            model.lm_head.weight[tok] = (
                LOGIT_GAIN / math.sqrt(config.hidden_size) * embed[tok] / embed[tok].norm()
            )
    out = tmp_path_factory.mktemp("steerable-subject")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def world(steerable_dir, tokenizer, corpus_file, tmp_path_factory):
    """(model, sae, sae path, activation pass, contexts) of the steerable world."""
    from sae_interp_tasks.stages.activations import run_activation_pass
    from sae_interp_tasks.stages.corpus import CorpusSpec, token_contexts
    from sae_interp_tasks.stages.saes import SAESource, load_sae
    from sae_interp_tasks.stages.subject import load_subject

    model = load_subject(str(steerable_dir))
    planted = {CAT_LATENT: token_id(tokenizer, CAT), DOG_LATENT: token_id(tokenizer, DOG)}
    path = build_planted_sae(
        model.W_E.detach().float(),
        planted,
        D_SAE,
        steerable_dir,
        tmp_path_factory.mktemp("steerable_sae"),
    )
    sae, info = load_sae(SAESource(path=str(path)))
    spec = CorpusSpec(source=str(corpus_file))
    state = run_activation_pass(
        model,
        sae,
        info,
        spec,
        PASS_CFG,
        PASS_SEED,
        PASS_BATCH,
        cache_dir=tmp_path_factory.mktemp("steerable_pass"),
        progress=False,
    )
    contexts = torch.stack(
        list(
            token_contexts(
                spec, model.tokenizer, PASS_CFG.n_tokens, PASS_CFG.context_size, True, PASS_SEED
            )
        )
    )
    return model, sae, path, state, contexts


def prompts_of(world, latent, cfg=CFG):
    _, _, _, state, contexts = world
    return iv.intervention_prompts(
        state.record(latent),
        cfg,
        0,
        lambda c: contexts[c].numpy(),
        PASS_CFG.window,
        WINDOWS_PER_CONTEXT,
    )


@pytest.fixture(scope="module")
def steered(world, tokenizer):
    model, sae, _, _, _ = world
    latents = [CAT_LATENT, DOG_LATENT]
    prompts = {lat: prompts_of(world, lat) for lat in latents}
    return iv.steer_latents(
        model,
        HOOK,
        latents,
        prompts,
        iv.steering_directions(sae, latents),
        CFG,
        0,
        {tokenizer.eos_token_id},
    ), prompts


# ------------------------------------------------------------------------------------ prompts
def test_prompts_end_at_the_first_activating_token_and_span_the_strata(world, tokenizer):
    cat, contexts = token_id(tokenizer, CAT), world[4]
    scoring, explaining = prompts_of(world, CAT_LATENT)
    assert len(scoring) == CFG.n_intervention_prompts and len(explaining) == CFG.n_output_prompts
    assert not {p.window_id for p in scoring} & {p.window_id for p in explaining}
    for p in scoring + explaining:
        context, k = divmod(p.window_id, WINDOWS_PER_CONTEXT)
        row = contexts[context].numpy()
        window = row[k * PASS_CFG.window : (k + 1) * PASS_CFG.window]
        # the window's first " cat"
        first = k * PASS_CFG.window + int(np.flatnonzero(window == cat)[0])
        assert first > 0
        assert np.array_equal(p.tokens, row[max(0, first + 1 - CFG.prompt_tokens) : first + 1])
    assert {p.stratum for p in scoring} == {1, 2}
    assert prompts_of(world, CAT_LATENT)[0][0].window_id == scoring[0].window_id  # seeded


def test_a_latent_with_too_few_windows_gets_no_prompts(world):
    assert prompts_of(world, CAT_LATENT, replace(CFG, n_intervention_prompts=500)) is None


def test_steering_direction_is_the_decoder_row(world):
    sae = world[1]
    got = iv.steering_directions(sae, [CAT_LATENT, 5])
    assert torch.allclose(got, sae.W_dec[[CAT_LATENT, 5]].float(), atol=1e-6)


# ------------------------------------------------------------------------------------ the search
def direct_kl(model, prompt: np.ndarray, vector: torch.Tensor, scale: float) -> float:
    """KL(clean || steered) at the last token from two plain full forwards (no cache, no batch)."""
    tokens = torch.as_tensor(prompt)[None]

    def edit(act, hook):
        act = act.clone()
        act[:, -1] += scale * vector
        return act

    with torch.no_grad():
        clean = F.log_softmax(model(tokens)[0, -1].float(), -1)
        with model.hooks(fwd_hooks=[(HOOK, edit)]):
            steer = F.log_softmax(model(tokens)[0, -1].float(), -1)
    return float((clean.exp() * (clean - steer)).sum())


def test_the_search_reaches_the_target_kl(steered, world):
    results, prompts = steered
    tiny_model, sae = world[0], world[1]
    for lat in (CAT_LATENT, DOG_LATENT):
        res = results[(lat, 1.0)]
        assert res.reached, res.history
        assert abs(res.kl - 1.0) <= CFG.kl_tolerance
        assert 1 <= len(res.history) <= CFG.search_steps
        assert all(CFG.strength_min <= s <= CFG.strength_max for s, _ in res.history)
        # the batched, KV-cached KL equals plain full forwards on each prompt
        vector = sae.W_dec[lat].float()
        direct = np.mean(
            [direct_kl(tiny_model, p.tokens, vector, res.strength) for p in prompts[lat][0]]
        )
        assert direct == pytest.approx(res.kl, rel=1e-3, abs=1e-4)


def test_search_history_interpolates_in_log_log():
    search = iv.Search(1.0, CFG, history=[(100.0, 4.0)])
    assert search.next_strength() == pytest.approx(50.0)  # one side: KL ~ s^2
    search.history.append((10.0, 0.25))
    # a bracket: log-log interpolation between (10, .25) and (100, 4)
    guess = search.next_strength()
    assert guess == pytest.approx(
        10 ** (1 + (math.log10(1.0) - math.log10(0.25)) / (math.log10(4) - math.log10(0.25)))
    )
    stuck = iv.Search(
        1e9, replace(CFG, strength_max=10.0, strength_start=1.0), history=[(10.0, 3.0)]
    )
    assert stuck.done() and stuck.reached() is None


def test_an_unreachable_target_is_reported_not_scored(world, tokenizer):
    tiny_model, sae = world[0], world[1]
    cfg = replace(CFG, target_kl=50.0, strength_max=0.5, strength_start=0.2, search_steps=4)
    out = iv.steer_latents(
        tiny_model,
        HOOK,
        [CAT_LATENT],
        {CAT_LATENT: prompts_of(world, CAT_LATENT, cfg)},
        iv.steering_directions(sae, [CAT_LATENT]),
        cfg,
        0,
        {tokenizer.eos_token_id},
    )
    res = out[(CAT_LATENT, 50.0)]
    assert not res.reached and res.strength is None and res.kl < 50.0
    assert res.clean == [] and res.steered == []  # nothing generated for an unreached latent


# ------------------------------------------------------------------------------------ continuations
def test_steered_continuations_say_cat_far_more_often(steered, tokenizer):
    results, _ = steered
    res = results[(CAT_LATENT, 1.0)]
    cat = token_id(tokenizer, CAT)
    steered_cats = sum(row.count(cat) for row in res.steered)
    clean_cats = sum(row.count(cat) for row in res.clean)
    assert len(res.steered) == CFG.n_intervention_prompts
    assert steered_cats >= 3 * max(clean_cats, 1), (steered_cats, clean_cats)
    assert [tokenizer.decode([tok]) for tok, _ in res.promoted][0] == CAT  # the most promoted token


def test_the_edit_is_present_at_every_generated_position(steered, world):
    """The batched, KV-cached generation equals a cache-free reference that edits the last prompt
    token and every generated position; editing the last prompt token alone (what a KV-cached
    generation that hooks only the prompt would do) gives other continuations."""
    results, prompts = steered
    tiny_model, sae = world[0], world[1]
    res = results[(CAT_LATENT, 1.0)]
    draws = iv.coupled_uniforms(0, CAT_LATENT, CFG.n_intervention_prompts, CFG.continuation_tokens)
    vector = sae.W_dec[CAT_LATENT].float()
    differs = 0
    for i, prompt in enumerate(prompts[CAT_LATENT][0]):
        reference = iv.naive_steered_generate(
            tiny_model, HOOK, prompt.tokens, vector, res.strength, draws[i], CFG
        )
        assert res.steered[i] == reference[: len(res.steered[i])], i
        clean = iv.naive_steered_generate(
            tiny_model, HOOK, prompt.tokens, vector, 0.0, draws[i], CFG
        )
        # same draws: clean differs only by the edit
        assert res.clean[i] == clean[: len(res.clean[i])], i
        differs += reference != prompt_only_edit(
            tiny_model, prompt.tokens, vector, res.strength, draws[i]
        )
    assert differs > 0


def prompt_only_edit(model, prompt, vector, scale, draws) -> list[int]:
    tokens = torch.as_tensor(prompt)[None]
    last = tokens.shape[1] - 1

    def edit(act, hook):
        act = act.clone()
        act[:, last] += scale * vector
        return act

    out = []
    with torch.no_grad(), model.hooks(fwd_hooks=[(HOOK, edit)]):
        for step in range(CFG.continuation_tokens):
            nxt = iv.sample(
                model(tokens)[:, -1], draws[step : step + 1], CFG.continuation_temperature
            )
            out.append(int(nxt[0]))
            tokens = torch.cat([tokens, nxt.view(1, 1)], dim=1)
    return out


def test_clean_and_steered_share_their_random_draws():
    a = iv.coupled_uniforms(7, 3, 4, 5)
    assert torch.equal(a, iv.coupled_uniforms(7, 3, 4, 5)) and not torch.equal(
        a, iv.coupled_uniforms(7, 4, 4, 5)
    )
    logits = torch.tensor([[0.0, 1.0, 2.0], [0.0, 1.0, 2.0]])
    probs = F.softmax(logits[0].double(), -1)
    picked = iv.sample(logits, torch.tensor([0.0, float(probs[:2].sum()) + 1e-9]), 1.0)
    assert picked.tolist() == [0, 2]


# ------------------------------------------------------------------------------------ surprisal, in
# process
def test_hf_logprobs_equal_a_direct_forward(tiny_model_dir, tmp_path):
    """The shared prefix's KV cache, copied for padded batches, changes no number."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sae_interp_tasks.clients import ClientConfig, make_client

    client = make_client(ClientConfig(kind="hf", model=str(tiny_model_dir), batch_size=3), tmp_path)
    prefix = "<PASSAGE>\nSome text.\n\nThe above passage"
    pairs = [
        ("\n<PASSAGE>\nThe cat sat", ' "cats"'),
        ("\nA dog", ' "dogs and more dogs"'),
        ("", " x"),
        ("\nWe saw a fox near the fence this morning", ' "fox"'),
    ]
    got = client.continuation_logprobs(prefix, pairs)
    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)).eval()
    for (context, target), value in zip(pairs, got, strict=True):
        head = tok(prefix, add_special_tokens=True).input_ids
        ctx, tgt = client._split(context, target)
        ids = torch.tensor([head + ctx + tgt])
        with torch.no_grad():
            logp = F.log_softmax(model(ids).logits[0].float(), -1)
        start = len(head) + len(ctx)
        expected = sum(float(logp[start + j - 1, t]) for j, t in enumerate(tgt))
        assert value == pytest.approx(expected, abs=1e-3)
    calls = client.n_calls
    assert client.continuation_logprobs(prefix, pairs) == got and client.n_calls == calls  # cached


# ------------------------------------------------------------------------------------ surprisal,
# over HTTP
class CompletionsServer(JsonEndpoint):
    """An OpenAI-compatible /v1/completions endpoint whose echoed prompt logprobs come from
    `logprob_of(prompt) -> (tokens, logprobs, offsets)`, or are withheld (`with_logprobs=False`)."""

    def __init__(self, logprob_of, with_logprobs: bool = True):
        def respond(path: str, body: dict):
            if not path.endswith("/completions") or "messages" in body:
                return 404, {"error": {"message": "not found"}}
            tokens, values, offsets = logprob_of(body["prompt"])
            logprobs = (
                {
                    "tokens": tokens,
                    "token_logprobs": values,
                    "text_offset": offsets,
                    "top_logprobs": None,
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
            }

        super().__init__(respond)


def model_logprobs(tiny_model_dir):
    """Echoed prompt logprobs computed by the tiny model itself (what vLLM's echo returns)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)).eval()

    def logprob_of(prompt: str):
        enc = tok(prompt, add_special_tokens=True, return_offsets_mapping=True)
        ids = torch.tensor([enc.input_ids])
        with torch.no_grad():
            logp = F.log_softmax(model(ids).logits[0].float(), -1)
        values = [None] + [float(logp[i - 1, t]) for i, t in enumerate(enc.input_ids) if i > 0]
        return (
            [tok.decode([t]) for t in enc.input_ids],
            values,
            [start for start, _ in enc.offset_mapping],
        )

    return logprob_of


def test_a_completions_endpoint_with_prompt_logprobs_serves_the_surprisal_scorer(
    tiny_model_dir, tmp_path
):
    from sae_interp_tasks.clients import ClientConfig, make_client
    from sae_interp_tasks.scorers.intervention import surprisal_prefix, surprisal_request

    server = CompletionsServer(model_logprobs(tiny_model_dir))
    try:
        remote = make_client(
            ClientConfig(kind="openai", model="tiny", base_url=server.url), tmp_path / "remote"
        )
        local = make_client(ClientConfig(kind="hf", model=str(tiny_model_dir)), tmp_path / "local")
        pairs = [
            surprisal_request("The cat sat on the", " mat. The cat", 'cats"'),
            surprisal_request("We saw a dog", " near the fence", 'the word dog"'),
        ]
        got = remote.continuation_logprobs(surprisal_prefix(), pairs)
        # the endpoint tokenizes the whole text at once, the in-process client the prefix apart:
        # equal to 1e-3
        assert got == pytest.approx(
            local.continuation_logprobs(surprisal_prefix(), pairs), rel=1e-3
        )
        assert all(body["echo"] is True and body["logprobs"] == 1 for body in server.asked)
    finally:
        server.close()


def test_an_endpoint_without_prompt_logprobs_is_one_clear_error(tmp_path):
    from sae_interp_tasks.clients import ClientConfig, make_client

    server = CompletionsServer(lambda prompt: ([], [], []), with_logprobs=False)
    try:
        client = make_client(ClientConfig(kind="openai", model="m", base_url=server.url), tmp_path)
        with pytest.raises(
            SaeInterpError, match="returns no prompt logprobs.*intervention_scorers: .judge."
        ):
            client.continuation_logprobs("prefix ", [("context", " target")])
    finally:
        server.close()


# ------------------------------------------------------------------------------------ through
# lm_eval
def oracle_logprobs(prompt: str):
    """An oracle base LM for the surprisal prompt: the more often the passage holds what the claimed
    explanation names (its quoted token, else its last word), the likelier the claim,
    P = (1 + n) / (4 + n); every other token costs nothing."""
    lead = 'The above passage contains an amplified amount of "'
    head, _, claim = prompt.rpartition(lead)
    passage = head.rpartition("<PASSAGE>\n")[2]
    explanation = claim[:-1]  # the closing quote
    quoted = re.findall(r'"([^"]+)"', explanation)
    word = (quoted[0] if quoted else explanation.split()[-1]).strip()
    n = len(re.findall(rf"\b{re.escape(word)}\b", passage))
    return ["<prefix>", "<claim>"], [None, math.log((1 + n) / (4 + n))], [0, len(head) + len(lead)]


TINY_INTERVENTION = {
    "n_intervention_prompts": 8,
    "n_output_prompts": 2,
    "n_strata": 2,
    "prompt_tokens": 24,
    "continuation_tokens": 6,
    "explainer": "tokens",
    "surprisal_scorer": "openai",
    "surprisal_model": "oracle",
}


@pytest.fixture(scope="module")
def oracle_run(world, corpus_file, tmp_path_factory):
    server = CompletionsServer(oracle_logprobs)
    out, cache = (
        tmp_path_factory.mktemp("intervention_out"),
        tmp_path_factory.mktemp("intervention_cache"),
    )
    meta = {
        "corpus": str(corpus_file),
        **SMALL_PASS,
        **TINY_INTERVENTION,
        "latents": [CAT_LATENT, DOG_LATENT],
        "surprisal_base_url": server.url,
    }
    proc = run_lm_eval(
        [
            "--model",
            "sae",
            "--model_args",
            f"path={world[2]},device=cpu,batch_size=8",
            "--tasks",
            "sae_intervention",
            "--metadata",
            json.dumps(meta),
            "--log_samples",
            "--output_path",
            str(out),
        ],
        cache,
    )
    server.close()
    files = result_files(out)
    return proc, out, json.loads(files[0].read_text()) if files else None, server.asked


def test_the_oracle_explanation_beats_its_shuffled_control(oracle_run):
    proc, out, results, asked = oracle_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = results["results"]["sae_intervention"]
    assert got["unreached,none"] == 0 and got["skipped_few_prompts,none"] == 0
    assert got["kl,none"] == pytest.approx(1.0, abs=0.1)
    # steered text says " cat" (" dog") more often than clean text; a shuffled explanation names the
    # other latent's token, which steering does not add
    assert got["score,none"] > 0.2 and got["output_score,none"] > 0.2, got
    assert got["score,none"] > got["score_shuffled,none"] + 0.2, got
    assert got["output_score,none"] > got["output_score_shuffled,none"] + 0.2, got
    assert asked and all(body["echo"] for body in asked)
    rows = samples(out, "sae_intervention")
    cat = rows[0]["response"]
    assert cat["latent"] == CAT_LATENT and cat["explanation"] == 'the token " cat"'
    target = cat["targets"]["1"]
    assert target["reached"] and target["promoted"][0][0] == CAT
    assert target["output_explanation"].startswith('the tokens " cat"')
    assert len(target["continuations"]) == 8 and all(
        {"prompt", "clean", "steered"} <= set(c) for c in target["continuations"]
    )
    assert sum(c["steered"].count("cat") for c in target["continuations"]) > sum(
        c["clean"].count("cat") for c in target["continuations"]
    )
    assert len(target["surprisal"]["score"]["logprob_clean_steered"]) == 8
    assert set(target["explanations"]) == {
        "score",
        "score_shuffled",
        "output_score",
        "output_score_shuffled",
    }


@pytest.mark.parametrize(
    "meta,expected",
    [
        ({"target_kl": 0}, "error: target_kl must be a positive number or a list of them, got 0.0"),
        (
            {"n_intervention_prompts": 0},
            "error: setting n_intervention_prompts=0 must be at least 1",
        ),
        (
            {"n_intervention_prompts": 300},
            "error: n_intervention_prompts + n_output_prompts (310) cannot exceed n_sample (200)",
        ),
        # an empty prompt pool: the one latent asked for has fewer windows than its prompts need
        (
            {
                **SMALL_PASS,
                "n_tokens": 512,
                "latents": [CAT_LATENT],
                "explainer": "tokens",
                "n_intervention_prompts": 30,
            },
            "error: no latent has the 40 activating windows",
        ),
    ],
)
def test_bad_intervention_settings_are_one_line(
    meta, expected, planted_sae, corpus_file, sae_cache, tmp_path
):
    proc = run_lm_eval(
        [
            "--model",
            "sae",
            "--model_args",
            f"path={planted_sae.path},device=cpu",
            "--tasks",
            "sae_intervention",
            "--metadata",
            json.dumps({"corpus": str(corpus_file), **meta}),
            "--output_path",
            str(tmp_path),
        ],
        sae_cache,
    )
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    (line,) = error_lines(proc.stderr)
    assert line.startswith(expected), line
    assert not result_files(tmp_path)


def test_a_surprisal_endpoint_without_logprobs_stops_the_run(
    world, corpus_file, sae_cache, tmp_path
):
    server = CompletionsServer(lambda prompt: ([], [], []), with_logprobs=False)
    meta = {
        "corpus": str(corpus_file),
        **SMALL_PASS,
        **TINY_INTERVENTION,
        "latents": [CAT_LATENT],
        "surprisal_base_url": server.url,
    }
    try:
        proc = run_lm_eval(
            [
                "--model",
                "sae",
                "--model_args",
                f"path={world[2]},device=cpu,batch_size=8",
                "--tasks",
                "sae_intervention",
                "--metadata",
                json.dumps(meta),
                "--output_path",
                str(tmp_path),
            ],
            sae_cache,
        )
    finally:
        server.close()
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    (line,) = error_lines(proc.stderr)
    assert "returns no prompt logprobs" in line and "intervention_scorers: [judge]" in line, line
    assert not result_files(tmp_path)


# ------------------------------------------------------------------------------------ the judge
def test_judge_sets_and_answers():
    from sae_interp_tasks.scorers.intervention import judge_prompt, judge_sets, read_judgement

    sets, truth = judge_sets(["a cat", "cat cat"], [["a dog"], ["a fox"]], random.Random(0))
    assert sorted(map(tuple, sets)) == [("a cat", "cat cat"), ("a dog",), ("a fox",)]
    assert sets[truth] == ["a cat", "cat cat"]
    prompt = judge_prompt("cats", sets)
    assert "Description: cats" in prompt.messages[-1][1] and "Set 3:" in prompt.messages[-1][1]
    assert read_judgement(f"Set {truth + 1}.", truth) == 1.0
    assert read_judgement(str((truth + 1) % 3 + 1), truth) == 0.0
    assert math.isnan(read_judgement("I cannot tell", truth))


def judge_oracle(messages: list[dict]) -> str:
    """Names the set whose continuations say the description's quoted token most often."""
    user = messages[-1]["content"]
    description = user.split("\n", 1)[0].removeprefix("Description: ")
    quoted = re.findall(r'"([^"]+)"', description)
    word = (quoted[0] if quoted else description.split()[-1]).strip()
    sets = re.split(
        r"\n\nSet \d+:\n", "\n\n" + user.split("\n\n", 1)[1].rsplit("\n\nWhich set?", 1)[0]
    )[1:]
    counts = [len(re.findall(rf"\b{re.escape(word)}\b", s)) for s in sets]
    return str(1 + counts.index(max(counts)))


@pytest.fixture(scope="module")
def judge_endpoint():
    with JsonEndpoint(
        lambda path, body: (200, chat_completion(judge_oracle(body["messages"])))
    ) as endpoint:
        yield endpoint.url, endpoint.asked


def test_the_judge_picks_the_steered_set_on_a_generation_only_endpoint(
    world, steerable_dir, tokenizer, corpus_file, judge_endpoint, sae_cache, tmp_path
):
    """intervention_scorers: [judge] needs no logprobs: three latents steered to the same KL, and a
    judge that names the set saying the explanation's token names the latent's own set, while a
    shuffled explanation points at another latent's set."""
    url, asked = judge_endpoint
    # a third planted word: the judge needs three latents steered to the target, and in this
    # untrained model only the words the lm_head was given can be steered that far
    words = {CAT_LATENT: CAT, DOG_LATENT: DOG, 2: FOX}
    path = build_planted_sae(
        world[0].W_E.detach().float(),
        {lat: token_id(tokenizer, w) for lat, w in words.items()},
        D_SAE,
        steerable_dir,
        tmp_path / "sae",
    )
    planted = list(words)
    meta = {
        "corpus": str(corpus_file),
        **SMALL_PASS,
        **TINY_INTERVENTION,
        "latents": planted,
        "intervention_scorers": ["judge"],
        "scorer": "openai",
        "scorer_base_url": url,
        "scorer_model": "judge",
        "judge_continuations": 8,
    }
    proc = run_lm_eval(
        [
            "--model",
            "sae",
            "--model_args",
            f"path={path},device=cpu,batch_size=8",
            "--tasks",
            "sae_intervention",
            "--metadata",
            json.dumps(meta),
            "--log_samples",
            "--output_path",
            str(tmp_path / "out"),
        ],
        sae_cache,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {
        r["response"]["latent"]: r["response"]
        for r in samples(tmp_path / "out", "sae_intervention")
    }
    assert [rows[lat]["metrics"]["judge_acc"] for lat in planted] == [1.0, 1.0, 1.0]
    (path,) = result_files(tmp_path / "out")
    got = json.loads(path.read_text())["results"]["sae_intervention"]
    # each shuffled explanation names one of the two other steered sets, so the judge always picks
    # wrong
    assert got["judge_acc,none"] == 1.0 and got["judge_acc_shuffled,none"] == 0.0
    # surprisal was not asked for (NaN is written as null)
    assert rows[CAT_LATENT]["metrics"]["score"] is None
    assert asked and all("messages" in body and not body.get("logprobs") for body in asked)
