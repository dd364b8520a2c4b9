"""The handler every latent task kind declares (`serve=serve_latents`): it answers the docs of all
latent tasks of a run together, so the shared stages run once.

    SAEBackend.interpret -> serve_latents
        -> run_stages.latent_run   pass, selection, splits, explanations (once per run)
        -> run_stages.scores       the kind's scorer (tasks/<kind>.py), once per kind and settings
"""

from __future__ import annotations

import dataclasses
from collections import Counter

from sae_interp_tasks import registry
from sae_interp_tasks.harness import costs, run_stages
from sae_interp_tasks.harness.context import RunContext
from sae_interp_tasks.harness.request import InterpretRequest, group_key, grouped
from sae_interp_tasks.records import Response


def serve_latents(ctx: RunContext, requests: list[InterpretRequest]) -> list[Response]:
    """Answer the docs of every latent task of a run: the shared stages once, then each kind's
    scores."""
    n_slots = _slots_per_selection(ctx, requests)
    estimate_llm_use(ctx, requests, n_slots)
    responses = [_answer(ctx, r, n_slots[_selection(r)]) for r in requests]
    # each kind's LLM cost, spread over its docs (they sum back to the kind's total)
    docs = Counter(r.kind for r in requests)
    return [
        dataclasses.replace(
            response,
            metrics={**response.metrics, **ctx.ledger.usage_of(r.kind, docs[r.kind])},
        )
        for r, response in zip(requests, responses, strict=True)
    ]


def _answer(ctx: RunContext, r: InterpretRequest, n_slots: int) -> Response:
    run = run_stages.latent_run(ctx, r.settings, r.seed, n_slots, r.kind)
    latent, skipped = run.selection.latents[r.slot], run.selection.skipped_before[r.slot]
    if latent is None:
        return Response(metrics={}, latent=None, skipped_before=skipped)
    scored = run_stages.scores(run, r.kind)[latent]
    detail = registry.lookup(r.kind).task_class.response_detail(scored, run)
    return Response(
        metrics=scored.metrics,
        latent=latent,
        skipped_before=skipped,
        detail=detail,
        stats=scored.stats,
    )


def _selection(r: InterpretRequest) -> str:
    """The key of the latent selection a request's doc slot is filled from."""
    return group_key(run_stages.selection_key(r.settings, r.seed))


def estimate_llm_use(
    ctx: RunContext, requests: list[InterpretRequest], n_slots: dict[str, int]
) -> None:
    """Before the first LLM call: the one estimate line of the run's LLM use (and the budget's
    stop)."""
    estimates: dict[str, costs.Estimate] = {}
    counter = costs.PromptCounter(ctx.tokenizer)
    explained: set[str] = set()
    for r in requests:
        if r.kind in estimates:
            continue
        s = r.settings
        chosen, splits = run_stages.example_splits(ctx, s, r.seed, n_slots[_selection(r)])
        run = run_stages.LatentRun(
            ctx, s, r.seed, chosen, splits, {}, run_stages.owned_latents(ctx, chosen)
        )
        estimate = costs.Estimate()
        explanations = group_key(run_stages.explanations_key(s, r.seed))
        if explanations not in explained:  # the shared explanations, once
            explained.add(explanations)
            estimate = estimate.add(costs.explainer_estimate(run, counter))
        spec = registry.lookup(r.kind)
        estimates[r.kind] = estimate.add(spec.estimate(run, counter)) if spec.estimate else estimate
    budgets = [
        r.settings.budget.max_llm_tokens
        for r in requests
        if r.settings.budget.max_llm_tokens is not None
    ]
    costs.announce(estimates, min(budgets) if budgets else None)


def _slots_per_selection(ctx: RunContext, requests: list[InterpretRequest]) -> dict[str, int]:
    """Per latent selection, the most slots any task of the run asks for; under a launcher every
    rank holds a share of the slots, so the ranks agree on the pool to select from."""
    by_selection = grouped(requests, lambda r: run_stages.selection_key(r.settings, r.seed))
    n_slots = {key: max(requests[i].slot + 1 for i in idx) for key, idx in by_selection.items()}
    if ctx.world_size > 1:
        for part in ctx.all_gather_object(n_slots):
            for key, n in part.items():
                n_slots[key] = max(n_slots.get(key, 0), n)
    return n_slots
