"""What a task's handler and scorer may use of the backend: the run context.

`SAEBackend` is the one implementation; tests may pass any object with these members. Tasks and the
memo read the backend only through this protocol, so what a task depends on is written down here
rather than found by probing attributes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from sae_interp_tasks.caching import canonical

if TYPE_CHECKING:
    import torch

    from sae_interp_tasks.stages.saes import SAEInfo


class RunMemo:
    """A per-run store: each value computed once under its key (see harness.memo for what it
    holds)."""

    def __init__(self):
        self._values: dict[str, object] = {}

    def compute_once(self, key: tuple, compute: Callable):
        text = canonical(*key)
        if text not in self._values:
            self._values[text] = compute()
        return self._values[text]

    def values(self) -> list:
        """Everything computed so far (e.g. the run's LLM clients, whose usage is counted)."""
        return list(self._values.values())


class RunContext(Protocol):
    memo: RunMemo  # the run's shared work (see harness.memo)
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

    @property
    def forward_name(self) -> str:
        """Which forward reads activations ("hf" or "tl"): part of the activation caches' keys."""
