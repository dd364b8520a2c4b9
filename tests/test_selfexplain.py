"""Self-explanation: a latent's direction patched into the subject model's own residual stream.

In the tiny world the planted " cat" latent's decoder direction is W_E[" cat"] itself. The tiny
model has tied, random embeddings and near-zero blocks, so whatever sits in the last prompt
position's residual is what it says next: patched there (the `echo` template below ends on
the placeholder) at a scale like a real token's, it must say "cat", and for the " dog" latent
"dog". That makes the sweep's plumbing checkable: the patch lands on the right rows and
positions, on the first forward only, and the KV-cached batched generation says exactly what
TransformerLens's cache-free `generate` says. The one slow test asks the real question on the
bundled SmolLM2-135M-Instruct with the `repeat` template (docs/methods.md).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import CAT, CAT_LATENT, DOG, DOG_LATENT, token_id
from sae_interp_tasks.errors import SaeInterpError
from sae_interp_tasks.stages.selfexplain import (
    best_scales,
    composite,
    minmax,
    sweep,
    typical_norm,
)
from sae_interp_tasks.stages.selfexplain_naive import naive_generate
from sae_interp_tasks.stages.selfexplain_prompts import (
    DEFAULT_TEMPLATES,
    SelfExplainConfig,
    render_prompt,
    unit_directions,
)

# the prompt ends on a placeholder
ECHO = {
    "user": 'Say "X".',
    "assistant": '"X',
    "placeholder": "X",
}
LATENTS = [CAT_LATENT, DOG_LATENT]
RELATIVE_SCALES = np.array([0.0, 0.5, 1.0, 4.0])  # x the typical residual norm at the patch layer


def greedy(**kw) -> SelfExplainConfig:
    return SelfExplainConfig(
        **{
            "patch_layer": 0,
            "temperature": 0.0,
            "max_new_tokens": 3,
            "selfexplain_batch_size": 3,
            **kw,
        }
    )


@pytest.fixture(scope="module")
def directions(loaded_planted):
    sae, _ = loaded_planted
    return unit_directions(sae, LATENTS, "decoder")


@pytest.fixture(scope="module")
def echo(tiny_model):
    prompt = render_prompt(tiny_model.tokenizer, ECHO)
    return prompt, RELATIVE_SCALES * typical_norm(tiny_model, prompt, 0)


@pytest.fixture(scope="module")
def echo_sweep(tiny_model, echo, directions):
    prompt, scales = echo
    return sweep(tiny_model, prompt, directions, LATENTS, scales, greedy(), seed=0, progress=False)


def test_planted_decoder_directions_are_the_token_embeddings(tiny_model, tokenizer, directions):
    for row, token in enumerate((CAT, DOG)):
        embedding = tiny_model.W_E[token_id(tokenizer, token)].detach().float()
        assert torch.allclose(directions[row], F.normalize(embedding, dim=0), atol=1e-5)
    assert torch.allclose(directions.norm(dim=-1), torch.ones(2))


def test_patched_token_is_said_back(echo_sweep):
    texts = echo_sweep.texts
    assert [len(per_scale) for per_scale in texts] == [len(RELATIVE_SCALES)] * 2
    # greedy: one sample
    assert all(len(samples) == 1 for per_scale in texts for samples in per_scale)
    for row, word in enumerate(("cat", "dog")):
        said = [samples[0] for samples in texts[row]]
        assert said[0] != f"{word} {word} {word}"  # unpatched (scale 0): something else
        # at a real token's norm and above: the word
        assert said[2:] == [f"{word} {word} {word}"] * 2


def test_self_similarity_rises_with_scale(echo_sweep):
    for row in range(2):
        selfsim = echo_sweep.selfsim[row]
        assert np.all(np.diff(selfsim) >= -1e-6), selfsim
        assert selfsim[-1] > 0.8 > selfsim[0]
    assert echo_sweep.entropy.shape == (2, len(RELATIVE_SCALES))
    assert np.all(echo_sweep.entropy > 0)


def test_kv_cached_sweep_says_what_naive_generation_says(tiny_model, echo, directions, echo_sweep):
    """Batches of 3 rows split the 8 (latent, scale) rows unevenly: rows must stay aligned."""
    prompt, scales = echo
    for row in range(2):
        naive = [
            naive_generate(tiny_model, prompt, directions[row], float(s), greedy()) for s in scales
        ]
        assert [samples[0] for samples in echo_sweep.texts[row]] == naive, row


@pytest.mark.parametrize("template", ["echo", "repeat"])
def test_sweep_measures_the_whole_patched_prompt(template, tiny_model, directions):
    """selfsim and entropy from the shared-prefix cache path equal one cache-free forward of the
    whole prompt with every placeholder patched."""
    prompt = render_prompt(
        tiny_model.tokenizer, ECHO if template == "echo" else DEFAULT_TEMPLATES["repeat"]
    )
    scales = RELATIVE_SCALES * typical_norm(tiny_model, prompt, 0)
    cfg = greedy(max_new_tokens=1)
    res = sweep(tiny_model, prompt, directions, LATENTS, scales, cfg, seed=0, progress=False)
    probe = f"blocks.{(2 * tiny_model.cfg.n_layers) // 3}.hook_resid_post"
    for row in range(2):
        for s, scale in enumerate(scales):

            def patch(resid, hook, vector=directions[row] * float(scale)):
                resid[:, prompt.positions] = vector
                return resid

            logits, resid = patched_forward(tiny_model, prompt, patch, probe)
            sim = F.cosine_similarity(resid[0, -1].float(), directions[row], dim=0)
            logp = F.log_softmax(logits[0, -1].float(), dim=-1)
            assert res.selfsim[row, s] == pytest.approx(float(sim), abs=1e-4)
            assert res.entropy[row, s] == pytest.approx(float(-(logp.exp() * logp).sum()), abs=1e-3)


@torch.no_grad()
def patched_forward(model, prompt, patch, probe):
    """One forward of the whole prompt (no cache), patched at layer 0: (logits, residual at
    `probe`)."""
    captured = {}

    def keep(resid, hook):
        captured["resid"] = resid.detach()

    logits = model.run_with_hooks(
        prompt.tokens[None], fwd_hooks=[("blocks.0.hook_resid_pre", patch), (probe, keep)]
    )
    return logits, captured["resid"]


def test_prompt_is_patched_on_the_first_forward_only(tiny_model, echo, directions):
    """The residual entering the patch layer is seen once for the shared prefix, once per row batch
    for the rest of the prompt (where the patch goes in), then only one new token at a time."""
    prompt, scales = echo
    cfg = greedy(max_new_tokens=3, selfexplain_batch_size=3)
    rows = [(r, s) for r in range(2) for s in range(len(scales))]
    batches = [rows[i : i + 3] for i in range(0, len(rows), 3)]
    split = min(prompt.positions)
    rest = [p - split for p in prompt.positions]
    seen: list[tuple[int, int]] = []
    patched: dict[
        int, torch.Tensor
    ] = {}  # forward number -> layer 0's normalized input at the placeholders

    def count(resid, hook):
        seen.append(tuple(resid.shape[:2]))

    def normalized(x, hook):  # after the patch (hooks on the next hook point run later)
        if x.shape[1] > 1:
            patched[len(seen) - 1] = x[:, rest].detach().clone()

    with tiny_model.hooks(
        fwd_hooks=[("blocks.0.hook_resid_pre", count), ("blocks.0.ln1.hook_normalized", normalized)]
    ):
        sweep(tiny_model, prompt, directions, LATENTS, scales, cfg, seed=0, progress=False)

    assert seen[0] == (1, split)  # the shared prefix: no placeholder in it
    firsts = [i for i, shape in enumerate(seen) if shape[1] > 1]
    assert [seen[i] for i in firsts] == [(1, split)] + [
        (len(b), len(prompt.tokens) - split) for b in batches
    ]
    assert all(shape[1] == 1 for i, shape in enumerate(seen) if i not in firsts)  # generation steps
    # (the loop also runs one forward after the last token, whose logits go unused)
    assert len(seen) - len(firsts) <= len(batches) * cfg.max_new_tokens
    # what the first forward of each batch carried at the placeholders: the row's scaled direction
    assert sorted(patched) == firsts
    for batch, i in zip(batches, firsts[1:], strict=False):
        got = patched[i]
        for k, (r, s) in enumerate(batch):
            if scales[s] > 0:
                cos = F.cosine_similarity(got[k], directions[r][None], dim=-1)
                assert torch.all(cos > 0.999), (r, s, cos)


def test_sampling_is_seeded(tiny_model, echo, directions):
    prompt, scales = echo
    cfg = greedy(temperature=1.0, n_samples=2, max_new_tokens=2)
    first = sweep(tiny_model, prompt, directions, LATENTS, scales[:2], cfg, seed=5, progress=False)
    again = sweep(tiny_model, prompt, directions, LATENTS, scales[:2], cfg, seed=5, progress=False)
    assert first.texts == again.texts
    assert all(len(samples) == 2 for per_scale in first.texts for samples in per_scale)


# ------------------------------------------------------------------------------------ choosing
# scales
def test_composite_ranks_scales_by_selfsim_and_low_entropy():
    selfsim = np.array([0.1, 0.5, 0.9, 0.7])
    entropy = np.array([5.0, 1.0, 3.0, 2.0])
    # minmax: selfsim [0, .5, 1, .75], entropy [1, 0, .5, .25]; 0.4 * s - 0.6 * e
    assert composite(selfsim, entropy, 0.4) == pytest.approx([-0.6, 0.2, 0.1, 0.15])
    assert best_scales(selfsim, entropy, 0.4, 3) == [1, 3, 2]
    assert best_scales(selfsim, entropy, 1.0, 2) == [2, 3]  # selfsim alone
    assert best_scales(selfsim, entropy, 0.0, 2) == [1, 3]  # entropy alone
    assert best_scales(selfsim, entropy, 0.4, 10) == [1, 3, 2, 0]


def test_minmax_of_a_constant_is_zero():
    assert minmax(np.full(5, 3.2)).tolist() == [0.0] * 5
    assert minmax(np.array([2.0, 4.0, 3.0])).tolist() == [0.0, 1.0, 0.5]
    flat = composite(np.full(4, 0.3), np.full(4, 2.0), 0.4)
    assert flat.tolist() == [0.0] * 4
    # ties keep sweep order
    assert best_scales(np.full(4, 0.3), np.full(4, 2.0), 0.4, 3) == [
        0,
        1,
        2,
    ]


# ------------------------------------------------------------------------------------ prompts
def test_render_prompt_finds_every_placeholder(tokenizer):
    prompt = render_prompt(tokenizer, DEFAULT_TEMPLATES["repeat"])
    x = token_id(tokenizer, "X")
    assert len(prompt.positions) == 3  # one in the question, two in the answer's start
    assert all(int(prompt.tokens[p]) == x for p in prompt.positions)
    text = tokenizer.decode(prompt.tokens)
    assert text.startswith("<|im_start|>") and text.endswith('"X", "X", "')
    neutral = render_prompt(tokenizer, DEFAULT_TEMPLATES["neutral"])
    assert all(int(neutral.tokens[p]) == tokenizer.unk_token_id for p in neutral.positions)
    assert len(neutral.positions) == 2


def test_render_prompt_refuses_a_model_without_chat_template(tiny_model_dir):
    from transformers import AutoTokenizer

    base = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    base.chat_template = None
    with pytest.raises(SaeInterpError, match="no chat template"):
        render_prompt(base, DEFAULT_TEMPLATES["meaning"])


def test_render_prompt_refuses_a_multi_token_placeholder(tokenizer):
    template = {"user": 'What is "zqxjvw"?', "assistant": '"zqxjvw" is "', "placeholder": "zqxjvw"}
    with pytest.raises(SaeInterpError, match="single-token placeholder"):
        render_prompt(tokenizer, template)


def test_render_prompt_refuses_a_placeholder_merged_into_a_word(tokenizer):
    template = {"user": "What is Xylophone?", "assistant": '"X" is "', "placeholder": "X"}
    with pytest.raises(SaeInterpError, match="merges with its neighbours"):
        render_prompt(tokenizer, template)


# ------------------------------------------------------------------------------------ the real
# model
@pytest.mark.slow
def test_bundled_model_repeats_the_patched_token():
    """SmolLM2-135M-Instruct, W_E[" cat"] patched at layer 0 into the repeat template's
    placeholders."""
    from sae_interp_tasks.stages.subject import load_subject

    model = load_subject("bundled")
    prompt = render_prompt(model.tokenizer, DEFAULT_TEMPLATES["repeat"])
    cat = F.normalize(model.W_E[token_id(model.tokenizer, CAT)].detach().float(), dim=0)[None]
    scales = np.array([0.0, 1.0, 4.0]) * typical_norm(model, prompt, 0)
    res = sweep(
        model,
        prompt,
        cat,
        [0],
        scales,
        greedy(max_new_tokens=3, selfexplain_batch_size=8),
        seed=0,
        progress=False,
    )
    said = [samples[0] for samples in res.texts[0]]
    assert "cat" not in said[0].lower()  # scale 0 (placeholders zeroed): something else
    assert any("cat" in text.lower() for text in said[1:]), said
    assert res.selfsim[0, -1] > res.selfsim[0, 0]


# ------------------------------------------------------------------------------------ settings
def test_patch_layer_zero_is_a_valid_setting():
    """The patch goes in "at an early layer (default 2; 0 works too)" (docs/methods.md): layer 0 is
    a valid patch_layer and probe_layer, while counts such as n_scales stay positive."""
    import sae_interp_tasks.tasks  # noqa: F401  (declares the built-in task kinds)
    from sae_interp_tasks.registry import settings_for

    cfg = settings_for("selfexplain", {"patch_layer": 0, "probe_layer": 0}).selfexplain
    assert (cfg.patch_layer, cfg.probe_layer) == (0, 0)
    with pytest.raises(SaeInterpError, match="n_scales"):
        settings_for("selfexplain", {"n_scales": 0})


def test_null_threshold_is_the_quantile_of_random_directions_peaks(
    tiny_model, echo, directions, echo_sweep
):
    """The calibrated failure threshold: random unit directions swept like latents (selfsim
    only)."""
    from sae_interp_tasks.stages.selfexplain import null_selfsim_threshold

    prompt, scales = echo
    measured = sweep(
        tiny_model,
        prompt,
        directions,
        LATENTS,
        scales,
        greedy(),
        seed=0,
        progress=False,
        generate=False,
    )
    assert np.allclose(measured.selfsim, echo_sweep.selfsim, atol=1e-5)
    assert np.allclose(measured.entropy, echo_sweep.entropy, atol=1e-4)
    assert all(t == [] for per_scale in measured.texts for t in per_scale)  # nothing generated

    cfg = greedy(n_null_directions=8, null_quantile=0.5)
    threshold = null_selfsim_threshold(tiny_model, prompt, scales, cfg, seed=3)
    assert threshold == null_selfsim_threshold(tiny_model, prompt, scales, cfg, seed=3)
    randoms = F.normalize(
        torch.randn(8, tiny_model.cfg.d_model, generator=torch.Generator().manual_seed(3)), dim=-1
    )
    peaks = sweep(
        tiny_model, prompt, randoms, list(range(8)), scales, cfg, seed=3, progress=False
    ).selfsim.max(1)
    assert threshold == pytest.approx(float(np.median(peaks)), abs=1e-5)
    assert (
        null_selfsim_threshold(
            tiny_model, prompt, scales, greedy(n_null_directions=8, null_quantile=0.9), 3
        )
        >= threshold
    )
    # in this world whatever is patched at the last position is what the probe sees: random
    # directions peak as high as the planted ones, so the threshold is high too
    assert threshold > 0.8


def test_judge_reads_yes_no_and_leaves_other_answers_out(tmp_path):
    """The optional LLM judge: 'yes' -> 1, 'no' -> 0, anything else NaN (not counted either way)."""
    import math

    from sae_interp_tasks.clients import ClientConfig, Completion, LLMClient
    from sae_interp_tasks.clients.cache import CompletionCache
    from sae_interp_tasks.scorers.agreement import judge_agreement

    class Scripted(LLMClient):
        supports_logprobs = False

        def __init__(self):
            super().__init__(ClientConfig(kind="scripted"), CompletionCache(tmp_path))
            self.name, self.asked = "scripted:judge", []

        def _answer(self, prompts, on_answer):
            for i, prompt in enumerate(prompts):
                user = prompt.messages[-1][1]
                self.asked.append(user)
                text = (
                    "Yes."
                    if "cat" in user and "feline" in user
                    else "maybe"
                    if "unsure" in user
                    else "No"
                )
                on_answer(i, Completion(text=text))

    client = Scripted()
    votes = judge_agreement(
        client,
        [("the word cat", "feline words"), ("the word cat", "numbers"), ("unsure", "unsure")],
    )
    assert votes[:2] == [1.0, 0.0] and math.isnan(votes[2])
    assert "Description A: the word cat\nDescription B: feline words" in client.asked[0]
