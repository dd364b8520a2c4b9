"""Explanations written elsewhere as a run's explanations (`explainer: file`): read once per run,
checked against the SAE being scored, their coverage recorded in the results."""

from __future__ import annotations

import logging

from sae_interp_tasks.errors import SaeInterpError
from sae_interp_tasks.harness.context import RunContext
from sae_interp_tasks.stages.explainers import ExplainerConfig

log = logging.getLogger(__name__)


def file_key(cfg: ExplainerConfig) -> tuple | None:
    """What names an explanations file's reading (None for other explainers): part of the
    selection's key, since the latents drawn are those the file covers."""
    if cfg.explainer != "file":
        return None
    return (cfg.explanations_path, cfg.explanations_module, cfg.explanations_model)


def explanation_file(ctx: RunContext, cfg: ExplainerConfig):
    """The explanations `explainer: file` reads (None for other explainers), once per run, checked
    against the SAE; how many latents they cover goes into the results (`config.sae_explanations`)
    and one log line."""
    if cfg.explainer != "file":
        return None
    from sae_interp_tasks.stages.explanation_files import check_against, read_explanations
    from sae_interp_tasks.stages.neuronpedia_exports import fetch_export

    def load():
        path = cfg.explanations_path
        if path == "neuronpedia":  # the SAE's own export, fetched once into the cache
            path = str(fetch_export(neuronpedia_id(ctx)))
        found = read_explanations(path, cfg.explanations_module, cfg.explanations_model)
        check_against(found, ctx.sae_identity(), ctx.info.d_sae)
        ctx.store.notes.setdefault("explanations", {})[cfg.explanations_path] = {
            "layout": found.layout,
            "covered": len(found.texts),
            "of": int(ctx.info.d_sae),
            "empty_skipped": found.empty,
            **found.identity,
        }
        log.warning(
            "explanations from %s (%s): %d of %d latents covered%s; latents are drawn from those",
            cfg.explanations_path,
            found.layout,
            len(found.texts),
            ctx.info.d_sae,
            f", {found.empty} empty ones skipped" if found.empty else "",
        )
        return found

    return ctx.store.compute_once(("explanation-file", *file_key(cfg)), load)


def neuronpedia_id(ctx: RunContext) -> str:
    found = ctx.sae_identity().get("neuronpedia_id")
    if not found:
        raise SaeInterpError(
            f"{ctx.info.label} names no Neuronpedia id (an sae_lens release with a Neuronpedia "
            "page does, in its metadata's neuronpedia_id); pass explanations_path=FILE instead"
        )
    return str(found)
