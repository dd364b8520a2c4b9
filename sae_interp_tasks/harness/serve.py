"""The handler every latent task kind declares (`serve=serve_latents`): it answers the docs of all
latent tasks of a run together, so the shared stages run once.

    SAEBackend.interpret -> serve_latents -> memo.latent_run (pass, selection, splits, explanations)
                                          -> memo.scores -> the kind's scorer (tasks/<kind>.py)
"""

from __future__ import annotations

import dataclasses
from collections import Counter

from sae_interp_tasks import registry
from sae_interp_tasks.caching import canonical
from sae_interp_tasks.harness import costs, memo
from sae_interp_tasks.harness.context import RunContext
from sae_interp_tasks.records import Response


def serve_latents(ctx: RunContext, payloads: list[dict]) -> list[Response]:
    """Answer the docs of every latent task of a run: the shared stages once, then each kind's
    scores."""
    typed = [registry.settings_for(p["kind"], p["settings"]) for p in payloads]
    n_slots = _slots_per_selection(ctx, payloads, typed)
    slots_of = lambda p, s: n_slots[canonical(*memo.selection_key(s, p["seed"]))]  # noqa: E731
    _foresee(ctx, payloads, typed, slots_of)
    responses = []
    for p, s in zip(payloads, typed, strict=True):
        run = memo.latent_run(ctx, s, p["seed"], slots_of(p, s), p["kind"])
        slot = p["doc"]["slot"]
        latent, skipped = run.selection.latents[slot], run.selection.skipped_before[slot]
        if latent is None:
            responses.append(Response(metrics={}, latent=None, skipped_before=skipped))
            continue
        scored = memo.scores(run, p["kind"])[latent]
        detail = registry.lookup(p["kind"]).task_class.response_detail(scored, run)
        responses.append(
            Response(
                metrics=scored.metrics,
                latent=latent,
                skipped_before=skipped,
                detail=detail,
                stats=scored.stats,
            )
        )
    docs = Counter(
        p["kind"] for p in payloads
    )  # each kind's LLM cost, spread over its docs (they sum back)
    return [
        dataclasses.replace(
            r, metrics={**r.metrics, **costs.usage_of(ctx, p["kind"], docs[p["kind"]])}
        )
        for p, r in zip(payloads, responses, strict=True)
    ]


def _foresee(ctx: RunContext, payloads: list[dict], typed: list, slots_of) -> None:
    """Before the first LLM call: the one estimate line of the run's LLM use (and the budget's
    stop)."""
    estimates: dict[str, costs.Estimate] = {}
    counter = costs.PromptCounter(ctx.tokenizer)
    explained: set[str] = set()
    for p, s in zip(payloads, typed, strict=True):
        if p["kind"] in estimates:
            continue
        chosen, splits = memo.example_splits(ctx, s, p["seed"], slots_of(p, s))
        run = memo.LatentRun(ctx, s, p["seed"], chosen, splits, {}, memo.owned_latents(ctx, chosen))
        estimate = costs.Estimate()
        if (
            canonical(*memo.explanations_key(s, p["seed"])) not in explained
        ):  # the shared explanations, once
            explained.add(canonical(*memo.explanations_key(s, p["seed"])))
            estimate = estimate.add(costs.explainer_estimate(run, counter))
        spec = registry.lookup(p["kind"])
        estimates[p["kind"]] = (
            estimate.add(spec.estimate(run, counter)) if spec.estimate else estimate
        )
    budgets = [s.budget.max_llm_tokens for s in typed if s.budget.max_llm_tokens is not None]
    costs.announce(estimates, min(budgets) if budgets else None)


def _slots_per_selection(ctx: RunContext, payloads: list[dict], typed: list) -> dict[str, int]:
    """Per latent selection, the most slots any task of the run asks for; under a launcher every
    rank holds a share of the slots, so the ranks agree on the pool to select from."""
    n_slots: dict[str, int] = {}
    for p, s in zip(payloads, typed, strict=True):
        key = canonical(*memo.selection_key(s, p["seed"]))
        n_slots[key] = max(n_slots.get(key, 0), p["doc"]["slot"] + 1)
    if ctx.world_size > 1:
        for part in ctx.all_gather_object(n_slots):
            for key, n in part.items():
                n_slots[key] = max(n_slots.get(key, 0), n)
    return n_slots
