"""What a task's handler and scorer may use of the backend: the run context.

`SAEBackend` is the one implementation; tests may pass any object with these members. Tasks and
`run_stages` read the backend only through this protocol, so what a task depends on is written down
here rather than found by probing attributes.

A run is one `interpret` call of the backend (lm-eval makes one per evaluation, with every doc of
every task): the backend opens a fresh `RunStore` and `UsageLedger` at its start (`begin_run`), so
nothing computed for one run is served to the next (the disk caches still are).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from sae_interp_tasks.caching import canonical

if TYPE_CHECKING:
    import torch

    from sae_interp_tasks.harness.costs import UsageLedger
    from sae_interp_tasks.stages.saes import SAEInfo


class RunStore:
    """A run's shared work: each value computed once under its key (harness.run_stages says what
    it holds: the latent selection, splits, explanations, scores, clients, the embedder)."""

    def __init__(self):
        self._values: dict[str, object] = {}
        # what the run records about itself beyond its docs (the references it compared with),
        # read by the backend's get_model_info into the results file
        self.notes: dict[str, dict] = {}

    def compute_once(self, key: tuple, compute: Callable):
        text = canonical(*key)
        if text not in self._values:
            self._values[text] = compute()
        return self._values[text]


class RunContext(Protocol):
    store: RunStore  # the run's shared work (see harness.run_stages)
    ledger: UsageLedger  # the run's LLM usage, charged to task kinds (see harness.costs)
    batch_size_per_gpu: int  # contexts per forward in the activation pass

    @property
    def rank(self) -> int: ...

    @property
    def world_size(self) -> int: ...

    def all_gather_object(self, obj: Any) -> list:
        """Every process's `obj`, in rank order, on every process ([obj] in one process)."""

    @property
    def device(self) -> str: ...

    @property
    def sae(self) -> Any:
        """The SAE under evaluation (a sae_lens SAE module)."""

    @property
    def info(self) -> SAEInfo: ...

    @property
    def model(self) -> Any:
        """The subject model as a TransformerLens HookedTransformer."""

    @property
    def tokenizer(self) -> Any: ...

    def tok_decode(self, tokens) -> str: ...

    @property
    def reader(self) -> Any:
        """Reads the hooked activation through the Hugging Face forward (None: through
        TransformerLens)."""

    def read_activations(self, tokens: torch.Tensor) -> torch.Tensor: ...

    def sae_identity(self) -> dict:
        """What names the SAE to files that explain it (label, release, sae_id, neuronpedia_id,
        fingerprint)."""

    @property
    def forward_name(self) -> str:
        """Which forward reads activations ("hf" or "tl"): part of the activation caches' keys."""
