"""A second SAE in a run: the reference a similarity task compares the evaluated SAE with, loaded
once with the evaluated SAE's checks, and (for the semantic overlap) its matched latents explained
by the run's own explainer from the reference's own activation pass.
"""

from __future__ import annotations

import dataclasses

from sae_interp_tasks.harness import run_stages
from sae_interp_tasks.harness.context import RunContext
from sae_interp_tasks.harness.run_stages import LatentRun
from sae_interp_tasks.records import Explanation
from sae_interp_tasks.stages.explainers import WEIGHT_EXPLAINERS, explain


def reference(ctx: RunContext, cfg):
    """The reference SAE a similarity task names (stages.similarity.SimilarityConfig), loaded once
    per run with the evaluated SAE's checks; its identity is recorded in the results file
    (`config.sae_references`)."""
    from sae_interp_tasks.stages.saes import load_reference

    args = cfg.reference_source()

    def load():
        ref, info = load_reference(args, ctx.sae, ctx.info, cfg.reference_other_hook, ctx.device)
        ctx.store.notes.setdefault("references", {})[cfg.reference] = {
            "label": info.label,
            "fingerprint": info.fingerprint,
            "d_sae": int(info.d_sae),
            "hook_name": info.hook_name,
            "architecture": info.architecture,
        }
        return ref, info

    return ctx.store.compute_once(("reference", cfg.reference), load)


def reference_explanations(
    run: LatentRun, ref, info, partners: dict[int, int]
) -> dict[int, Explanation]:
    """The explanations of the reference latents in `partners` (latent of the SAE -> its matched
    reference latent, for every live latent of the run, so every process runs the same pass), by
    the run's explainer from the reference's own activation pass over the run's corpus. A partner
    with fewer than min_examples activating windows there is left out (counted, never explained
    by something else)."""
    ctx, s = run.context, run.settings
    wanted = sorted(set(partners.values()))
    key = (
        "reference-explanations",
        run.settings.similarity.reference,
        *run_stages.splits_key(s, run.seed),
        s.explainer,
        tuple(wanted),
    )

    def build() -> dict[int, Explanation]:
        if not wanted:
            return {}
        splits = _reference_splits(run, ref, info, wanted)
        mine = sorted({partners[lat] for lat in run.owned if partners.get(lat) in splits})
        lens = None
        if s.explainer.explainer in WEIGHT_EXPLAINERS:
            from sae_interp_tasks.stages.lens import WeightLens

            lens = WeightLens(ctx.model, ref, ctx.tok_decode)
        explained = explain(
            [splits[lat] for lat in mine],
            s.explainer,
            run_stages.explainer_client(ctx, s.explainer),
            ctx.tok_decode,
            lens,
        )
        return run_stages.gathered(ctx, explained)

    return ctx.store.compute_once(key, build)


def _reference_splits(run: LatentRun, ref, info, wanted: list[int]) -> dict:
    """The reference latents' example splits from the reference's own activation pass over the
    run's corpus (the latents named exactly, so a dead one is left out)."""
    ctx, s = run.context, run.settings
    named = dataclasses.replace(s.selection, latents=wanted)
    chosen = run_stages.select_for(ctx, ref, info, s, named, len(wanted), run.seed)
    return run_stages.splits_for(ctx, chosen, s, run.seed)
