"""Work shared by the tasks of one run: the activation pass and latent selection, the example
splits, the explanations, each kind's scores, LLM clients and the embedder.

Each is computed once per run, on the backend's `RunMemo`, under a key of exactly the settings
that determine it: tasks that agree on the corpus and pass share one pass and one latent
selection; those that also agree on examples and explainer share the explanations; and a kind's
scores are shared by any task that asks for them with the same settings (sae_selfexplain reuses
sae_detection's scores). Everything expensive inside is cached on disk as well.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from sae_interp_tasks import registry
from sae_interp_tasks.activations import PassConfig
from sae_interp_tasks.caching import canonical
from sae_interp_tasks.config import Settings
from sae_interp_tasks.corpus import CorpusConfig
from sae_interp_tasks.errors import SaeInterpError
from sae_interp_tasks.examples import ExampleConfig
from sae_interp_tasks.explainers import ExplainerConfig, explain
from sae_interp_tasks.records import ExampleSplit, Explanation, ScoredLatent
from sae_interp_tasks.scorers.embedding import EmbeddingConfig, load_embedder
from sae_interp_tasks.selection import Selection, SelectionConfig, make_splits, select_latents


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

    def __post_init__(self) -> None:
        if self.examples.min_examples > self.activations.n_sample:
            raise SaeInterpError(f"min_examples ({self.examples.min_examples}) cannot exceed n_sample "
                                 f"({self.activations.n_sample}), the activating windows kept per latent")


@dataclass(frozen=True)
class LatentRun:
    """What a latent kind's scorer receives: the run's shared stages for these settings.

    `owned` are the latents whose docs this process answers (all of them in one process; under a
    launcher, those of its share of the slots). A scorer may score only those, with everything else
    of the run at hand (other latents' explanations as shuffled controls); `scores` gathers the rest.
    """

    backend: object
    settings: LatentSettings
    seed: int
    selection: Selection
    splits: dict[int, ExampleSplit]
    explanations: dict[int, Explanation]
    owned: tuple[int, ...] = ()

    @property
    def latents(self) -> list[int]:
        return self.selection.live


class RunMemo:
    """A per-run store: each value computed once under its key."""

    def __init__(self):
        self._values: dict[str, object] = {}

    def get(self, key: tuple, compute: Callable):
        text = canonical(*key)
        if text not in self._values:
            self._values[text] = compute()
        return self._values[text]


# --- keys: exactly what determines each stage ---------------------------------------------------
def selection_key(s: LatentSettings, seed: int) -> tuple:
    # n_latents is left out: tasks asking for different numbers of latents share one pass over
    # the largest pool, and slot i is the same latent in all of them
    return ("selection", s.corpus, s.activations, s.selection.latents, s.examples.min_examples, seed)


def splits_key(s: LatentSettings, seed: int) -> tuple:
    hard = s.embedding.embedding_model if s.examples.non_activating == "hard" else None
    return selection_key(s, seed) + ("splits", s.examples, hard)


def explanations_key(s: LatentSettings, seed: int) -> tuple:
    return splits_key(s, seed) + ("explain", s.explainer)


# --- the shared stages --------------------------------------------------------------------------
def selection(backend, s: LatentSettings, seed: int, n_slots: int) -> Selection:
    """The latent selection; the first caller's n_slots (the run's largest) fills the pool."""
    return backend.memo.get(selection_key(s, seed), lambda: select_latents(
        backend.model, backend.sae, backend.info, s.corpus.spec(backend.info.dataset_path), s.activations,
        s.selection, s.examples.min_examples, n_slots, seed, backend.batch_size_per_gpu,
        read=backend.read_activations, forward=backend.forward_name, group=_group(backend)))


def _group(backend):
    return backend if getattr(backend, "world_size", 1) > 1 else None


def owned_latents(backend, chosen: Selection) -> tuple[int, ...]:
    """The live latents of the slots this process answers: lm-eval gives rank r every world_size-th doc."""
    world, rank = getattr(backend, "world_size", 1), getattr(backend, "rank", 0)
    return tuple(lat for slot, lat in enumerate(chosen.latents) if lat is not None and slot % world == rank)


def gathered(backend, mine: dict) -> dict:
    """The union of every process's dict (each holds its owned latents' entries)."""
    if _group(backend) is None:
        return mine
    out: dict = {}
    for part in backend.all_gather_object(mine):
        out.update(part)
    return out


def latent_run(backend, s: LatentSettings, seed: int, n_slots: int) -> LatentRun:
    chosen = selection(backend, s, seed, n_slots)
    splits = backend.memo.get(splits_key(s, seed), lambda: make_splits(
        chosen, s.examples, seed, backend.tok_decode,
        embedder(backend, s.embedding) if s.examples.non_activating == "hard" else None,
        s.embedding.embedding_batch_size))
    owned = owned_latents(backend, chosen)
    explanations = backend.memo.get(explanations_key(s, seed), lambda: gathered(backend, explain(
        [splits[lat] for lat in owned], s.explainer,
        None if s.explainer.explainer == "tokens" else client(backend, s.explainer.client_config(backend.device)),
        backend.tok_decode)))
    return LatentRun(backend, s, seed, chosen, splits, explanations, owned)


def scores(run: LatentRun, kind: str, settings: Settings | None = None) -> dict[int, ScoredLatent]:
    """`kind`'s scores of the run's latents, computed once per run for equal settings. `settings`
    defaults to the run's; another kind's task passes its own settings seen as `kind`'s bundle."""
    spec = registry.get(kind)
    chosen = settings if settings is not None else run.settings
    if type(chosen) is not spec.settings:  # exactly the kind's bundle, so the key matches its own task's
        chosen = chosen.project(spec.settings)
    key = explanations_key(run.settings, run.seed) + ("score", kind, chosen)
    scorer = spec.score()
    return run.backend.memo.get(key, lambda: gathered(run.backend, scorer(LatentRun(
        run.backend, chosen, run.seed, run.selection, run.splits, run.explanations, run.owned))))


def contexts(backend, s: LatentSettings, seed: int):
    """The activation pass's token contexts [n_contexts, context_size] (int32), rebuilt from the corpus
    once per run: stages that need more than the pass's windows (intervention prompts) read them."""
    import torch

    from sae_interp_tasks.corpus import token_contexts

    def build():
        spec = s.corpus.spec(backend.info.dataset_path)
        return torch.stack(list(token_contexts(spec, backend.tokenizer, s.activations.n_tokens,
                                               s.activations.context_size, backend.info.prepend_bos, seed))).to(torch.int32)

    return backend.memo.get(("contexts", s.corpus, s.activations.n_tokens, s.activations.context_size, seed), build)


def client(backend, cfg):
    from sae_interp_tasks.clients import make_client

    return backend.memo.get(("client", cfg), lambda: make_client(cfg))


def embedder(backend, cfg: EmbeddingConfig):
    return backend.memo.get(("embedder", cfg.embedding_model), lambda: load_embedder(cfg.embedding_model, backend.device))
