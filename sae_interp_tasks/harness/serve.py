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
    slots = _slots_per_request(ctx, requests)
    estimate_llm_use(ctx, requests, slots)
    responses = [_answer(ctx, r, n) for r, n in zip(requests, slots, strict=True)]
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
    explained = registry.lookup(r.kind).reads_explanations(r.settings)
    run = run_stages.latent_run(ctx, r.settings, r.seed, n_slots, r.kind, explained)
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


def estimate_llm_use(ctx: RunContext, requests: list[InterpretRequest], slots: list[int]) -> None:
    """Before the first LLM call: the one estimate line of the run's LLM use (and the budget's
    stop); `slots[i]`: how many slots request i's latent selection fills."""
    estimates: dict[str, costs.Estimate] = {}
    counter = costs.PromptCounter(ctx.tokenizer)
    explained: set[str] = set()
    for r, n_slots in zip(requests, slots, strict=True):
        if r.kind in estimates:
            continue
        s = r.settings
        chosen, splits = run_stages.example_splits(ctx, s, r.seed, n_slots)
        run = run_stages.LatentRun(
            ctx, s, r.seed, chosen, splits, {}, run_stages.owned_latents(ctx, chosen)
        )
        estimate = costs.Estimate()
        spec = registry.lookup(r.kind)
        explanations = group_key(run_stages.explanations_key(s, r.seed))
        # the shared explanations are estimated once, by the first kind that reads them
        if spec.reads_explanations(s) and explanations not in explained:
            explained.add(explanations)
            estimate = estimate.add(costs.explainer_estimate(run, counter))
        estimates[r.kind] = estimate.add(spec.estimate(run, counter)) if spec.estimate else estimate
    budgets = [
        r.settings.budget.max_llm_tokens
        for r in requests
        if r.settings.budget.max_llm_tokens is not None
    ]
    costs.announce(estimates, min(budgets) if budgets else None)


def _slots_per_request(ctx: RunContext, requests: list[InterpretRequest]) -> list[int]:
    """For each request, the most slots any task of the run asks of its latent selection (each
    selection's key computed once); under a launcher every rank holds a share of the slots, so the
    ranks agree on the pool to select from."""
    by_selection = grouped(requests, lambda r: run_stages.selection_key(r.settings, r.seed))
    n_slots = {key: max(requests[i].slot + 1 for i in idx) for key, idx in by_selection.items()}
    if ctx.world_size > 1:
        for part in ctx.all_gather_object(n_slots):
            for key, n in part.items():
                n_slots[key] = max(n_slots.get(key, 0), n)
    slots = [0] * len(requests)
    for key, indices in by_selection.items():
        for i in indices:
            slots[i] = n_slots[key]
    return slots
