"""sae_selfexplain: self-explanations of the selected latents, and their agreement with auto-interp.

Uses the same latent selection, test windows and auto-interp explanations as sae_detection
(shared through the backend's memo), so agreement is measured latent by latent:
  1. retrieval: cosine similarity between every self-explanation and every auto-interp
     explanation (sentence embeddings); per latent the AUROC of its matched pair against the
     mismatched ones, and whether the match ranks first (top-1; chance 1/N);
  2. judge (optional): an LLM says whether the two explanations describe the same thing;
  3. the self-explanation's own detection score, with sae_detection's scorer and test windows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from sae_interp_tasks import metrics, settings as settings_mod
from sae_interp_tasks.clients.base import Prompt
from sae_interp_tasks.examples import ExampleConfig
from sae_interp_tasks.explainers import ExplainerConfig
from sae_interp_tasks.records import Explanation, Response
from sae_interp_tasks.scorers import classifier
from sae_interp_tasks.scorers.embedding import EmbeddingConfig, embed, load_embedder
from sae_interp_tasks.selfexplain import (SelfExplainConfig, best_scales, render_prompt, sweep, typical_norm,
                                          unit_directions)
from sae_interp_tasks.settings import CorpusSettings, LatentSelection, PassSettings


@dataclass(frozen=True)
class AgreementSettings:
    judge: bool = False  # ask the scorer LLM whether self- and auto-explanation describe the same thing
    selfexplain_detection: bool = True  # score the self-explanation with sae_detection's scorer


def _register():
    from sae_interp_tasks.pipeline import NegativeSettings

    settings_mod.register_task_configs(
        "selfexplain", CorpusSettings, PassSettings, LatentSelection, ExampleConfig, NegativeSettings,
        ExplainerConfig, classifier.ScorerConfig, EmbeddingConfig, SelfExplainConfig, AgreementSettings)


_register()


def _model(backend, cfg: SelfExplainConfig):
    from sae_interp_tasks.pipeline import _memo
    from sae_interp_tasks.subject import load_subject

    if cfg.selfexplain_model is None:
        return backend.model
    model = _memo(backend, f"selfexplain-model:{cfg.selfexplain_model}",
                  lambda: load_subject(cfg.selfexplain_model, device=backend.device))
    if model.cfg.d_model != backend.info.d_in:
        from sae_interp_tasks.errors import SaeInterpError

        raise SaeInterpError(f"selfexplain_model {cfg.selfexplain_model} has d_model={model.cfg.d_model} but the SAE "
                             f"reads {backend.info.d_in}-wide activations; use an instruction-tuned variant of the SAE's model")
    return model


def context_examples(record, decode, n: int, placeholder: str = "X") -> str:
    """The latent's top windows with the most active token replaced by the placeholder, one per line."""
    lines = []
    for ex in record.top[:n]:
        toks = ex.tokens.tolist()
        peak = int(np.argmax(ex.acts))
        lead = " " if decode([toks[peak]]).startswith(" ") else ""
        text = decode(toks[:peak]) + f'{lead}"{placeholder}"' + decode(toks[peak + 1:])
        lines.append("- " + " ".join(text.split()))
    return "\n".join(lines)


def run_sweeps(backend, latents: list[int], selection, cfg: SelfExplainConfig, seed: int) -> tuple[dict, float]:
    """{template: {latent: per-latent sweep summary}} for every template in use, and the peak
    self-similarity below which a latent counts as a failure (calibrated on the explain template)."""
    from sae_interp_tasks.selfexplain import null_selfsim_threshold

    model = _model(backend, cfg)
    directions = unit_directions(backend.sae, latents, cfg.direction)
    templates = cfg.template_map()

    def prompt_and_scales(template: dict, lat: int | None = None):
        """The rendered prompt (an in-context template shows `lat`'s top windows) and its absolute scales."""
        if "{examples}" in template["user"]:
            text = context_examples(selection.state.record(lat), backend.tok_decode, cfg.n_context_examples)
            prompt = render_prompt(model.tokenizer, template, text, n_inserted=text.count("\n") + 1)
        else:
            prompt = render_prompt(model.tokenizer, template)
        return prompt, np.linspace(cfg.scale_min, cfg.scale_max, cfg.n_scales) * typical_norm(model, prompt, cfg.patch_layer)

    out = {}
    for name in dict.fromkeys(list(cfg.use_templates) + [cfg.explain_template]):
        template = templates[name]
        if "{examples}" in template["user"]:  # one prompt per latent
            per_latent = {}
            for i, lat in enumerate(latents):
                prompt, scales = prompt_and_scales(template, lat)
                res = sweep(model, prompt, directions[i:i + 1], [lat], scales, cfg, seed, progress=False)
                per_latent[lat] = summarize(res, 0, cfg)
            out[name] = per_latent
        else:
            prompt, scales = prompt_and_scales(template)
            res = sweep(model, prompt, directions, latents, scales, cfg, seed)
            out[name] = {lat: summarize(res, i, cfg) for i, lat in enumerate(latents)}
    threshold = cfg.min_selfsim
    if threshold is None and latents:  # on the explain template's prompt (in context: the first latent's)
        prompt, scales = prompt_and_scales(templates[cfg.explain_template], latents[0])
        threshold = null_selfsim_threshold(model, prompt, scales, cfg, seed)
    return out, threshold


def summarize(res, row: int, cfg: SelfExplainConfig) -> dict:
    chosen = best_scales(res.selfsim[row], res.entropy[row], cfg.alpha, cfg.top_scales)
    from sae_interp_tasks.selfexplain import composite

    comp = composite(res.selfsim[row], res.entropy[row], cfg.alpha)
    return {
        "scales": [round(float(x), 3) for x in res.scales],
        "selfsim": [round(float(x), 4) for x in res.selfsim[row]],
        "entropy": [round(float(x), 4) for x in res.entropy[row]],
        "composite": [round(float(x), 4) for x in comp],
        "chosen_scales": chosen,
        "generations": {str(i): res.texts[row][i] for i in range(len(res.scales))},
        "explanation": next((t for i in chosen for t in res.texts[row][i] if t.strip()), ""),
        "peak_selfsim": float(res.selfsim[row].max()),
    }


_YES = re.compile(r"\b(yes|no)\b", re.IGNORECASE)


def judge_agreement(client, pairs: list[tuple[str, str]]) -> list[float]:
    prompts = [Prompt(messages=(("system", "You compare two descriptions of a feature of a language model. Answer "
                                           "'yes' if they describe the same thing, else 'no'. One word."),
                                ("user", f"Description A: {a}\nDescription B: {b}\nSame thing?")), max_tokens=4)
               for a, b in pairs]
    answers = client.generate(prompts, desc="judge")
    out = []
    for ans in answers:
        match = _YES.search(ans.text or "")
        out.append(metrics.NAN if match is None else float(match.group(1).lower() == "yes"))
    return out


def compute(backend, s: dict, expl_key: str, selection, splits, explanations, seed: int) -> dict:
    """Everything sae_selfexplain reports, for all selected latents at once."""
    from sae_interp_tasks.pipeline import _key, _memo, client_for, score_all

    cfg: SelfExplainConfig = s["SelfExplainConfig"]
    cfg.validate()
    latents = [lat for lat in selection.latents if lat is not None]
    sweeps, threshold = run_sweeps(backend, latents, selection, cfg, seed)
    primary = sweeps[cfg.explain_template]
    self_text = {lat: primary[lat]["explanation"] or "(nothing)" for lat in latents}
    auto_text = {lat: explanations[lat].text for lat in latents}

    emb_cfg: EmbeddingConfig = s["EmbeddingConfig"]
    embedder = _memo(backend, _key("embedder", emb_cfg), lambda: load_embedder(emb_cfg.embedding_model, backend.device))
    e_self = embed(embedder, [self_text[lat] for lat in latents], emb_cfg.embedding_batch_size)
    e_auto = embed(embedder, [auto_text[lat] for lat in latents], emb_cfg.embedding_batch_size)
    sim = e_self @ e_auto.T
    n = len(latents)
    per = {}
    for i, lat in enumerate(latents):
        labels = [j == i for j in range(n)]
        per[lat] = {
            "retrieval_auroc": metrics.auroc(labels, sim[i].tolist()) if n > 1 else metrics.NAN,
            "top1_match": float(int(np.argmax(sim[i])) == i) if n > 1 else metrics.NAN,
            "top1_chance": 1.0 / n if n > 1 else metrics.NAN,
            "matched_similarity": float(sim[i, i]),
            "selfexplain_failure": float(primary[lat]["peak_selfsim"] < threshold),
            "peak_selfsim": primary[lat]["peak_selfsim"],
            "selfsim_threshold": threshold,
        }
    ag: AgreementSettings = s["AgreementSettings"]
    scorer_cfg = s["ScorerConfig"]
    if ag.judge:
        votes = judge_agreement(client_for(backend, scorer_cfg.client_config(backend.device)),
                                [(self_text[lat], auto_text[lat]) for lat in latents])
        for lat, v in zip(latents, votes):
            per[lat]["judge_agreement"] = v
    if ag.selfexplain_detection:
        split_list = [splits[lat] for lat in latents]
        mine = {lat: Explanation(lat, self_text[lat], "selfexplain") for lat in latents}
        own = score_all(backend, "detection", split_list, mine, s, seed)
        # the same memo key as sae_detection's scores: computed once when both tasks run
        auto = _memo(backend, expl_key + _key("score", "detection", scorer_cfg, s["EmbeddingConfig"]),
                     lambda: score_all(backend, "detection", split_list, explanations, s, seed))
        for lat in latents:
            per[lat]["selfexplain_balanced_acc"] = own[lat].metrics["balanced_acc"]
            per[lat]["autointerp_balanced_acc"] = auto[lat].metrics["balanced_acc"]
    return {"sweeps": sweeps, "self_text": self_text, "auto_text": auto_text, "metrics": per}


def respond(backend, s: dict, expl_key: str, selection, splits, explanations, slot: int, seed: int) -> Response:
    from sae_interp_tasks.pipeline import _key, _memo

    result = _memo(backend, expl_key + _key("selfexplain", s["SelfExplainConfig"], s["AgreementSettings"],
                                            s["ScorerConfig"], s["EmbeddingConfig"]),
                   lambda: compute(backend, s, expl_key, selection, splits, explanations, seed))
    latent = selection.latents[slot]
    if latent is None:
        return Response(latent=None, skipped_before=selection.skipped_before[slot], metrics={})
    return Response(
        latent=latent,
        skipped_before=selection.skipped_before[slot],
        selfexplanation=result["self_text"][latent],
        autointerp_explanation=result["auto_text"][latent],
        metrics=result["metrics"][latent],
        sweeps={name: per[latent] for name, per in result["sweeps"].items()},
    )
