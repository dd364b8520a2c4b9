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

    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch "
        f"{torch.__version__}, {torch.get_num_threads()} threads"
    )


def save(name: str, payload: dict) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2))
    return path


def bar_seconds(log_text: str) -> dict[str, float]:
    """Seconds the progress bars of a run took, by description, from the run's stderr (tqdm's
    states of a bar: `desc:  40%|...| 4/10 [00:12<00:18, ...]`, the last at 100%). Bars of one
    description (one per latent, say) add up; a finished bar drawn again counts once."""
    import re

    state = re.compile(r"^(.+?):\s+(\d+)%\|.*\| (\d+)/(\d+) \[(?:(\d+):)?(\d+):(\d+)<")
    total: dict[str, float] = {}
    finished: dict[
        str, float | None
    ] = {}  # the seconds of the description's bar last seen finished, else None
    for line in log_text.replace("\r", "\n").splitlines():
        found = state.match(line.strip())
        if not found:
            continue
        desc, _, done, of, hours, minutes, seconds = found.groups()
        secs = int(hours or 0) * 3600 + int(minutes) * 60 + int(seconds)
        if done != of:
            finished[desc] = None  # a bar of this description is running
            continue
        previous = finished.get(desc)
        # a redraw replaces its bar's earlier state
        total[desc] = total.get(desc, 0) + secs - (previous or 0)
        finished[desc] = secs
    return total


def lm_eval_run(
    folder: Path, log: Path, model_args: str | None, tasks: str, meta: dict, limit: int | None
) -> float:
    """One `lm_eval --model sae` run with samples logged into `folder` (stderr into `log`); its
    wall seconds. A failed run stops the benchmark with the end of its stderr."""
    import subprocess
    import sys
    import time

    start = time.time()
    proc = subprocess.run(
        [
            str(Path(sys.executable).parent / "lm_eval"),
            "--model",
            "sae",
            *(["--model_args", model_args] if model_args else []),
            "--tasks",
            tasks,
            "--metadata",
            json.dumps(meta),
            "--batch_size",
            "8",
            "--log_samples",
            "--output_path",
            str(folder),
            *(["--limit", str(limit)] if limit else []),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    log.write_text(proc.stderr)
    if proc.returncode != 0:
        raise SystemExit(f"{folder.name} failed:\n{proc.stderr[-2000:]}")
    return time.time() - start
