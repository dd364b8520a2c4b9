"""The interpretability pipeline behind sae_detection, sae_fuzzing, sae_embedding (and sae_selfexplain).

corpus -> activation pass -> live-latent selection -> example splits -> explanations -> scores.
Every stage is memoised on the backend for the run, keyed by the settings that determine it,
so tasks that agree on the corpus, latents and explainer share one pass and one set of
explanations. Everything expensive is also cached on disk (passes, LLM answers).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random
from dataclasses import dataclass

import torch

from sae_interp_tasks import activations, settings as settings_mod
from sae_interp_tasks.errors import SaeInterpError
from sae_interp_tasks.examples import ExampleConfig, split_examples
from sae_interp_tasks.explainers import ExplainerConfig, explain
from sae_interp_tasks.records import ExampleSplit, Explanation, Response
from sae_interp_tasks.scorers import classifier
from sae_interp_tasks.scorers.embedding import EmbeddingConfig, hard_negatives, load_embedder, score_embedding
from sae_interp_tasks.settings import CorpusSettings, LatentSelection, PassSettings

log = logging.getLogger(__name__)
NAN = float("nan")


@dataclass(frozen=True)
class Selection:
    """Which latent fills each doc slot, and how many dead-or-rare latents were passed over for it."""

    latents: list[int | None]
    skipped_before: list[int]
    state: activations.PassState


def _key(*parts) -> str:
    return json.dumps([dataclasses.asdict(p) if dataclasses.is_dataclass(p) else p for p in parts],
                      sort_keys=True, default=str)


def _memo(backend, key: str, compute):
    if key not in backend.memo:
        backend.memo[key] = compute()
    return backend.memo[key]


def candidate_order(d_sae: int, selection: LatentSelection, seed: int) -> list[int]:
    if selection.latents is not None:
        bad = [lat for lat in selection.latents if not isinstance(lat, int) or not 0 <= lat < d_sae]
        if bad:
            raise SaeInterpError(f"latents {bad} are not latent ids of this SAE (0..{d_sae - 1})")
        return list(selection.latents)
    gen = torch.Generator().manual_seed(seed)
    return torch.randperm(d_sae, generator=gen).tolist()


def select_latents(backend, corpus, pass_cfg, selection: LatentSelection, ex_cfg: ExampleConfig,
                   n_slots: int, seed: int) -> Selection:
    """The first n_slots live latents of a seeded order of all latents (or exactly the named ones)."""
    order = candidate_order(backend.info.d_sae, selection, seed)
    explicit = selection.latents is not None
    # a pool of at least 128 candidates: runs asking for up to 64 latents share one cached pass
    size = len(order) if explicit else min(len(order), max(2 * n_slots, 128))
    while True:
        pool = order[:size]
        state = activations.run_activation_pass(backend.model, backend.sae, backend.info, corpus, pass_cfg,
                                                latents=torch.tensor(sorted(pool)))
        filled = torch.isfinite(state.sample_key).sum(1)
        live = {int(lat) for lat, n in zip(state.latents.tolist(), filled.tolist()) if n >= ex_cfg.min_examples}
        if explicit or sum(lat in live for lat in pool) >= n_slots or size == len(order):
            break
        size = min(len(order), size * 4)
    chosen: list[int | None] = []
    skipped: list[int] = []
    passed = 0
    for lat in pool:
        if len(chosen) == n_slots:
            break
        if lat in live:
            chosen.append(lat)
            skipped.append(passed)
            passed = 0
        elif explicit:
            chosen.append(None)  # a named latent that is dead or rare: reported, not scored
            skipped.append(1)
        else:
            passed += 1
    if len(chosen) < n_slots:
        log.warning("only %d live latents for %d slots (min_examples=%d over %d tokens)", len(chosen), n_slots,
                    ex_cfg.min_examples, pass_cfg.n_tokens)
        chosen += [None] * (n_slots - len(chosen))
        skipped += [0] * (n_slots - len(skipped))
    return Selection(chosen, skipped, state)


def make_splits(backend, selection: Selection, ex_cfg: ExampleConfig, seed: int,
                non_activating: str, embedding: EmbeddingConfig) -> dict[int, ExampleSplit]:
    splits = {}
    embedder = load_embedder(embedding.embedding_model, backend.device) if non_activating == "hard" else None
    for lat in selection.latents:
        if lat is None:
            continue
        record = selection.state.record(lat)
        if embedder is not None:
            pool = list(record.non_activating)
            chosen = hard_negatives(record.top, pool, embedder, backend.tok_decode, ex_cfg.n_test_non_activating,
                                    embedding.embedding_batch_size)
            record = dataclasses.replace(record, non_activating=chosen)
        splits[lat] = split_examples(record, ex_cfg, seed)
    return splits


def client_for(backend, cfg):
    from sae_interp_tasks.clients import make_client

    key = _key("client", cfg)
    return _memo(backend, key, lambda: make_client(cfg))


@dataclass(frozen=True)
class NegativeSettings:
    non_activating: str = "random"  # random | hard (nearest to the top windows by sentence embedding)


INTERP_SETTINGS = (CorpusSettings, PassSettings, LatentSelection, ExampleConfig, NegativeSettings, ExplainerConfig)
settings_mod.register_task_configs("detection", *INTERP_SETTINGS, classifier.ScorerConfig, EmbeddingConfig)
settings_mod.register_task_configs("fuzzing", *INTERP_SETTINGS, classifier.ScorerConfig, EmbeddingConfig)
settings_mod.register_task_configs("embedding", *INTERP_SETTINGS, EmbeddingConfig)


def typed(kind: str, raw: dict) -> dict:
    s = settings_mod.settings_for(kind, raw)
    if s["NegativeSettings"].non_activating not in ("random", "hard"):
        raise SaeInterpError(f"non_activating must be random or hard, got {s['NegativeSettings'].non_activating!r}")
    s["ExampleConfig"].validate()
    s["ExplainerConfig"].validate()
    if "ScorerConfig" in s:
        s["ScorerConfig"].validate()
    if s["ExampleConfig"].min_examples > s["PassSettings"].n_sample:
        raise SaeInterpError(f"min_examples ({s['ExampleConfig'].min_examples}) cannot exceed n_sample "
                             f"({s['PassSettings'].n_sample}), the activating windows kept per latent")
    return s


def serve_interp(backend, payloads: list[dict]) -> list[dict]:
    """Answer sae_detection / sae_fuzzing / sae_embedding docs: one response dict per payload."""
    typed_all = [typed(p["kind"], p["settings"]) for p in payloads]
    # slots needed per selection (shared across tasks that select the same way)
    sel_keys, n_slots = [], {}
    for p, s in zip(payloads, typed_all):
        # n_latents is left out of the key: tasks asking for different numbers of latents share
        # one pass over the largest pool, and slot i is the same latent in all of them
        k = _key("selection", s["CorpusSettings"], s["PassSettings"], s["LatentSelection"].latents,
                 s["ExampleConfig"], s["NegativeSettings"], p["seed"])
        sel_keys.append(k)
        n_slots[k] = max(n_slots.get(k, 0), p["doc"]["slot"] + 1)

    responses = []
    for p, s, sk in zip(payloads, typed_all, sel_keys):
        seed = p["seed"]
        selection, splits, explanations, expl_key = shared_stages(backend, s, sk, n_slots[sk], seed)
        slot = p["doc"]["slot"]
        latent = selection.latents[slot]
        if p["kind"] == "selfexplain":
            from sae_interp_tasks import selfexplain_task

            responses.append(selfexplain_task.respond(backend, s, expl_key, selection, splits, explanations, slot, seed))
            continue
        scores = _memo(backend, expl_key + _key("score", p["kind"], s.get("ScorerConfig"), s["EmbeddingConfig"]),
                       lambda: score_all(backend, p["kind"], list(splits.values()), explanations, s, seed))
        responses.append(response(latent, selection.skipped_before[slot], explanations, scores, splits, backend))
    return responses


def shared_stages(backend, s: dict, sk: str, n_slots: int, seed: int):
    """Selection, splits and explanations: computed once per run for every task that agrees on them."""
    corpus = s["CorpusSettings"].spec(backend.info.dataset_path)
    pass_cfg = settings_mod.pass_config(s["PassSettings"], seed, backend.batch_size_per_gpu)
    selection = _memo(backend, sk, lambda: select_latents(backend, corpus, pass_cfg, s["LatentSelection"],
                                                          s["ExampleConfig"], n_slots, seed))
    splits = _memo(backend, sk + ":splits", lambda: make_splits(
        backend, selection, s["ExampleConfig"], seed, s["NegativeSettings"].non_activating, s["EmbeddingConfig"]))
    expl_key = sk + _key("explain", s["ExplainerConfig"])
    explanations = _memo(backend, expl_key, lambda: explain_all(backend, list(splits.values()), s["ExplainerConfig"]))
    return selection, splits, explanations, expl_key


def explain_all(backend, splits: list[ExampleSplit], cfg: ExplainerConfig) -> dict[int, Explanation]:
    client = None if cfg.explainer == "tokens" else client_for(backend, cfg.client_config(backend.device))
    return explain(splits, cfg, client, backend.tok_decode)


def score_all(backend, kind: str, splits, explanations, s: dict, seed: int):
    threshold = s["ExplainerConfig"].highlight_threshold
    if kind == "embedding":
        cfg = s["EmbeddingConfig"]
        embedder = _memo(backend, _key("embedder", cfg), lambda: load_embedder(cfg.embedding_model, backend.device))
        return score_embedding(splits, explanations, embedder, backend.tok_decode, seed, cfg.embedding_batch_size)
    cfg = s["ScorerConfig"]
    client = client_for(backend, cfg.client_config(backend.device))
    return classifier.score(kind, splits, explanations, cfg, client, backend.tok_decode, seed, threshold)


def response(latent, skipped: int, explanations, scores, splits, backend) -> dict:
    if latent is None:
        return Response(latent=None, skipped_before=skipped, metrics={}, explanation=None)
    scored = scores[latent]
    split = splits[latent]
    return Response(
        latent=latent,
        skipped_before=skipped,
        explanation=explanations[latent].text,
        explainer=explanations[latent].explainer,
        train_windows=[{"text": backend.tok_decode(ex.tokens.tolist()), "max_act": round(ex.max_act, 4),
                        "decile": ex.decile} for ex in split.train],
        metrics=scored.metrics,
        scorer=scored.detail,
    )
