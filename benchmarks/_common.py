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


def bar_seconds(log_text: str) -> dict[str, float]:
    """Seconds each finished progress bar of a run took, by its description, from the run's stderr (tqdm's last
    state of a bar: `desc: 100%|...| n/n [mm:ss<00:00, ...]`). Bars of the same description add up."""
    import re

    finished = {}
    for line in log_text.replace("\r", "\n").splitlines():
        found = re.match(r"^(.+?): 100%\|.*\| (\d+)/\2 \[(?:(\d+):)?(\d+):(\d+)<", line.strip())
        if found:
            desc, _, hours, minutes, seconds = found.groups()
            # tqdm redraws a finished bar: keep one final state per bar (same description, same count)
            finished[(desc, found.group(2), line.strip().split("[")[0])] = (
                int(hours or 0) * 3600 + int(minutes) * 60 + int(seconds))
    out: dict[str, float] = {}
    for (desc, _, _), secs in finished.items():
        out[desc] = out.get(desc, 0) + secs
    return out
