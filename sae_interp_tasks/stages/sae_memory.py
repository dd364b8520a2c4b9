"""Whether an SAE folder's weights fit the memory of the device they are loaded on, checked from
the safetensors header before anything is loaded (a release is sized when the hub downloads it)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from sae_interp_tasks.errors import SaeInterpError
from sae_interp_tasks.stages import sparsify_saes


def available_memory(device: str) -> int | None:
    """Bytes free for new tensors on `device` (MemAvailable of the host for the CPU), or None where
    it cannot be read."""
    try:
        if str(device).startswith("cuda"):
            return int(torch.cuda.mem_get_info(torch.device(device))[0])
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, RuntimeError, ValueError, IndexError):
        return None
    return None


def check_fits(folder: Path, hookpoint: str | None, label: str, device: str, dtype: str) -> None:
    """A folder SAE whose weights, in `dtype`, need more memory than `device` has free: one line
    saying how much and what to pass, before anything is loaded. Read from the safetensors
    header (shapes only)."""
    from safetensors import SafetensorError, safe_open

    if sparsify_saes.is_sparsify(folder):
        folder, _ = sparsify_saes.checkpoint_folder(folder, hookpoint, label)
    files = [
        f
        for f in (folder / "sae_weights.safetensors", folder / sparsify_saes.WEIGHTS)
        if f.exists()
    ]
    if not files:
        return
    try:
        with safe_open(str(files[0]), "pt") as weights:
            entries = sum(int(np.prod(weights.get_slice(k).get_shape())) for k in weights.keys())
    except (SafetensorError, OSError):  # a malformed file: the loader's own error says so
        return
    itemsize = torch.empty(0, dtype=getattr(torch, str(dtype), torch.float32)).element_size()
    need, free = entries * itemsize, available_memory(device)
    if free is not None and need > free:
        smaller = "" if itemsize <= 2 else "dtype=bfloat16 (half of it), "
        raise SaeInterpError(
            f"{label}'s weights need {_size(need)} in {dtype} but {device} has {_size(free)} free; "
            f"pass {smaller}device=cuda with room for them, or free memory"
        )


def _size(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"
