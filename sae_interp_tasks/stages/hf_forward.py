"""The subject model's own Hugging Face forward, where it is faster than TransformerLens's.

TransformerLens gives every hook point a name and is what edits need (splicing, steering,
patching). Reading an activation and the clean logits needs no edit, and on a CPU the model's own
forward (fused linear layers, SDPA attention) runs it about 1.8 times faster. So the activation
pass and sae_core's clean forward read the hooked activation from the Hugging Face model: the
TransformerLens hook name maps to a module of the Hugging Face model (`hook_module`), a forward
hook captures it, and a pass that needs nothing after the hook stops the forward there.

The mapping covers the residual stream (`hook_resid_pre`, `hook_resid_post`) and the attention
and MLP outputs (`hook_attn_out`, `hook_mlp_out`) of decoder stacks laid out as
`model.layers` (Llama, Mistral, Qwen, Gemma, SmolLM, ...), `transformer.h` (GPT-2) or
`gpt_neox.layers` (Pythia). Before use, `HFReader.check` compares the two models' activations on a
probe; any other hook, layout or a mismatch keeps TransformerLens (logged).
"""

from __future__ import annotations

import logging
import re

import torch

log = logging.getLogger(__name__)

_LAYER_LISTS = ("model.layers", "transformer.h", "gpt_neox.layers", "model.decoder.layers")
_HOOK = re.compile(r"^blocks\.(\d+)\.(hook_resid_pre|hook_resid_post|hook_attn_out|hook_mlp_out)$")
_ATTENTION = ("self_attn", "attn", "attention")
_MLP = ("mlp", "feed_forward")


class _Stop(Exception):
    """Raised by the capturing hook to end a forward that needs nothing after the hook."""


def _get(root, path: str):
    for part in path.split("."):
        root = getattr(root, part, None)
        if root is None:
            return None
    return root


def hook_module(hf_model, hook_name: str) -> tuple[torch.nn.Module, str] | None:
    """(module, "input" | "output") whose input or output is the TransformerLens hook's
    activation."""
    match = _HOOK.match(hook_name)
    if match is None:
        return None
    layers = next(
        (found for path in _LAYER_LISTS if (found := _get(hf_model, path)) is not None), None
    )
    layer, kind = int(match.group(1)), match.group(2)
    if layers is None or layer >= len(layers):
        return None
    block = layers[layer]
    if kind == "hook_resid_pre":
        return block, "input"
    if kind == "hook_resid_post":
        return block, "output"
    names = _ATTENTION if kind == "hook_attn_out" else _MLP
    sub = next((getattr(block, n) for n in names if hasattr(block, n)), None)
    return (sub, "output") if sub is not None else None


PROBE_SENTENCE = "The reader checks one probe sentence, token by token."


class HFReader:
    """Reads the hooked activation (and, when asked, the logits) from the Hugging Face model."""

    def __init__(self, hf_model, hook_name: str):
        self.hf_model, self.hook_name = hf_model, hook_name
        self.point = hook_module(hf_model, hook_name)

    def _run(self, tokens: torch.Tensor, stop: bool):
        module, where = self.point
        captured = {}

        def on_input(mod, args, kwargs):
            captured["x"] = (args[0] if args else kwargs["hidden_states"]).detach()
            if stop:
                raise _Stop

        def on_output(mod, args, kwargs, output):
            captured["x"] = (output[0] if isinstance(output, tuple) else output).detach()
            if stop:
                raise _Stop

        handle = (
            module.register_forward_pre_hook(on_input, with_kwargs=True)
            if where == "input"
            else module.register_forward_hook(on_output, with_kwargs=True)
        )
        logits = None
        try:
            with torch.no_grad():
                logits = self.hf_model(
                    input_ids=tokens.to(self.hf_model.device), use_cache=False
                ).logits
        except _Stop:
            pass
        finally:
            handle.remove()
        return captured["x"], logits

    def activations(self, tokens: torch.Tensor) -> torch.Tensor:
        """The hooked activation [B, T, d], running the model no further than the hook."""
        return self._run(tokens, stop=True)[0]

    def activations_and_logits(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The hooked activation and the clean logits, from one full forward."""
        return self._run(tokens, stop=False)

    @classmethod
    def for_run(cls, hf_model, tl_model, hook_name: str) -> HFReader | None:
        """The reader a run uses (None: TransformerLens), checked on PROBE_SENTENCE."""
        probe = torch.tensor([tl_model.tokenizer.encode(PROBE_SENTENCE)])
        return cls.check(hf_model, tl_model, hook_name, probe)

    @classmethod
    def check(cls, hf_model, tl_model, hook_name: str, probe: torch.Tensor) -> HFReader | None:
        """A reader when the Hugging Face model gives TransformerLens's activation and logits on
        `probe`."""
        if hf_model is None:
            return None
        reader = cls(hf_model, hook_name)
        if reader.point is None:
            log.info(
                "no Hugging Face module for %s; reading activations through TransformerLens",
                hook_name,
            )
            return None
        try:
            x, logits = reader.activations_and_logits(probe)
        except (
            Exception
        ) as err:  # an architecture whose layers take other arguments: TransformerLens works
            log.info("the Hugging Face forward failed on a probe (%s); using TransformerLens", err)
            return None
        with torch.no_grad():
            tl_logits, cache = tl_model.run_with_cache(
                probe.to(tl_model.cfg.device), names_filter=hook_name
            )
        same = (
            x.shape == cache[hook_name].shape
            and _close(x, cache[hook_name])
            and _close(logits, tl_logits)
        )
        if not same:
            log.warning(
                "the Hugging Face model's %s or logits differ from TransformerLens's; using "
                "TransformerLens",
                hook_name,
            )
            return None
        return reader


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    a, b = a.float().cpu(), b.float().cpu()
    scale = b.abs().max().clamp_min(1e-6)
    return bool(((a - b).abs().max() / scale) < 1e-3)
