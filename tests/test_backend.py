"""The `sae` backend: stock request types with the SAE spliced in, controls, model_args checks."""

from __future__ import annotations

import shutil

import pytest
import torch
import torch.nn.functional as F
from lm_eval.api.instance import Instance

from conftest import D_MODEL, D_SAE, HOOK
from sae_interp_tasks.config import MODEL_ARG_KEYS
from sae_interp_tasks.errors import SaeInterpError
from sae_interp_tasks.harness.backend import SAEBackend

MODEL_ARGS = [key for key in MODEL_ARG_KEYS if key != "trust_remote_code"]

REQUESTS = [  # different lengths, so one batch pads
    ("The cat sat on the", " mat."),
    ("A small dog slept under the old table all day because", " it was warm."),
    ("We saw a", " cat"),
    ("", " The cat and the dog"),  # empty context: the backend's prefix token (BOS) stands in
]


@pytest.fixture(scope="module")
def backend(planted_sae):
    return SAEBackend(path=str(planted_sae.path), device="cpu", batch_size=8)


@pytest.fixture(scope="module")
def exact_backend(exact_sae_dir):
    return SAEBackend(path=str(exact_sae_dir), device="cpu", batch_size=3)


def loglikelihood_requests(pairs=REQUESTS):
    return [Instance(request_type="loglikelihood", doc={}, arguments=pair, idx=0) for pair in pairs]


def encode_pair(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    if not context:
        return [tokenizer.bos_token_id], tokenizer.encode(continuation, add_special_tokens=False)
    whole = tokenizer.encode(context + continuation, add_special_tokens=False)
    n_ctx = len(tokenizer.encode(context, add_special_tokens=False))
    return whole[:n_ctx], whole[n_ctx:]


def direct_loglikelihood(model, context_ids, continuation_ids, hook=None) -> tuple[float, bool]:
    """One unpadded TransformerLens forward, optionally with a hook at the SAE's hook point."""
    tokens = torch.tensor([context_ids + continuation_ids])
    with torch.no_grad(), model.hooks(fwd_hooks=[(HOOK, hook)] if hook else []):
        logits = model(tokens)
    logprobs = F.log_softmax(logits[0, :-1].float(), dim=-1)
    start = len(context_ids) - 1
    targets = tokens[0, 1:][start:]
    picked = logprobs[start:].gather(1, targets[:, None])
    return float(picked.sum()), bool((logprobs[start:].argmax(-1) == targets).all())


def sae_from_disk(path):
    from sae_lens import SAE

    return SAE.load_from_disk(str(path))


def test_loglikelihood_with_sae_spliced_matches_transformer_lens(backend, tiny_model, planted_sae):
    sae = sae_from_disk(planted_sae.path)  # independent of the backend's copy

    def splice(x, hook):
        return sae.decode(sae.encode(x))

    got = backend.loglikelihood(loglikelihood_requests(), disable_tqdm=True)
    for (context, continuation), (logprob, greedy) in zip(REQUESTS, got, strict=True):
        ctx, cont = encode_pair(backend.tokenizer, context, continuation)
        want, want_greedy = direct_loglikelihood(tiny_model, ctx, cont, hook=splice)
        assert logprob == pytest.approx(want, abs=1e-4)
        assert greedy == want_greedy
        clean, _ = direct_loglikelihood(tiny_model, ctx, cont)
        assert abs(logprob - clean) > 1e-3, (
            "the SAE (a poor reconstruction) must change the likelihood"
        )


def test_exact_sae_gives_the_clean_model(exact_backend, tiny_model):
    # batch_size 3: two batches
    got = exact_backend.loglikelihood(loglikelihood_requests(), disable_tqdm=True)
    for (context, continuation), (logprob, _) in zip(REQUESTS, got, strict=True):
        ctx, cont = encode_pair(exact_backend.tokenizer, context, continuation)
        assert logprob == pytest.approx(direct_loglikelihood(tiny_model, ctx, cont)[0], abs=1e-4)


def test_loglikelihood_rolling_with_exact_sae(exact_backend, tiny_model, tokenizer):
    text = "The cat sat on the mat. A small dog slept under the table."
    (total,) = exact_backend.loglikelihood_rolling(
        [Instance(request_type="loglikelihood_rolling", doc={}, arguments=(text,), idx=0)],
        disable_tqdm=True,
    )
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert total == pytest.approx(
        direct_loglikelihood(tiny_model, [tokenizer.bos_token_id], ids)[0], abs=1e-3
    )


def greedy_continuation(model, tokenizer, context: str, n: int) -> str:
    """Plain greedy decoding: no hooks, no KV cache, no batch; stops at EOS."""
    ids = torch.tensor([tokenizer.encode(context, add_special_tokens=False)])
    start = ids.shape[1]
    with torch.no_grad():
        for _ in range(n):
            nxt = model(ids)[0, -1].argmax()
            if int(nxt) == tokenizer.eos_token_id:
                break
            ids = torch.cat([ids, nxt.view(1, 1)], dim=1)
    return tokenizer.decode(ids[0, start:].tolist())


def generate_request(context: str, **gen_kwargs) -> Instance:
    return Instance(request_type="generate_until", doc={}, idx=0, arguments=(context, gen_kwargs))


def test_generate_until_with_exact_sae_is_clean_greedy(exact_backend, tiny_model, tokenizer):
    context = "The cat sat on the"
    (text,) = exact_backend.generate_until(
        [generate_request(context, until=["\n\n"], max_gen_toks=6, do_sample=False)],
        disable_tqdm=True,
    )
    assert text == greedy_continuation(tiny_model, tokenizer, context, 6).split("\n\n")[0]


def test_generate_until_batches_requests_of_any_length(exact_backend, tiny_model, tokenizer):
    """Requests of different lengths share left-padded batches (batch_size 3 here), grouped by their
    generation settings; each gets its own greedy continuation, in the order asked."""
    contexts = [
        "The cat",
        "A small dog slept under the old table all day because it",
        "We saw a bird near",
        "Nobody knew why",
        "In the evening the cow and the fox walked past the",
    ]
    lengths = [4, 7, 4, 7, 4]
    requests = [
        generate_request(c, until=["\n\n"], max_gen_toks=n, do_sample=False)
        for c, n in zip(contexts, lengths, strict=True)
    ]
    got = exact_backend.generate_until(requests, disable_tqdm=True)
    expected = [
        greedy_continuation(tiny_model, tokenizer, c, n).split("\n\n")[0]
        for c, n in zip(contexts, lengths, strict=True)
    ]
    assert got == expected


def test_spliced_equals_a_hand_computed_forward(backend, planted_sae, tokenizer):
    """At blocks.0.hook_resid_pre the residual is the embedding, so splicing the SAE there is the
    same as running the blocks on SAE(W_E[tokens])."""
    sae = sae_from_disk(planted_sae.path)
    model = backend.model
    text = tokenizer.encode("The cat sat on the dog", add_special_tokens=False)
    tokens = torch.tensor([[tokenizer.bos_token_id] + text])
    with torch.no_grad():
        residual = sae.decode(sae.encode(model.W_E[tokens]))
        by_hand = model(residual, start_at_layer=0, tokens=tokens)
        with backend.spliced():
            spliced = model(tokens)
        clean = model(tokens)
        plain = model(model.W_E[tokens], start_at_layer=0, tokens=tokens)
    assert torch.allclose(spliced, by_hand, atol=1e-5)
    assert torch.allclose(clean, plain, atol=1e-5)  # and the hook is gone after the block
    assert not torch.allclose(spliced, clean, atol=1e-3)


def test_backend_properties(backend, planted_sae, tiny_model_dir):
    assert backend.info.d_sae == D_SAE and backend.info.d_in == D_MODEL
    assert backend.info.hook_name == HOOK and backend.info.prepend_bos is True
    assert backend.info.label == str(planted_sae.path)
    assert backend.prefix_token_id == backend.tokenizer.bos_token_id
    assert backend.eot_token_id == backend.tokenizer.eos_token_id
    assert backend.max_length == min(backend.model.cfg.n_ctx, 2048)
    assert backend.model.cfg.model_name == str(tiny_model_dir)


def test_tok_encode_adds_special_tokens_only_when_asked(backend):
    """lm-eval asks for the prefix token itself (add_special_tokens=True) where a request needs
    one."""
    plain = backend.tok_encode("The cat sat")
    assert plain == backend.tokenizer.encode("The cat sat", add_special_tokens=False)
    assert backend.tok_encode("The cat sat", add_special_tokens=False) == plain
    with_bos = backend.tok_encode("The cat sat", add_special_tokens=True)
    assert with_bos == [backend.tokenizer.bos_token_id, *plain]


@pytest.mark.parametrize("control,d_sae", [("random", D_SAE), ("neurons", D_MODEL)])
def test_controls_have_the_expected_shapes(planted_sae, control, d_sae):
    b = SAEBackend(path=str(planted_sae.path), device="cpu", control=control, control_k=4)
    assert b.info.d_sae == d_sae and b.sae.cfg.d_sae == d_sae
    assert b.info.d_in == D_MODEL and b.info.hook_name == HOOK
    assert b.info.label.endswith(f"+control={control}")
    assert b.info.architecture == "topk"
    assert torch.allclose(b.sae.W_dec.norm(dim=1), torch.ones(d_sae), atol=1e-5)  # unit directions
    if control == "neurons":
        assert torch.equal(b.sae.W_dec, torch.eye(D_MODEL))
    x = torch.randn(5, D_MODEL)
    acts = b.sae.encode(x)
    assert acts.shape == (5, d_sae) and ((acts != 0).sum(-1) <= 4).all()  # k=4 latents a token
    got = b.loglikelihood(loglikelihood_requests(REQUESTS[:1]), disable_tqdm=True)
    assert got[0][0] < 0


def test_control_fingerprints_differ(planted_sae):
    from sae_interp_tasks.stages.saes import SAESource, load_sae

    _, base = load_sae(SAESource(path=str(planted_sae.path)))
    _, rand = load_sae(SAESource(path=str(planted_sae.path), control="random"))
    _, again = load_sae(SAESource(path=str(planted_sae.path), control="random"))
    assert rand.fingerprint != base.fingerprint and rand.fingerprint == again.fingerprint  # seeded


def test_unknown_control(planted_sae):
    with pytest.raises(SaeInterpError, match="unknown control 'randm'.*random"):
        SAEBackend(path=str(planted_sae.path), control="randm")


def test_unknown_model_arg_lists_valid_keys(planted_sae):
    with pytest.raises(SaeInterpError) as err:
        SAEBackend.create_from_arg_string(
            f"path={planted_sae.path},hook=blocks.0.hook_resid_pre,layerz=3"
        )
    message = str(err.value)
    assert "hook" in message and "layerz" in message
    assert all(key in message for key in MODEL_ARGS)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(release="gpt2-small-res-jb", path="/x"), "either release"),
        (dict(sae_id="blocks.8.hook_resid_pre"), "sae_id needs release"),
        (dict(batch_size=0), "batch_size must be positive"),
    ],
)
def test_contradictory_model_args(kwargs, match):
    with pytest.raises(SaeInterpError, match=match):
        SAEBackend(**kwargs)


def test_building_the_backend_loads_nothing(planted_sae, monkeypatch):
    """lm-eval builds the model before the tasks: the SAE and subject load on first use, so a bad
    task setting fails before any weights are read."""
    from sae_interp_tasks.harness import backend as backend_mod

    loads = []
    monkeypatch.setattr(backend_mod, "load_subject", lambda *a, **k: loads.append("subject"))
    monkeypatch.setattr(backend_mod, "load_sae", lambda *a, **k: loads.append("sae"))
    b = SAEBackend(path=str(planted_sae.path), device="cpu")
    assert loads == [] and b.batch_size_per_gpu == 8


def test_model_args_win_over_harness_flags(planted_sae):
    b = SAEBackend.create_from_arg_obj(
        {"path": str(planted_sae.path), "batch_size": "2"}, {"batch_size": 16, "device": "cpu"}
    )
    assert b.batch_size_per_gpu == 2 and b.device == "cpu"


def test_hook_the_subject_lacks(tmp_path, tiny_model, tiny_model_dir):
    from conftest import build_exact_sae

    path = build_exact_sae(
        D_MODEL, tiny_model_dir, tmp_path / "sae", hook="blocks.99.hook_resid_post"
    )
    # arguments are fine; the mismatch shows on loading
    backend = SAEBackend(path=str(path), device="cpu")
    with pytest.raises(SaeInterpError, match="blocks.99.hook_resid_post") as err:
        _ = backend.model
    message = str(err.value)
    assert "blocks.1.hook_resid_post" in message  # the closest hooks the model has
    assert "2 layers" in message


def test_hook_error_names_a_fix_that_exists(tmp_path, tiny_model_dir):
    """Every model_arg the hook error advises is one --model sae accepts."""
    import re

    from conftest import build_exact_sae

    path = build_exact_sae(
        D_MODEL, tiny_model_dir, tmp_path / "sae", hook="blocks.99.hook_resid_post"
    )
    with pytest.raises(SaeInterpError) as err:
        _ = SAEBackend(path=str(path), device="cpu").model
    for arg in re.findall(r"model_args (\w+)=", str(err.value)):
        assert arg in MODEL_ARGS, (
            f"the message advises model_args {arg}=..., which --model sae rejects"
        )


def test_sae_narrower_than_the_hook(tmp_path, tiny_model_dir):
    from conftest import build_exact_sae

    path = build_exact_sae(D_MODEL // 2, tiny_model_dir, tmp_path / "narrow")
    with pytest.raises(SaeInterpError, match=f"{D_MODEL // 2}-wide.*{D_MODEL}-wide"):
        _ = SAEBackend(path=str(path), device="cpu").model


def test_subject_folder_named_llama(tmp_path, tiny_model_dir):
    """A local subject folder whose path contains "llama" (or "gemma") loads like any other: users
    name their folders like that ("my-llama-finetune"), and TransformerLens must not guess from the
    name."""
    from sae_interp_tasks.stages.subject import load_subject

    folder = tmp_path / "my-llama-finetune"
    shutil.copytree(tiny_model_dir, folder)
    model = load_subject(str(folder))
    assert model.cfg.n_layers == 2 and model.cfg.d_model == D_MODEL
