"""The `sae` model backend: the SAE under evaluation plus the subject model it reads from.

It serves the `interpret` request type of this package's tasks (all tasks of a run hand their
requests over together, grouped by the handler each task kind declares in `registry`, so one
activation pass and one set of explanations serve them all), and `loglikelihood`,
`loglikelihood_rolling`, `generate_until` with the SAE spliced into the subject model, so any
stock harness task measures what splicing costs.

Arguments are checked when the backend is built; the SAE and the subject model load on first
use. lm-eval builds the model before the tasks, so this order lets a bad task setting fail in
seconds instead of after the model has loaded.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from dataclasses import dataclass
from functools import cached_property

import torch
from lm_eval.api.model import TemplateLM

from sae_interp_tasks import registry
from sae_interp_tasks.config import MODEL_ARG_KEYS
from sae_interp_tasks.errors import SaeInterpError, unknown
from sae_interp_tasks.harness.context import RunStore
from sae_interp_tasks.harness.costs import UsageLedger
from sae_interp_tasks.harness.request import read_request
from sae_interp_tasks.harness.spliced import SplicedRequests
from sae_interp_tasks.stages.activations import check_widths
from sae_interp_tasks.stages.saes import (
    CONTROLS,
    SAEInfo,
    SAESource,
    check_source,
    load_sae,
    reconstruct,
)
from sae_interp_tasks.stages.sparsify_saes import fold_input_norm
from sae_interp_tasks.stages.subject import DTYPES, check_hook, load_subject

log = logging.getLogger(__name__)


def _resolve_device(device: str | None) -> str:
    if device in (None, "", "auto") or (
        str(device).startswith("cuda") and not torch.cuda.is_available()
    ):
        chosen = "cuda" if torch.cuda.is_available() else "cpu"
        if device and device != chosen:
            log.warning("device %s is not available; using %s", device, chosen)
        return chosen
    return str(device)


@dataclass(frozen=True)
class Loaded:
    """What the backend loads on first use: the SAE, what the pipeline needs to know of it, and the
    subject model twice over the same weights (TransformerLens for edits, Hugging Face for
    reading)."""

    sae: object
    info: SAEInfo
    model: object  # transformer_lens.HookedTransformer
    hf_model: object  # transformers.PreTrainedModel


class SAEBackend(SplicedRequests, TemplateLM):
    """`--model sae --model_args release=R,sae_id=I` | `path=DIR` | (nothing: the offline demo).

    Implements `harness.context.RunContext`, which is all that tasks see of it."""

    _unused_doc = None

    """`--model sae --model_args release=R,sae_id=I` | `path=DIR` | (nothing: the offline demo)."""

    def __init__(
        self,
        release: str | None = None,
        sae_id: str | None = None,
        path: str | None = None,
        model: str | None = None,
        device: str | None = None,
        dtype: str = "float32",
        batch_size: int | str = 8,
        max_batch_size: int | None = None,
        control: str | None = None,
        control_k: int | None = None,
        max_length: int | None = None,
        hookpoint: str | None = None,
        **unknown_args,
    ):
        super().__init__()
        if unknown_args:
            raise SaeInterpError(
                f"unknown --model_args {', '.join(sorted(unknown_args))} for --model sae; "
                f"valid: {', '.join(k for k in MODEL_ARG_KEYS if k != 'trust_remote_code')}"
            )
        if path and release:
            raise SaeInterpError("give either release=...,sae_id=... or path=..., not both")
        if sae_id and not release:
            raise SaeInterpError("sae_id needs release=... (or use path=DIR for an SAE on disk)")
        if sae_id and hookpoint:
            raise SaeInterpError(
                "give sae_id=... (a sae_lens release) or hookpoint=... (a sparsify SAE), not both"
            )
        if control is not None and control not in CONTROLS:
            raise unknown("control", control, CONTROLS)
        if str(dtype) not in DTYPES:
            raise unknown("dtype", str(dtype), DTYPES)
        self._device = _resolve_device(device)
        self._dtype = str(dtype)
        self.batch_size_per_gpu = 8 if str(batch_size).startswith("auto") else int(batch_size)
        if self.batch_size_per_gpu <= 0:
            raise SaeInterpError(f"batch_size must be positive, got {batch_size}")
        self.source = SAESource(
            release=release,
            sae_id=sae_id,
            path=path,
            control=control,
            control_k=int(control_k) if control_k else None,
            hookpoint=hookpoint,
            model=model,
        )
        check_source(self.source)
        self._model_override = model
        self._requested_max_length = int(max_length) if max_length else None
        self.begin_run()
        self._join_process_group()

    # --- more than one process (accelerate launch / torchrun), as lm-eval's HFLM
    # ------------------------
    def _join_process_group(self) -> None:
        """Under a launcher (WORLD_SIZE > 1), join its process group: gloo on the CPU, nccl on GPUs,
        one GPU per local rank. Each rank then gets its share of every task's docs from lm-eval."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return
        import torch.distributed as dist

        if self._device.startswith("cuda"):
            self._device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
            torch.cuda.set_device(self._device)
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if self._device.startswith("cuda") else "gloo")
        self._rank, self._world_size = dist.get_rank(), dist.get_world_size()
        log.info("sae backend: rank %d of %d on %s", self._rank, self._world_size, self._device)

    def all_gather(self, tensor):
        if self.world_size == 1:
            return tensor
        import torch.distributed as dist

        parts = [torch.zeros_like(tensor) for _ in range(self.world_size)]
        dist.all_gather(parts, tensor)
        return torch.stack(parts) if tensor.dim() == 0 else torch.cat(parts)

    def gather_object(self, obj, dst: int = 0):
        if self.world_size == 1:
            return [obj]
        import torch.distributed as dist

        out = [None] * self.world_size if self.rank == dst else None
        dist.gather_object(obj, out, dst=dst)
        return out

    def all_gather_object(self, obj) -> list:
        """Every rank's `obj`, in rank order, on every rank."""
        if self.world_size == 1:
            return [obj]
        import torch.distributed as dist

        out = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.world_size > 1:
            import torch.distributed as dist

            dist.barrier()

    @classmethod
    def create_from_arg_string(cls, arg_string: str, additional_config: dict | None = None):
        from lm_eval.utils import simple_parse_args_string

        return cls.create_from_arg_obj(simple_parse_args_string(arg_string), additional_config)

    @classmethod
    def create_from_arg_obj(cls, arg_dict: dict, additional_config: dict | None = None):
        # --model_args win over the harness's generic flags (--batch_size, --device)
        extra = {
            k: v
            for k, v in (additional_config or {}).items()
            if v is not None and k not in arg_dict
        }
        return cls(**arg_dict, **extra)

    # --- loaded on first use ---------------------------------------------------------------------
    @cached_property
    def _loaded(self) -> Loaded:
        sae, info = load_sae(self.source, device=self._device, dtype=self._dtype)
        override = self._model_override is not None
        log.info(
            "sae backend: loading %s on %s, hook %s (d_sae=%d)",
            info.label,
            info.model_name,
            info.hook_name,
            info.d_sae,
        )
        model, hf_model = load_subject(
            self._model_override or info.model_name,
            device=self._device,
            dtype=self._dtype,
            keep_hf=True,
            from_pretrained_kwargs=None if override else info.model_from_pretrained_kwargs,
        )
        check_hook(model, info.hook_name)
        fold_input_norm(sae, model)  # a sparsify transcoder of an MLP reads its norm's output
        if info.hook_name_out:
            check_hook(model, info.hook_name_out)
        check_widths(model, info, sae)
        return Loaded(sae=sae, info=info, model=model, hf_model=hf_model)

    @property
    def subject_name(self) -> str:
        """The subject model's name: `model=` when given, else the one the SAE's metadata names."""
        return self._model_override or self.info.model_name

    @cached_property
    def reader(self):
        """Reads the hooked activation through the Hugging Face forward where it gives
        TransformerLens's numbers (faster on a CPU); None: read it through TransformerLens."""
        from sae_interp_tasks.stages.hf_forward import HFReader

        return HFReader.for_run(self._loaded.hf_model, self.model, self.info.hook_name)

    def read_activations(self, tokens: torch.Tensor) -> torch.Tensor:
        """The hooked activation [B, T, d] of `tokens`, by the fastest forward that gives it
        exactly."""
        from sae_interp_tasks.stages.activations import hook_activations

        return (
            self.reader.activations(tokens)
            if self.reader
            else hook_activations(self.model, self.info.hook_name, tokens)
        )

    @property
    def forward_name(self) -> str:
        """Which forward reads activations ("hf" or "tl"): part of the activation caches' keys."""
        return "hf" if self.reader else "tl"

    @property
    def sae(self):
        return self._loaded.sae

    @property
    def info(self) -> SAEInfo:
        return self._loaded.info

    @property
    def model(self):
        return self._loaded.model

    def get_model_info(self) -> dict:
        """Facts about the SAE under evaluation; lm-eval merges them into results["config"], where
        `sae-interp leaderboard` / `compare` read the SAE's identity and width."""
        return {
            "sae": self.info.label,
            "sae_fingerprint": self.info.fingerprint,
            "sae_d_sae": int(self.info.d_sae),
            "sae_d_in": int(self.info.d_in),
            "sae_architecture": self.info.architecture,
            "sae_hook_name": self.info.hook_name,
            "sae_hook_name_out": self.info.hook_name_out,
            "subject_model": self.subject_name,
            "sae_control": self.source.control,
            "sae_neuronpedia_id": self.sae_identity()["neuronpedia_id"],
            # what the run compared with (a similarity task's references) and read
            # (explainer: file's explanations, with their coverage)
            **{f"sae_{name}": note for name, note in self.store.notes.items() if note},
        }

    def sae_identity(self) -> dict:
        """What names the SAE to files that explain it: its label, sae_lens release and id,
        Neuronpedia id ("model/source", from sae_lens's metadata of a release) and weights
        fingerprint (None where unknown)."""
        return {
            "label": self.info.label,
            "release": self.source.release,
            "sae_id": self.source.sae_id,
            "neuronpedia_id": getattr(
                getattr(self.sae.cfg, "metadata", None), "neuronpedia_id", None
            ),
            "fingerprint": self.info.fingerprint,
        }

    # --- the package's own request type ----------------------------------------------------------
    def begin_run(self) -> None:
        """A fresh store of shared work and LLM ledger: one run's (see harness.context)."""
        self.store, self.ledger = RunStore(), UsageLedger()

    def interpret(self, requests) -> list:
        self.begin_run()  # lm-eval sends every doc of a run in this one call
        typed = [read_request(req.args[0]) for req in requests]
        mine = self.source.weights_label
        for r in typed:
            if r.defaults_from not in (None, mine):
                raise SaeInterpError(
                    f"{r.task} took the instrument defaults of the SAE {r.defaults_from}, but the "
                    f"model is {mine}: build the tasks with this SAE's model_args (or set the keys "
                    "in --metadata)"
                )
        # one call per handler, all its kinds together: tasks that share a latent selection or
        # explanations must be seen at once (e.g. detection and fuzzing on the same slots)
        by_handler: dict = defaultdict(list)
        for i, r in enumerate(typed):
            by_handler[registry.lookup(r.kind).serve].append(i)
        results: list = [None] * len(requests)
        for handler, indices in by_handler.items():
            for i, out in zip(indices, handler(self, [typed[i] for i in indices]), strict=True):
                results[i] = out
        return results

    # --- the SAE spliced into the subject model
    # ------------------------------------------------------
    def _splice(self, x, hook):
        return self.sae.decode(self.sae.encode(x.to(self.sae.W_dec.dtype))).to(x.dtype)

    def spliced(self):
        """Context manager: the subject model with the SAE's reconstruction in place of the hooked
        activation (a transcoder's prediction, from its input hook, in place of its output hook's
        activation)."""
        if not self.info.hook_name_out:
            return self.model.hooks(fwd_hooks=[(self.info.hook_name, self._splice)])
        seen = {}

        def read(x, hook):
            seen["x"] = x.to(self.sae.W_dec.dtype)

        def write(y, hook):
            x = seen.pop("x")
            return reconstruct(self.sae, x, self.sae.encode(x)).to(y.dtype)

        hooks = [(self.info.hook_name, read), (self.info.hook_name_out, write)]
        return self.model.hooks(fwd_hooks=hooks)

    @property
    def tokenizer(self):
        return self.model.tokenizer

    @property
    def tokenizer_name(self) -> str:
        return str(getattr(self.tokenizer, "name_or_path", "")).replace("/", "__")

    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eos_token_id

    @property
    def prefix_token_id(self) -> int:
        bos = self.tokenizer.bos_token_id
        return bos if bos is not None else self.eot_token_id

    @property
    def max_length(self) -> int:
        return self._requested_max_length or min(self.model.cfg.n_ctx, 2048)

    @property
    def device(self):
        return self._device

    def tok_encode(
        self, string: str, add_special_tokens: bool | None = None, **kwargs
    ) -> list[int]:
        # lm-eval adds the prefix token itself where a request needs one; None means "no"
        return self.tokenizer.encode(string, add_special_tokens=bool(add_special_tokens))

    def tok_decode(self, tokens) -> str:
        return self.tokenizer.decode(tokens)
