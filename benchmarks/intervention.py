"""Intervention scoring speed on the embedded default: latents per minute, ours against a naive
loop.

Both do the same work per latent: the strength search to the target KL over the scoring prompts,
one clean and one steered continuation per scoring prompt, and the surprisal of the latent's
explanation after each continuation (the in-process SmolLM2-135M as the base LM).
- ours: the search evaluates every scoring prompt of several latents in one batch per step,
  against the prompts' KV caches (a step reruns only the last prompt token); generation is batched
  across latents and prompts on KV caches; the surprisal prompt's 4-shot prefix runs once and its
  KV cache serves every passage;
- naive: one latent and one prompt at a time, a full forward of the whole prompt per search step
  and per generated token, and a full forward of the whole surprisal prompt per passage.
Same latents, prompts, random draws and strengths; the naive loop runs on fewer latents (it is
slow) and its rate is per latent, as ours is.

    python benchmarks/intervention.py --latents 6 --naive-latents 1   # --naive-latents 0: ours
    alone, by stage
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import _common


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latents", type=int, default=6)
    parser.add_argument("--naive-latents", type=int, default=1)
    parser.add_argument("--n-tokens", type=int, default=32768)
    parser.add_argument(
        "--save-as", default="intervention_speed", help="results/<name>.json (default: %(default)s)"
    )
    args = parser.parse_args()

    import torch
    import torch.nn.functional as F

    from sae_interp_tasks.clients import ClientConfig, make_client
    from sae_interp_tasks.scorers.intervention import surprisal_prefix, surprisal_request
    from sae_interp_tasks.stages import steering as iv
    from sae_interp_tasks.stages.activations import PassConfig, run_activation_pass
    from sae_interp_tasks.stages.corpus import CorpusSpec, token_contexts

    model, sae, info = _common.demo()
    cfg = iv.InterventionConfig()
    pass_cfg = PassConfig(n_tokens=args.n_tokens)
    candidates = torch.randperm(info.d_sae, generator=torch.Generator().manual_seed(0))[
        : 8 * args.latents
    ]
    state = run_activation_pass(
        model, sae, info, CorpusSpec(), pass_cfg, 0, latents=candidates, progress=False
    )
    contexts = torch.stack(
        list(token_contexts(CorpusSpec(), model.tokenizer, args.n_tokens, 256, True, 0))
    )
    prompts = {}
    for lat in candidates.tolist():
        found = iv.intervention_prompts(
            state.record(lat), cfg, 0, lambda c: contexts[c].numpy(), 32, 8
        )
        if found is not None:
            prompts[lat] = found
        if len(prompts) == args.latents:
            break
    latents = list(prompts)
    stop = {model.tokenizer.eos_token_id}

    def decode(ids) -> str:
        return model.tokenizer.decode(list(ids), skip_special_tokens=True)

    explanation = (
        "the tokens of this latent"  # scoring cost does not depend on the explanation's meaning
    )
    with tempfile_cache() as cache_dir:
        client = make_client(ClientConfig(kind="hf", model=info.model_name), cache_dir)

        start = time.perf_counter()
        groups = [
            latents[i : i + max(1, cfg.intervention_batch_size // cfg.n_prompts)]
            for i in range(0, len(latents), max(1, cfg.intervention_batch_size // cfg.n_prompts))
        ]
        steered = {}
        for group in groups:
            steered.update(
                iv.steer_latents(
                    model,
                    info.hook_name,
                    group,
                    prompts,
                    iv.steering_directions(sae, group),
                    cfg,
                    0,
                    stop,
                )
            )
        pairs = []
        for lat in latents:
            res = steered[(lat, cfg.targets[0])]
            for p, c, s in zip(res.prompts, res.clean, res.steered, strict=True):
                pairs += [
                    surprisal_request(decode(p.tokens), decode(c), explanation),
                    surprisal_request(decode(p.tokens), decode(s), explanation),
                ]
        steering_done = time.perf_counter()
        client.continuation_logprobs(surprisal_prefix(), pairs)
        ours = time.perf_counter() - start
        stages = {
            "steering (search, promoted tokens, continuations)": steering_done - start,
            f"surprisal ({len(pairs)} passages)": ours - (steering_done - start),
        }
        reached = sum(steered[(lat, cfg.targets[0])].reached for lat in latents)

    naive_latents = [lat for lat in latents if steered[(lat, cfg.targets[0])].reached][
        : args.naive_latents
    ]
    start = time.perf_counter()
    if naive_latents:
        for lat, vector in zip(
            naive_latents, iv.steering_directions(sae, naive_latents), strict=True
        ):
            naive_latent(
                model,
                info.hook_name,
                prompts[lat][0],
                vector,
                steered[(lat, cfg.targets[0])],
                cfg,
                client,
                decode,
                explanation,
                F,
            )
    naive = time.perf_counter() - start

    rows = [
        (
            "ours: batched search on KV caches, batched generation, shared few-shot prefix",
            len(latents),
            ours,
        )
    ]
    if naive_latents:
        rows.append(
            (
                "naive: one latent and one prompt at a time, full forwards, no prefix cache",
                len(naive_latents),
                naive,
            )
        )
    print(
        f"intervention scoring, embedded default, {cfg.n_intervention_prompts} scoring prompts of "
        "up to "
        f"{cfg.prompt_tokens} tokens, {cfg.continuation_tokens} new tokens, surprisal on the "
        "in-process model; "
        f"{_common.machine()}; {reached}/{len(latents)} latents reached the target\n"
    )
    print("| method | latents | seconds | latents / min |\n|---|---:|---:|---:|")
    for name, n, seconds in rows:
        print(f"| {name} | {n} | {seconds:.1f} | {60 * n / seconds:.2f} |")
    print(
        "\nours, by stage: "
        + "; ".join(f"{name} {seconds:.1f} s" for name, seconds in stages.items())
    )
    if naive_latents:
        print(f"\nspeedup: {(len(latents) / ours) / (len(naive_latents) / naive):.1f}x")
    _common.save(
        args.save_as,
        {
            "rows": [{"method": m, "latents": n, "seconds": s} for m, n, s in rows],
            "ours_stages_seconds": stages,
        },
    )


def naive_latent(model, hook, prompts, vector, found, cfg, client, decode, explanation, F) -> None:
    """The same work as ours for one latent, done plainly."""
    import torch

    from sae_interp_tasks.scorers.intervention import surprisal_prefix, surprisal_request
    from sae_interp_tasks.stages import steering as iv

    def last_logp(tokens, scale):
        def edit(act, hook):
            act = act.clone()
            act[:, -1] += scale * vector
            return act

        with torch.no_grad(), model.hooks(fwd_hooks=[(hook, edit)] if scale else []):
            return F.log_softmax(model(torch.as_tensor(tokens)[None])[0, -1].float(), -1)

    for strength, _ in found.history:  # the same search steps, one prompt at a time
        for p in prompts:
            clean, steered = last_logp(p.tokens, 0.0), last_logp(p.tokens, strength)
            float((clean.exp() * (clean - steered)).sum())
    draws = iv.coupled_uniforms(0, found.latent, len(prompts), cfg.continuation_tokens)
    texts = []
    for i, p in enumerate(prompts):
        clean = iv.naive_steered_generate(model, hook, p.tokens, vector, 0.0, draws[i], cfg)
        steered = iv.naive_steered_generate(
            model, hook, p.tokens, vector, found.strength, draws[i], cfg
        )
        texts.append((decode(p.tokens), decode(clean), decode(steered)))
    tokenizer, hf = client._tokenizer, client._model
    for prompt, clean, steered in texts:  # each surprisal prompt in full: the prefix every time
        for continuation in (clean, steered):
            context, target = surprisal_request(prompt, continuation, explanation)
            ids = tokenizer(surprisal_prefix() + context + target, return_tensors="pt").input_ids
            with torch.no_grad():
                hf(ids)


def tempfile_cache():
    import tempfile

    return tempfile.TemporaryDirectory()


if __name__ == "__main__":
    main()
