"""Loading the SAE under evaluation: a sae_lens pretrained release, a folder, the demo, or a
control."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError

from sae_interp_tasks.errors import SaeInterpError, unknown
from sae_interp_tasks.records import SAESource
from sae_interp_tasks.stages import sparsify_saes
from sae_interp_tasks.stages.sae_memory import check_fits

log = logging.getLogger(__name__)

DEMO_SAE_DIR = Path(__file__).parent.parent / "data" / "demo_sae"
# an SAE's sae_lens metadata may name instrument settings suited to it (the embedded demo does: a
# small model on a 2-core CPU); they replace the task YAML's defaults, never a user's --metadata
INSTRUMENT_DEFAULTS_KEY = "sae_interp_defaults"
CONTROLS = ("random", "neurons")
DEFAULT_CONTROL_K = 32


@dataclass(frozen=True)
class SAEInfo:
    """What the rest of the pipeline needs to know about the loaded SAE."""

    label: str
    model_name: str
    hook_name: str
    prepend_bos: bool
    context_size: int | None
    dataset_path: str | None
    d_in: int
    d_sae: int
    architecture: str
    fingerprint: str  # hash of the weights: part of every cache key
    model_from_pretrained_kwargs: dict
    # a transcoder's output hook (it reads hook_name and writes this one); None for an SAE
    hook_name_out: str | None = None

    @property
    def write_hook(self) -> str:
        """Where the dictionary's output lives: the output hook of a transcoder, else the hook."""
        return self.hook_name_out or self.hook_name

    @property
    def hooks_label(self) -> str:
        """ "hook" for an SAE, "hook -> output hook" for a transcoder."""
        return f"{self.hook_name} -> {self.hook_name_out}" if self.hook_name_out else self.hook_name


def instrument_defaults(
    release: str | None, sae_id: str | None, path: str | None
) -> tuple[str, dict]:
    """(the SAE's label, its own instrument defaults) for a folder SAE or the demo, read from its
    cfg.json without loading it; a release has none here (its metadata is on the hub)."""
    label = SAESource(release=release, sae_id=sae_id, path=path).label
    if release:
        return label, {}
    try:
        meta = (
            json.loads((Path(path or DEMO_SAE_DIR) / "cfg.json").read_text()).get("metadata") or {}
        )
    except (OSError, ValueError):
        return label, {}
    found = meta.get(INSTRUMENT_DEFAULTS_KEY)
    return label, dict(found) if isinstance(found, dict) else {}


def validate_release(release: str, sae_id: str | None) -> None:
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    directory = get_pretrained_saes_directory()
    if release not in directory:
        if "/" in release:  # a hub repo id, as sae_lens also accepts
            return
        raise unknown(
            "release",
            release,
            directory,
            fix="see sae_lens's pretrained SAE table, or pass path=DIR for a local SAE",
        )
    if sae_id is None:
        raise SaeInterpError(
            f"release {release!r} needs sae_id=...; e.g. {next(iter(directory[release].saes_map))}"
        )
    if sae_id not in directory[release].saes_map:
        raise unknown(f"sae_id for release {release!r}", sae_id, directory[release].saes_map)


def _release_error(source: SAESource, err: Exception) -> SaeInterpError:
    """Why a release did not load, and how to get it: a file missing from the local hub cache
    offline names the repo and folder to download."""
    from huggingface_hub.errors import LocalEntryNotFoundError

    if isinstance(err, LocalEntryNotFoundError):
        from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

        entry = get_pretrained_saes_directory().get(source.release)
        repo = entry.repo_id if entry else source.release
        folder = entry.saes_map.get(source.sae_id, source.sae_id) if entry else source.sae_id
        return SaeInterpError(
            f"the SAE {source.label} is not in the local Hugging Face cache and the hub is not "
            f"reachable (HF_HUB_OFFLINE is set or there is no network); fetch it where the hub is "
            f"reachable: huggingface-cli download {repo} --include '{folder}/*', then rerun with "
            "the same HF_HOME (or pass path=DIR)"
        )
    return SaeInterpError(
        f"cannot load SAE {source.label}: {str(err).splitlines()[0][:300]} "
        "(check release/sae_id, your hub access, or pass path=DIR)"
    )


def check_folder(path: str, hookpoint: str | None = None) -> None:
    folder = Path(path)
    if not folder.is_dir():
        raise SaeInterpError(
            f"path={path!r} is not a folder; give a folder saved by sae_lens (cfg.json + "
            "sae_weights.safetensors) or by sparsify (cfg.json + sae.safetensors, or a folder of "
            "them)"
        )
    if sparsify_saes.is_sparsify(folder):
        sparsify_saes.checkpoint_folder(folder, hookpoint, f"path={path!r}")
        return
    for needed in ("cfg.json", "sae_weights.safetensors"):
        if not (folder / needed).exists():
            raise SaeInterpError(
                f"path={path!r} has no {needed}; give a folder saved by sae_lens's SAE.save_model "
                "(or by sparsify: cfg.json + sae.safetensors)"
            )


def check_source(source: SAESource) -> None:
    """The checks that need no download and no weights: a known release and sae_id, an SAE folder,
    a control."""
    if source.control is not None and source.control not in CONTROLS:
        raise unknown("control", source.control, CONTROLS)
    if source.release and not _sparsify_release(source):
        validate_release(source.release, source.sae_id)
    elif not source.release:
        check_folder(source.path or str(DEMO_SAE_DIR), source.hookpoint)


def _sparsify_release(source: SAESource) -> bool:
    """A hub repo of sparsify SAEs: `release=org/name,hookpoint=...` (sae_lens's releases take
    sae_id)."""
    return bool(source.release and source.hookpoint and not source.sae_id and "/" in source.release)


def _load_sparsify(source: SAESource, device: str, dtype: str):
    """A sparsify checkpoint from `path=` (with `hookpoint=` in a folder of several) or a hub
    repo."""
    label = source.label
    if source.release:
        from huggingface_hub import snapshot_download

        try:
            root = Path(
                snapshot_download(
                    source.release, allow_patterns=[f"{source.hookpoint}/*", "config.json"]
                )
            )
        except (
            OSError,
            ValueError,
        ) as err:  # offline, not found, gated: all OSError in huggingface_hub
            raise SaeInterpError(
                f"cannot load the sparsify SAE {label}: {str(err).splitlines()[0][:300]} (check "
                "the "
                "repo and hookpoint and your hub access, or download it and pass path=DIR)"
            ) from err
    else:
        root = Path(source.path)
    folder, hookpoint = sparsify_saes.checkpoint_folder(root, source.hookpoint, label)
    model_name = sparsify_saes.subject_name(folder, source.model, label)
    return sparsify_saes.load(folder, hookpoint, model_name, device, dtype)


def _load_from_disk(path: str, device: str, dtype: str):
    from sae_lens import SAE

    check_folder(path)
    folder = Path(path)
    try:
        json.loads((folder / "cfg.json").read_text())
        return SAE.load_from_disk(str(folder), device=device, dtype=dtype)
    except (ValueError, KeyError, TypeError, OSError, SafetensorError) as err:
        raise SaeInterpError(
            f"path={path!r} holds a malformed SAE ({type(err).__name__}: {str(err)[:200]}); "
            "re-save it with sae_lens's SAE.save_model"
        ) from err


def load_sae(source: SAESource, device: str = "cpu", dtype: str = "float32"):
    """The SAE (a sae_lens SAE module, eval mode) and its SAEInfo."""
    from sae_lens import SAE

    check_source(source)
    if not source.release:
        check_fits(Path(source.path or DEMO_SAE_DIR), source.hookpoint, source.label, device, dtype)
    if _sparsify_release(source) or (source.path and sparsify_saes.is_sparsify(Path(source.path))):
        sae = _load_sparsify(source, device, dtype)
    elif source.release:
        try:
            sae = SAE.from_pretrained(source.release, source.sae_id, device=device, dtype=dtype)
        except (
            OSError,
            ValueError,
        ) as err:  # huggingface_hub: not found, offline, gated (all OSError)
            raise _release_error(source, err) from err
    else:
        sae = _load_from_disk(source.path or str(DEMO_SAE_DIR), device, dtype)
    if source.control and is_transcoder(sae):
        raise SaeInterpError(
            f"control={source.control} is defined for SAEs (directions that reconstruct the "
            "activation they read); a transcoder has no control here: drop control=, or compare "
            "it with another transcoder"
        )
    if source.control:
        sae = control_sae(sae, source.control, k=source.control_k, seed=0)
    sae.eval()
    for p in sae.parameters():
        p.requires_grad_(False)
    meta = sae.cfg.metadata
    hook_out = transcoder_output_hook(sae, source.label)
    if not meta.hook_name or not meta.model_name:
        raise SaeInterpError(
            f"SAE {source.label} names no hook_name/model_name in its metadata; "
            "set cfg.metadata.hook_name and model_name before saving it"
        )
    info = SAEInfo(
        label=source.label,
        model_name=meta.model_name,
        hook_name=meta.hook_name,
        prepend_bos=bool(meta.prepend_bos if meta.prepend_bos is not None else True),
        context_size=meta.context_size,
        dataset_path=meta.dataset_path,
        d_in=sae.cfg.d_in,
        d_sae=sae.cfg.d_sae,
        architecture=sae.cfg.architecture(),
        fingerprint=weights_fingerprint(sae),
        model_from_pretrained_kwargs=dict(meta.model_from_pretrained_kwargs or {}),
        hook_name_out=hook_out,
    )
    return sae, info


def is_transcoder(sae) -> bool:
    return "transcoder" in sae.cfg.architecture()


def transcoder_output_hook(sae, label: str) -> str | None:
    """A transcoder's output hook (its metadata's `hook_name_out`), None for an SAE. A transcoder
    that names none, or an SAE that names one, is refused: which activation it writes decides what
    every task measures."""
    out_hook = getattr(sae.cfg.metadata, "hook_name_out", None)
    if is_transcoder(sae) and not out_hook:
        raise SaeInterpError(
            f"{label} is a transcoder ({sae.cfg.architecture()}) but its metadata names no "
            "hook_name_out (the activation it writes); set cfg.metadata.hook_name_out (e.g. "
            "blocks.6.hook_mlp_out) and save it again"
        )
    if out_hook and not is_transcoder(sae):
        raise SaeInterpError(
            f"{label} names hook_name_out={out_hook!r} but is a {sae.cfg.architecture()} SAE, "
            "which reconstructs the activation it reads; save it as a sae_lens Transcoder (or "
            "drop hook_name_out)"
        )
    return out_hook


# the codes a stage holds at once, [positions (or texts, words), width]: 2^25 floats (128 MB); a
# wider batch is encoded a block at a time (sae_core, the pass's subset, probing, absorption)
MAX_CODE_FLOATS = 2**25


def reconstruct(sae, x: torch.Tensor, acts: torch.Tensor) -> torch.Tensor:
    """The dictionary's output for input `x` with code `acts`: the reconstruction of `x` for an
    SAE, the prediction of the output hook for a transcoder (its skip connection included)."""
    out = sae.decode(acts)
    skip = getattr(sae, "W_skip", None)
    if skip is not None:
        out = out + x.to(skip.dtype) @ skip.T
    return out


def weights_fingerprint(sae) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(sae.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    digest.update(sae.cfg.architecture().encode())
    return digest.hexdigest()[:16]


def control_sae(sae, kind: str, k: int | None = None, seed: int = 0):
    """A calibration SAE: TopK over random unit directions (`random`, same shape) or over the
    neuron basis of the hooked activation (`neurons`, d_sae = d_in), with the same metadata.

    TopK keeps the control as sparse as an SAE (k latents a token), so its latents can be
    explained and scored like real ones; k defaults to the SAE's own k, else 32.
    """
    from sae_lens import TopKSAE, TopKSAEConfig

    d_in = sae.cfg.d_in
    k = int(k or getattr(sae.cfg, "k", None) or DEFAULT_CONTROL_K)
    if kind == "random":
        gen = torch.Generator().manual_seed(seed)
        directions = torch.randn(sae.cfg.d_sae, d_in, generator=gen)
        directions = directions / directions.norm(dim=-1, keepdim=True)
    else:
        directions = torch.eye(d_in)
    cfg = TopKSAEConfig(
        d_in=d_in,
        d_sae=directions.shape[0],
        k=min(k, directions.shape[0]),
        dtype=sae.cfg.dtype,
        device=str(sae.W_dec.device),
        apply_b_dec_to_input=True,
    )
    cfg.metadata = type(sae.cfg.metadata)(**sae.cfg.metadata.to_dict())
    control = TopKSAE(cfg)
    with torch.no_grad():
        control.W_dec.copy_(directions.to(control.W_dec))
        control.W_enc.copy_(directions.T.to(control.W_enc))
        control.b_enc.zero_()
        control.b_dec.copy_(sae.b_dec.detach().to(control.b_dec))
    return control


def load_reference(
    args: dict, sae, info: SAEInfo, other_hook: bool, device: str = "cpu", dtype: str = "float32"
):
    """A second SAE to compare the evaluated one with, named by --model_args-style `args`, loaded
    and checked like the first: (sae, SAEInfo). `control=random` alone: a random dictionary of the
    evaluated SAE's own shape; no keys at all: the embedded demo SAE."""
    control = args.get("control")
    if control is not None and control not in CONTROLS:
        raise unknown("reference control", control, CONTROLS)
    control_k = int(args["control_k"]) if args.get("control_k") else None
    if not (args.get("release") or args.get("path")) and control is not None:
        # seed 1: never the same directions as a `control=random` model (seed 0)
        ref = control_sae(sae, control, k=control_k, seed=1).eval()
        label = f"{info.label}+control={control}"
        return ref, SAEInfo(
            **{
                **info.__dict__,
                "label": label,
                "d_sae": ref.cfg.d_sae,
                "architecture": ref.cfg.architecture(),
                "fingerprint": weights_fingerprint(ref),
            }
        )
    source = SAESource(
        release=args.get("release"),
        sae_id=args.get("sae_id"),
        path=args.get("path"),
        control=control,
        control_k=control_k,
        hookpoint=args.get("hookpoint"),
    )
    try:
        ref, ref_info = load_sae(source, device=device, dtype=dtype)
    except SaeInterpError as err:
        raise SaeInterpError(f"the reference SAE does not load: {err}") from err
    if ref_info.d_in != info.d_in:
        raise SaeInterpError(
            f"the reference {ref_info.label} reads {ref_info.d_in}-wide activations but the SAE "
            f"reads {info.d_in}-wide ones, so their directions cannot be compared; pass a "
            f"reference trained on {info.model_name}"
        )
    if ref_info.model_name != info.model_name:
        raise SaeInterpError(
            f"the reference {ref_info.label} was trained on {ref_info.model_name}, the SAE on "
            f"{info.model_name}; pass a reference of the same subject model"
        )
    if ref_info.hook_name != info.hook_name and not other_hook:
        raise SaeInterpError(
            f"the reference {ref_info.label} reads {ref_info.hook_name} but the SAE reads "
            f"{info.hook_name}; to compare SAEs at different hooks (layer overlap) pass "
            "--metadata '{\"reference_other_hook\": true}'"
        )
    return ref, ref_info
