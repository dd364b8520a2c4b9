"""Work shared by the tasks of one run: the activation pass and latent selection, the example
splits, the explanations, each kind's scores, and the resources they use (LLM clients, the
embedder, other subject models).

Each is computed once per run, on the context's `RunStore`, under a key of exactly the settings
that determine it: tasks that agree on the corpus and pass share one pass and one latent
selection; those that also agree on examples and explainer share the explanations; and a kind's
scores are shared by any task that asks for them with the same settings (sae_selfexplain reuses
sae_detection's scores). Everything expensive inside is cached on disk as well.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

from sae_interp_tasks import registry
from sae_interp_tasks.config import Settings
from sae_interp_tasks.errors import SaeInterpError
from sae_interp_tasks.harness import costs
from sae_interp_tasks.harness.context import RunContext
from sae_interp_tasks.harness.explanation_source import explanation_file, file_key
from sae_interp_tasks.records import ExampleSplit, Explanation, ScoredLatent
from sae_interp_tasks.scorers.classifier import ScorerConfig
from sae_interp_tasks.stages.activations import PassConfig
from sae_interp_tasks.stages.corpus import CorpusConfig
from sae_interp_tasks.stages.embedder import EmbeddingConfig, load_embedder
from sae_interp_tasks.stages.examples import ExampleConfig
from sae_interp_tasks.stages.explainers import WEIGHT_EXPLAINERS, ExplainerConfig, explain
from sae_interp_tasks.stages.selection import (
    Selection,
    SelectionConfig,
    make_splits,
    select_latents,
)
from sae_interp_tasks.validity.scorer_check import (
    CheckConfig,
    CheckResult,
    build_check_set,
    pool_windows,
)


@dataclass(frozen=True)
class LatentSettings(Settings):
    """The stages every latent task shares: corpus, activation pass, latent selection, examples,
    explainer; the embedder picks hard negatives and embeds explanations."""

    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    activations: PassConfig = field(default_factory=PassConfig)
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    examples: ExampleConfig = field(default_factory=ExampleConfig)
    explainer: ExplainerConfig = field(default_factory=ExplainerConfig)
    embedding: EmbeddingConfig = field(default_factory=EmbeddingConfig)
    budget: costs.BudgetConfig = field(default_factory=costs.BudgetConfig)

    def __post_init__(self) -> None:
        if self.examples.min_examples > self.activations.n_sample:
            raise SaeInterpError(
                f"min_examples ({self.examples.min_examples}) cannot exceed n_sample "
                f"({self.activations.n_sample}), the activating windows kept per latent"
            )


@dataclass(frozen=True)
class ScorerSettings(LatentSettings):
    """The shared stages plus an LLM scorer (detection, fuzzing, simulation, self-explanation,
    intervention's judge) and the known-answer check every LLM scorer takes first."""

    scorer: ScorerConfig = field(default_factory=ScorerConfig)
    check: CheckConfig = field(default_factory=CheckConfig)


@dataclass(frozen=True)
class LatentRun:
    """What a latent kind's scorer receives: the run's shared stages for these settings.

    `owned` are the latents whose docs this process answers (all of them in one process; under a
    launcher, those of its share of the slots). A scorer may score only those, with everything else
    of the run at hand (other latents' explanations as shuffled controls); `scores` gathers the
    rest."""

    context: RunContext
    settings: LatentSettings
    seed: int
    selection: Selection
    splits: dict[int, ExampleSplit]
    explanations: dict[int, Explanation]
    owned: tuple[int, ...] = ()

    @property
    def latents(self) -> list[int]:
        return self.selection.live

    def decode(self, tokens) -> str:
        return self.context.tok_decode(tokens)

    def gather(self, mine: dict) -> dict:
        """The union of every process's dict (each holds its owned latents' entries)."""
        return gathered(self.context, mine)


# --- keys: exactly what determines each stage ---------------------------------------------------
def selection_key(s: LatentSettings, seed: int) -> tuple:
    # n_latents is left out: tasks asking for different numbers of latents share one pass over
    # the largest pool, and slot i is the same latent in all of them; an explanations file
    # restricts the draw to the latents it covers
    covered = file_key(s.explainer)
    return (
        "selection",
        s.corpus,
        s.activations,
        s.selection.latents,
        s.examples.min_examples,
        seed,
        *((covered,) if covered else ()),
    )


def splits_key(s: LatentSettings, seed: int) -> tuple:
    hard = s.embedding.embedding_model if s.examples.non_activating == "hard" else None
    return selection_key(s, seed) + ("splits", s.examples, hard)


def explanations_key(s: LatentSettings, seed: int) -> tuple:
    return splits_key(s, seed) + ("explain", s.explainer)


# --- the shared stages --------------------------------------------------------------------------
def selection(ctx: RunContext, s: LatentSettings, seed: int, n_slots: int) -> Selection:
    """The latent selection; the first caller's n_slots (the run's largest) fills the pool."""
    covered = explanation_file(ctx, s.explainer)  # draws only latents it covers
    allowed = frozenset(covered.texts) if covered else None
    return ctx.store.compute_once(
        selection_key(s, seed),
        lambda: select_for(ctx, ctx.sae, ctx.info, s, s.selection, n_slots, seed, allowed),
    )


def select_for(
    ctx: RunContext, sae, info, s: LatentSettings, chosen, n_slots: int, seed: int, allowed=None
) -> Selection:
    """`select_latents` for an SAE of this run (the evaluated one or a reference), `chosen`: a
    SelectionConfig."""
    return select_latents(
        ctx.model,
        sae,
        info,
        s.corpus.spec(ctx.info.dataset_path),
        s.activations,
        chosen,
        s.examples.min_examples,
        n_slots,
        seed,
        ctx.batch_size_per_gpu,
        read=ctx.read_activations,
        forward=ctx.forward_name,
        group=ctx if ctx.world_size > 1 else None,
        allowed=allowed,
    )


def owned_latents(ctx: RunContext, chosen: Selection) -> tuple[int, ...]:
    """The live latents of the slots this process answers: lm-eval gives rank r every world_size-th
    doc."""
    return tuple(
        lat
        for slot, lat in enumerate(chosen.latents)
        if lat is not None and slot % ctx.world_size == ctx.rank
    )


def gathered(ctx: RunContext, mine: dict) -> dict:
    """The union of every process's dict (each holds its owned latents' entries)."""
    if ctx.world_size == 1:
        return mine
    out: dict = {}
    for part in ctx.all_gather_object(mine):
        out.update(part)
    return out


def example_splits(
    ctx: RunContext, s: LatentSettings, seed: int, n_slots: int
) -> tuple[Selection, dict]:
    """The latent selection and every live latent's train/test split."""
    chosen = selection(ctx, s, seed, n_slots)
    return chosen, ctx.store.compute_once(
        splits_key(s, seed), lambda: splits_for(ctx, chosen, s, seed)
    )


def splits_for(ctx: RunContext, chosen: Selection, s: LatentSettings, seed: int) -> dict:
    """`make_splits` of a selection of this run (the evaluated SAE's or a reference's)."""
    hard = s.examples.non_activating == "hard"
    return make_splits(
        chosen,
        s.examples,
        seed,
        ctx.tok_decode,
        embedder(ctx, s.embedding) if hard else None,
        s.embedding.embedding_batch_size,
    )


def latent_run(
    ctx: RunContext,
    s: LatentSettings,
    seed: int,
    n_slots: int,
    kind: str = "",
    explained: bool = True,
) -> LatentRun:
    """The shared stages for these settings; the explanations' LLM cost is charged to `kind`, the
    first to ask. A kind that reads no explanations (`explained=False`: the weights tasks) gets
    the pass, the selection and the splits only, and pays for no explainer."""
    chosen, splits = example_splits(ctx, s, seed, n_slots)
    owned = owned_latents(ctx, chosen)
    if not explained:
        return LatentRun(ctx, s, seed, chosen, splits, {}, owned)
    explanations = ctx.store.compute_once(
        explanations_key(s, seed),
        lambda: ctx.ledger.charged(
            kind,
            lambda: gathered(
                ctx,
                explain(
                    [splits[lat] for lat in owned],
                    s.explainer,
                    explainer_client(ctx, s.explainer),
                    ctx.tok_decode,
                    weight_lens(ctx) if s.explainer.explainer in WEIGHT_EXPLAINERS else None,
                    explanation_file(ctx, s.explainer),
                ),
            ),
        ),
    )
    return LatentRun(ctx, s, seed, chosen, splits, explanations, owned)


def scores(run: LatentRun, kind: str, settings: Settings | None = None) -> dict[int, ScoredLatent]:
    """`kind`'s scores of the run's latents, computed once per run for equal settings. `settings`
    defaults to the run's; another kind's task passes its own settings seen as `kind`'s bundle."""
    spec = registry.lookup(kind)
    chosen = settings if settings is not None else run.settings
    # exactly the kind's bundle, so the key matches its own task's
    if type(chosen) is not spec.settings:
        chosen = chosen.project(spec.settings)
    key = explanations_key(run.settings, run.seed) + ("score", kind, chosen)
    return run.context.store.compute_once(
        key,
        lambda: run.context.ledger.charged(
            kind,
            lambda: gathered(
                run.context,
                spec.scorer(
                    LatentRun(
                        run.context,
                        chosen,
                        run.seed,
                        run.selection,
                        run.splits,
                        run.explanations,
                        run.owned,
                    )
                ),
            ),
        ),
    )


# --- the scorer check ----------------------------------------------------------------------------
def check_set(run: LatentRun):
    """The run's known answers for scorer checks (validity.scorer_check), built once from the
    pass's windows."""
    s: ScorerSettings = run.settings
    return run.context.store.compute_once(
        ("check-set", *selection_key(s, run.seed), s.check),
        lambda: build_check_set(pool_windows(run.selection.state), run.decode, s.check, run.seed),
    )


def scorer_check(
    run: LatentRun, key: tuple, compute: Callable[[], CheckResult]
) -> CheckResult | None:
    """A scorer's known-answer check, once per run for equal `key` (its scorer and settings); None
    when `scorer_check` is off."""
    s: ScorerSettings = run.settings
    if not s.check.scorer_check:
        return None
    return run.context.store.compute_once(
        ("scorer-check", *selection_key(s, run.seed), s.check, *key),
        lambda: _on_rank_zero(run.context, compute),
    )


def _on_rank_zero(ctx: RunContext, compute: Callable):
    """compute() on rank 0 alone, its result handed to every rank: work done (and LLM calls paid)
    once per run however many processes share it. Every rank must call this at the same point."""
    if ctx.world_size == 1:
        return compute()
    result, failure = None, None
    if ctx.rank == 0:
        try:
            result = compute()
        # the other ranks wait in the gather below: tell them, then fail here too
        except Exception as err:
            ctx.all_gather_object((None, f"{type(err).__name__}: {err}"))
            raise
    result, failure = ctx.all_gather_object((result, failure))[0]
    if failure is not None:
        raise SaeInterpError(f"rank 0 failed: {failure}")
    return result


def with_checks(
    scored: dict[int, ScoredLatent], *results: CheckResult | None
) -> dict[int, ScoredLatent]:
    """Every latent's scores with the checks' metrics beside them (the same for every latent of the
    run)."""
    extra = {k: v for r in results if r is not None for k, v in r.metrics().items()}
    return {
        lat: dataclasses.replace(sc, metrics={**sc.metrics, **extra}) for lat, sc in scored.items()
    }


# --- resources ----------------------------------------------------------------------------------
def contexts(ctx: RunContext, s: LatentSettings, seed: int):
    """The activation pass's token contexts [n_contexts, context_size] (int32), rebuilt from the
    corpus once per run: stages that need more than the pass's windows (intervention prompts) read
    them."""
    import torch

    from sae_interp_tasks.stages.corpus import token_contexts

    def build():
        spec, cfg = s.corpus.spec(ctx.info.dataset_path), s.activations
        found = token_contexts(
            spec, ctx.tokenizer, cfg.n_tokens, cfg.context_size, ctx.info.prepend_bos, seed
        )
        return torch.stack(list(found)).to(torch.int32)

    return ctx.store.compute_once(
        ("contexts", s.corpus, s.activations.n_tokens, s.activations.context_size, seed), build
    )


def client(ctx: RunContext, cfg):
    """One LLM client per client config and run (clients.ClientConfig)."""
    from sae_interp_tasks import clients
    from sae_interp_tasks.validity.oracle import OracleClient

    # the oracle is a validity instrument: it knows a known-answer SAE's planted meanings
    kinds = {**clients.BUILTIN_KINDS, "oracle": OracleClient}
    return ctx.store.compute_once(
        ("client", cfg), lambda: ctx.ledger.watch(clients.make_client(cfg, kinds=kinds))
    )


def explainer_client(ctx: RunContext, cfg: ExplainerConfig):
    """The explainer's LLM client; None for the token-list explainer."""
    return client(ctx, cfg.client_config(ctx.device)) if cfg.uses_llm else None


def weight_lens(ctx: RunContext):
    """The subject model's embedding and unembedding reading the SAE's directions (stages.lens),
    once per run."""
    from sae_interp_tasks.stages.lens import WeightLens

    return ctx.store.compute_once(
        ("weight-lens",), lambda: WeightLens(ctx.model, ctx.sae, ctx.tok_decode)
    )


def scorer_client(ctx: RunContext, cfg: ScorerConfig):
    return client(ctx, cfg.client_config(ctx.device))


def embedder(ctx: RunContext, cfg: EmbeddingConfig):
    return ctx.store.compute_once(
        ("embedder", cfg.embedding_model), lambda: load_embedder(cfg.embedding_model, ctx.device)
    )


def subject_model(ctx: RunContext, name: str):
    """Another subject model than the backend's (e.g. an instruction-tuned variant), loaded once
    per run."""
    from sae_interp_tasks.stages.subject import load_subject

    return ctx.store.compute_once(
        ("subject-model", name), lambda: load_subject(name, device=ctx.device)
    )
