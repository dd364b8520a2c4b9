"""SAEs trained with EleutherAI's sparsify (the checkpoints delphi reads): one folder per hookpoint
with
`cfg.json` and `sae.safetensors`, or a parent folder holding several.

The checkpoint is loaded with the library itself (`sparsify.SparseCoder.load_from_disk`) and handed
to the rest of the pipeline as the sae_lens `TopKSAE` it equals: sparsify's encoder is ReLU then
top-k of `W_enc (x - b_dec) + b_enc`, its decoder `acts @ W_dec + b_dec`, which is sae_lens's TopK
SAE with the decoder bias subtracted from the input. What sae_lens has no equal of is refused with
one line naming it: skip connections of SAEs, GroupMax.

A transcoder (`transcode: true`) predicts its module's output from the module's input: it becomes a
sae_lens `Transcoder` (`SkipTranscoder` with a skip connection) with TopK, reading the
TransformerLens hook of the module's input and writing the hook of its output (`transcoder_hooks`).
The input of a layer's MLP or attention is its norm's output, gain (and bias) applied, where
TransformerLens's nearest hook (`ln2.hook_normalized`) is before them: the metadata names the norm
(`input_norm`) and `fold_input_norm` folds its gain and bias into the encoder once the subject
model is loaded.

A sparsify hookpoint names a module of the Hugging Face model (`layers.6`, `layers.6.mlp`,
`h.3.attn`); it is mapped onto TransformerLens's hook names in `hook_name`. The subject model is
`model=` or, where the checkpoint was saved by sparsify's trainer, the `model` its run config names.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from sae_interp_tasks.errors import SaeInterpError

WEIGHTS = "sae.safetensors"
_HOOKS = (  # sparsify hookpoint (a module of the HF model) -> TransformerLens hook name
    (
        re.compile(r"^(?:model\.)?(?:layers|h|gpt_neox\.layers|transformer\.h)\.(\d+)$"),
        "blocks.{}.hook_resid_post",
    ),
    (
        re.compile(r"^(?:model\.)?(?:layers|h|gpt_neox\.layers|transformer\.h)\.(\d+)\.mlp$"),
        "blocks.{}.hook_mlp_out",
    ),
    (
        re.compile(
            r"^(?:model\.)?(?:layers|h|gpt_neox\.layers|transformer\.h)\.(\d+)\.(?:self_attn|attn|attention)$"
        ),
        "blocks.{}.hook_attn_out",
    ),
)


def is_sparsify(folder: Path) -> bool:
    """A sparsify checkpoint (cfg.json + sae.safetensors), or a folder of them (one per
    hookpoint)."""
    folder = Path(folder)
    return (folder / WEIGHTS).exists() or bool(hookpoints(folder))


def hookpoints(folder: Path) -> list[str]:
    return (
        sorted(p.name for p in Path(folder).iterdir() if p.is_dir() and (p / WEIGHTS).exists())
        if Path(folder).is_dir()
        else []
    )


def hook_name(hookpoint: str) -> str:
    for pattern, hook in _HOOKS:
        match = pattern.match(hookpoint)
        if match:
            return hook.format(match.group(1))
    raise SaeInterpError(
        f"the sparsify hookpoint {hookpoint!r} maps onto no TransformerLens hook; supported: "
        "layers.N (residual stream after layer N), layers.N.mlp, layers.N.self_attn (and h.N..., "
        "gpt_neox.layers.N...)"
    )


_TRANSCODER_HOOKS = (  # sparsify hookpoint -> (input hook, the norm applied to it, output hook)
    (
        re.compile(r"^(?:model\.)?(?:layers|h|gpt_neox\.layers|transformer\.h)\.(\d+)\.mlp$"),
        ("blocks.{}.ln2.hook_normalized", "blocks.{}.ln2", "blocks.{}.hook_mlp_out"),
    ),
    (
        re.compile(
            r"^(?:model\.)?(?:layers|h|gpt_neox\.layers|transformer\.h)\.(\d+)\.(?:self_attn|attn|attention)$"
        ),
        ("blocks.{}.ln1.hook_normalized", "blocks.{}.ln1", "blocks.{}.hook_attn_out"),
    ),
    (
        re.compile(r"^(?:model\.)?(?:layers|h|gpt_neox\.layers|transformer\.h)\.(\d+)$"),
        ("blocks.{}.hook_resid_pre", None, "blocks.{}.hook_resid_post"),
    ),
)


def transcoder_hooks(hookpoint: str) -> tuple[str, str | None, str]:
    """(input hook, the norm folded into the encoder or None, output hook) of a transcoder."""
    for pattern, hooks in _TRANSCODER_HOOKS:
        match = pattern.match(hookpoint)
        if match:
            return tuple(h.format(match.group(1)) if h else None for h in hooks)
    raise SaeInterpError(
        f"the sparsify transcoder's hookpoint {hookpoint!r} maps onto no TransformerLens hooks; "
        "supported: layers.N.mlp, layers.N.self_attn, layers.N (and h.N..., gpt_neox.layers.N...)"
    )


def checkpoint_folder(folder: Path, hookpoint: str | None, label: str) -> tuple[Path, str]:
    """(the checkpoint's folder, its hookpoint) for `path=` a checkpoint or a parent folder and
    `hookpoint=`."""
    folder = Path(folder)
    if (folder / WEIGHTS).exists():
        return folder, hookpoint or folder.name
    found = hookpoints(folder)
    if hookpoint is None:
        raise SaeInterpError(
            f"{label} holds sparsify SAEs for {len(found)} hookpoints ({', '.join(found)}); choose "
            f"one with hookpoint=, e.g. --model_args path={folder},hookpoint={found[0]}"
        )
    if hookpoint not in found:
        raise SaeInterpError(f"{label} has no hookpoint {hookpoint!r}; it has {', '.join(found)}")
    return folder / hookpoint, hookpoint


def subject_name(checkpoint: Path, model: str | None, label: str) -> str:
    """`model=`, else the model sparsify's trainer recorded in the run's config (config.json beside
    the hookpoint folders)."""
    if model:
        return model
    for config in (checkpoint.parent / "config.json", checkpoint / "config.json"):
        try:
            named = json.loads(config.read_text()).get("model")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(named, str) and named:
            return named
    raise SaeInterpError(
        f"nothing in {label} names the subject model its SAE was trained on (sparsify checkpoints "
        "record none); give it with model=, e.g. --model_args path=...,model=EleutherAI/pythia-160m"
    )


def load(
    checkpoint: Path, hookpoint: str, model_name: str, device: str = "cpu", dtype: str = "float32"
):
    """The checkpoint as an equal sae_lens TopKSAE, with the metadata the pipeline reads."""
    try:
        from sparsify import SparseCoder
    except ImportError as err:
        raise SaeInterpError(
            "sparsify checkpoints need the package eai-sparsify: pip install eai-sparsify"
        ) from err
    from sae_lens import TopKSAE, TopKSAEConfig
    from sae_lens.saes.sae import SAEMetadata

    coder = SparseCoder.load_from_disk(checkpoint, device="cpu")
    cfg = coder.cfg
    _refuse_unsupported(checkpoint, cfg)
    if cfg.transcode:
        sae, meta = _transcoder(coder, hookpoint, dtype, device)
    else:
        sae_cfg = TopKSAEConfig(
            d_in=coder.d_in,
            d_sae=coder.num_latents,
            k=cfg.k,
            dtype=dtype,
            device=device,
            apply_b_dec_to_input=True,
        )
        sae, meta = TopKSAE(sae_cfg), {"hook_name": hook_name(hookpoint)}
    with torch.no_grad():
        sae.W_enc.copy_(coder.encoder.weight.T.to(sae.W_enc))
        sae.b_enc.copy_(coder.encoder.bias.to(sae.b_enc))
        sae.W_dec.copy_(coder.W_dec.to(sae.W_dec))
        sae.b_dec.copy_(coder.b_dec.to(sae.b_dec))
        if coder.W_skip is not None:
            sae.W_skip.copy_(coder.W_skip.to(sae.W_skip))
    sae.cfg.metadata = SAEMetadata(
        **{
            **sae.cfg.metadata.to_dict(),
            "model_name": model_name,
            "prepend_bos": True,
            "sparsify_hookpoint": hookpoint,
            **meta,
        }
    )
    return sae.to(device)


def _refuse_unsupported(checkpoint: Path, cfg) -> None:
    """One line naming what sae_lens has no equal of: an SAE's skip connection, GroupMax."""
    refused = [
        what
        for what, present in (
            (
                "a skip connection (skip_connection: true)",
                cfg.skip_connection and not cfg.transcode,
            ),
            (f"the {cfg.activation} activation", cfg.activation != "topk"),
        )
        if present
    ]
    if refused:
        raise SaeInterpError(
            f"sparsify checkpoint {checkpoint} has {' and '.join(refused)}, which this package "
            "does not score (it reads TopK SAEs that reconstruct the activation they encode, and "
            "TopK transcoders)"
        )


def _transcoder(coder, hookpoint: str, dtype: str, device: str):
    """(a sae_lens Transcoder of the checkpoint's shape with sparsify's TopK, its hook metadata)."""
    from sae_lens import SkipTranscoder, SkipTranscoderConfig, Transcoder, TranscoderConfig
    from sae_lens.saes.topk_sae import TopK

    read, norm, write = transcoder_hooks(hookpoint)
    skip = coder.W_skip is not None
    config, cls = (SkipTranscoderConfig, SkipTranscoder) if skip else (TranscoderConfig, Transcoder)
    sae = cls(
        config(
            d_in=coder.d_in,
            d_sae=coder.num_latents,
            d_out=coder.W_dec.shape[1],
            dtype=dtype,
            device=device,
            apply_b_dec_to_input=False,
        )
    )
    sae.activation_fn = TopK(coder.cfg.k)  # sparsify's encoder: ReLU, then the top k
    return sae, {
        "hook_name": read,
        "hook_name_out": write,
        "input_norm": norm,
        "sparsify_k": coder.cfg.k,
    }


@torch.no_grad()
def fold_input_norm(sae, model) -> None:
    """A sparsify transcoder of a layer's MLP or attention reads its norm's output; fold the norm's
    gain (and bias) into the encoder (and skip connection), so it reads TransformerLens's
    `ln.hook_normalized` (before them) as sparsify read the module's input. Once, in place; an SAE
    with no `input_norm` in its metadata is left alone."""
    norm = getattr(sae.cfg.metadata, "input_norm", None)
    if not norm or getattr(sae, "_input_norm_folded", False):
        return
    params = dict(model.named_parameters())
    gain = params.get(f"{norm}.w")
    if gain is None:
        raise SaeInterpError(
            f"the transcoder reads the output of {norm}, but the subject model has no {norm}.w "
            "(its norm was folded into the weights?); load the model without processing"
        )
    bias = params.get(f"{norm}.b")
    gain = gain.to(sae.W_enc)
    if bias is not None:
        sae.b_enc.add_(bias.to(sae.W_enc) @ sae.W_enc)
    skip = getattr(sae, "W_skip", None)
    if skip is not None:
        if bias is not None:
            sae.b_dec.add_(bias.to(skip) @ skip.T)
        skip.mul_(gain[None, :])
    sae.W_enc.mul_(gain[:, None])
    sae._input_norm_folded = True
