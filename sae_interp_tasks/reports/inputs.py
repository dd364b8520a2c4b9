"""What `sae-interp` reads: lm-eval results files of this package's tasks (results_io) and SAEBench
result files (saebench), given as files or found in folders."""

from __future__ import annotations

from pathlib import Path

from sae_interp_tasks.errors import SaeInterpError
from sae_interp_tasks.reports import saebench
from sae_interp_tasks.reports.results_io import Run, find_results, load_json, read_run


def read_inputs(paths: list[str | Path], load_samples: bool = True) -> list[Run]:
    """Every run the paths hold; SAEBench files of eval types nothing here maps are skipped with a
    note."""
    runs, skipped = [], []
    for path in find_results(paths):
        data = load_json(path)
        if saebench.is_saebench(data):
            run = saebench.read_saebench(path, data)
            if run is None:
                skipped.append(path.name)
            else:
                runs.append(run)
        else:
            runs.append(read_run(path, load_samples, data=data))
    if not runs:
        raise SaeInterpError(
            f"{', '.join(map(str, paths))} hold no results this package can read (skipped SAEBench "
            f"files of eval types with no counterpart here: {', '.join(skipped)}); give lm_eval "
            "results of this package's tasks or SAEBench core results"
        )
    return runs
