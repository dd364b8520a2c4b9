"""Shared set-up for the benchmark scripts: the embedded default (demo SAE on the bundled model)."""

from __future__ import annotations

import json
import os
import platform
import resource
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
RESULTS = Path(__file__).parent / "results"


def demo(device: str = "cpu"):
    from sae_interp_tasks.stages.saes import SAESource, load_sae
    from sae_interp_tasks.stages.subject import load_subject

    sae, info = load_sae(SAESource(), device=device)
    model = load_subject(info.model_name, device=device)
    return model, sae, info


def sync(device: str) -> None:
    """Wait for queued GPU work, so a timer read after it measures the work itself."""
    if str(device).startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def machine() -> str:
    import torch

    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads"


def save(name: str, payload: dict) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2))
    return path
