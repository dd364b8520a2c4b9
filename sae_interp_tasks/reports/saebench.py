"""SAEBench's result files, out and in: where published SAE scores live (Neuronpedia ingests them).

Out (`sae-interp export RESULTS --format saebench --output DIR`): per SAE and task, one file
`DIR/<eval_type_id>/<sae>_eval_results.json` in SAEBench's layout (`eval_type_id`, `eval_config`,
`eval_id`, `datetime_epoch_millis`, `eval_result_metrics` by category, `eval_result_details`,
`sae_lens_id` / `sae_lens_release_id` / `sae_lens_version`, `sae_cfg_dict`,
`eval_result_unstructured`). A kind that SAEBench also evaluates declares in its report where its
numbers go (sae_core onto SAEBench's `core`; what SAEBench reports and we do not compute is left
out, listed in `eval_result_unstructured.left_out`, never invented). Every other task is written
under its own eval type (its task name, one category of its metrics), so our scores are never
passed off as SAEBench's. Standard errors and chance levels go into `eval_result_unstructured`.

In (`sae-interp leaderboard` / `compare` given SAEBench files): each file becomes a run of one task,
marked as SAEBench's (`source` in its settings, so it forms its own settings group), with the
metrics that mean the same thing as ours; a file of an eval type nothing here computes (SCR,
say) becomes a task of its own, `saebench_<eval type>`, with SAEBench's numbers as it wrote them;
a file with no number at all is skipped with a note.
"""

from __future__ import annotations

import json
import logging
import math
import re
import uuid
from pathlib import Path

from sae_interp_tasks.errors import SaeInterpError
from sae_interp_tasks.reports.results_io import Metric, Run, TaskResult
from sae_interp_tasks.reports.spec import ReportSpec, builtin_kinds, builtin_report

log = logging.getLogger(__name__)
SOURCE = "SAEBench"


def _version() -> str:
    from importlib.metadata import version

    return version("sae-interp-tasks")


# --- out -----------------------------------------------------------------------------------------
def export(runs: list[Run]) -> dict[Path, str]:
    """Relative path -> JSON text for every task of every run."""
    files: dict[Path, str] = {}
    for run in runs:
        for task, result in run.tasks.items():
            mapping = result.report.saebench
            eval_type = mapping.get("eval_type_id") or task
            data = {
                "eval_type_id": eval_type,
                "eval_config": {"model_name": run.subject_model or "", **result.settings},
                "eval_id": str(
                    uuid.uuid5(uuid.NAMESPACE_URL, f"sae-interp-tasks:{run.path}:{task}")
                ),
                "datetime_epoch_millis": int(run.epoch_seconds * 1000),
                "eval_result_metrics": _metrics(task, result, mapping),
                "sae_bench_commit_hash": f"not SAEBench: written by sae-interp-tasks {_version()}",
                "sae_lens_id": run.sae_id,
                "sae_lens_release_id": run.release,
                "sae_lens_version": _sae_lens_version(),
                "sae_cfg_dict": {
                    "d_in": run.d_in,
                    "d_sae": run.d_sae,
                    "architecture": run.architecture,
                    "hook_name": run.hook_name,
                    "model_name": run.subject_model,
                    "sae_interp_label": run.sae,
                    "sae_interp_fingerprint": run.fingerprint,
                },
                "eval_result_unstructured": _unstructured(run, result, mapping),
            }
            if not mapping:
                data["eval_result_details"] = _details(result)
            elif mapping.get("details") == "dataset":  # one row: the run's dataset
                data["eval_result_details"] = [_dataset_row(result, mapping)]
            elif mapping.get("details") == "letters":  # one row per scored letter
                data["eval_result_details"] = _letter_rows(run, result)
            elif mapping.get("details"):
                data["eval_result_details"] = _feature_details(run, task, mapping["details"])
            files[Path(eval_type) / f"{file_name(run)}_eval_results.json"] = (
                json.dumps(data, indent=1) + "\n"
            )
    return files


def _metrics(task: str, result: TaskResult, mapping: dict) -> dict:
    if mapping:  # the metrics this run computed (a probing run's k, say), by their names
        return {
            category: {
                theirs: _value(result, ours)
                for theirs, ours in names.items()
                if ours in result.metrics
            }
            for category, names in mapping["metrics"].items()
        }
    return {task: {m: _value(result, m) for m in result.metrics}}


def _value(result: TaskResult, metric: str):
    value = result.metrics[metric].value if metric in result.metrics else math.nan
    return None if not math.isfinite(value) else value


def _unstructured(run: Run, result: TaskResult, mapping: dict) -> dict:
    return {
        "written_by": f"sae-interp-tasks {_version()}",
        "results_file": str(run.path),
        "task": result.task,
        "stderr": {m: v.stderr for m, v in result.metrics.items() if v.stderr is not None},
        "chance": {m: c for m, c in result.report.chance.items() if c in result.metrics},
        "left_out": mapping.get("left_out", {}),
        "n_docs": result.n_docs,
    }


def _details(result: TaskResult) -> list[dict]:
    """Per doc (latent), its metrics from the samples, where they were logged."""
    samples = result.samples
    if samples is None:
        return []
    rows = []
    for i, key in enumerate(samples.keys):
        row = {"index": key}
        row.update(
            {m: float(v[i]) for m, v in samples.values.items() if math.isfinite(float(v[i]))}
        )
        rows.append(row)
    return rows


def _dataset_row(result: TaskResult, mapping: dict) -> dict:
    """The per-dataset detail row (e.g. sparse probing's): the dataset and the run's mapped
    metrics over it."""
    row = {"dataset_name": str(result.settings.get("probe_dataset", result.task))}
    for values in _metrics(result.task, result, mapping).values():
        row.update(values)
    return row


LETTER_ROW = {  # SAEBench's per-letter absorption field -> (our per-doc metric, integer?)
    "mean_absorption_fraction": ("absorption_fraction", False),
    "full_absorption_rate": ("full_absorption_rate", False),
    "num_full_absorption": ("num_full_absorption", True),
    "num_probe_true_positives": ("num_probe_true_positives", True),
    "num_split_features": ("num_split_features", True),
}


def _letter_rows(run: Run, result: TaskResult) -> list[dict]:
    """Absorption's per-letter rows from the samples (letters left unscored have none); [] with a
    warning when the run logged no samples (its file then lacks them)."""
    samples = result.samples
    if samples is None:
        log.warning(
            "%s: %s logged no samples (rerun it with --log_samples); its SAEBench file has no "
            "per-letter eval_result_details",
            run.path,
            result.task,
        )
        return []
    rows = []
    for i, letter in enumerate(samples.keys):
        values = {theirs: samples.values[ours][i] for theirs, (ours, _) in LETTER_ROW.items()}
        if all(math.isfinite(float(v)) for v in values.values()):
            rows.append(
                {"first_letter": str(letter)}
                | {k: int(v) if LETTER_ROW[k][1] else float(v) for k, v in values.items()}
            )
    return rows


def _feature_details(run: Run, task: str, source: str) -> list[dict]:
    """SAEBench's per-latent rows (`eval_result_details`) from what the run recorded under
    `source` (e.g. sae_core's feature_metrics), NaN written as SAEBench writes it (-1); [] with a
    warning when the run recorded none (its file then lacks them)."""
    found = getattr(run, source, {}).get(task)
    if not found:
        log.warning(
            "%s: %s recorded no per-latent metrics (rerun it with feature_metrics: true); its "
            "SAEBench file has no eval_result_details",
            run.path,
            task,
        )
        return []
    names = [name for name in found if isinstance(found[name], list)]
    width = len(found[names[0]]) if names else 0
    return [
        {"index": i, **{n: -1 if found[n][i] is None else found[n][i] for n in names}}
        for i in range(width)
    ]


def file_name(run: Run) -> str:
    label = re.sub(r"[^A-Za-z0-9._+-]+", "_", run.sae).strip("_") or "sae"
    return f"{label}_{run.fingerprint}" if run.fingerprint else label


def _sae_lens_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("sae-lens")
    except PackageNotFoundError:
        return None


# --- in ------------------------------------------------------------------------------------------
def is_saebench(data: dict) -> bool:
    return (
        isinstance(data, dict)
        and {"eval_type_id", "eval_result_metrics"} <= data.keys()
        and "results" not in data
    )


def read_saebench(path: Path, data: dict) -> Run | None:
    """A SAEBench result file as a run of one task; None (with a note) when its eval type maps onto
    nothing."""
    eval_type = str(data.get("eval_type_id"))
    task, report, metrics = _mapped(eval_type, data.get("eval_result_metrics") or {})
    if task is None:
        log.warning("%s: SAEBench eval type %r holds no number to read; skipped", path, eval_type)
        return None
    cfg = data.get("sae_cfg_dict") or {}
    release, sae_id = data.get("sae_lens_release_id"), data.get("sae_lens_id")
    label = (
        f"{release}/{sae_id}" if release and sae_id else cfg.get("sae_interp_label") or path.stem
    )
    settings = {"source": f"{SOURCE} {eval_type}", **(data.get("eval_config") or {})}
    result = TaskResult(
        task=task,
        version=SOURCE,
        metrics=metrics,
        settings=settings,
        n_docs=0,
        samples=None,
        report=report,
    )
    millis = data.get("datetime_epoch_millis") or 0
    return Run(
        path=path,
        date=str(millis),
        sae=f"{label} ({SOURCE})",
        fingerprint=None,
        d_sae=_int(cfg.get("d_sae")),
        d_in=_int(cfg.get("d_in")),
        architecture=cfg.get("architecture"),
        hook_name=cfg.get("hook_name"),
        subject_model=cfg.get("model_name"),
        control=None,
        seed=None,
        tasks={task: result},
        release=release,
        sae_id=sae_id,
        epoch_seconds=millis / 1000,
    )


def _mapped(eval_type: str, categories: dict) -> tuple[str | None, ReportSpec | None, dict]:
    """(our task, its report, {our metric: Metric}) for a SAEBench eval type."""
    for kind in builtin_kinds().values():
        mapping = kind["report"].saebench
        if mapping.get("eval_type_id") == eval_type:
            better = kind["higher_is_better"]
            found = {
                ours: Metric(ours, float(categories[cat][theirs]), None, better.get(ours))
                for cat, names in mapping["metrics"].items()
                for theirs, ours in names.items()
                if isinstance((categories.get(cat) or {}).get(theirs), (int, float))
            }
            return mapping["task"], kind["report"], found
    # a file we exported under our own eval type (the task's name)
    report = builtin_report(eval_type, None)
    if report is not None and isinstance(categories.get(eval_type), dict):
        values = categories[eval_type]
        return (
            eval_type,
            report,
            {
                m: Metric(m, float(v), None, None)
                for m, v in values.items()
                if isinstance(v, (int, float))
            },
        )
    return _their_own(eval_type, categories)


def _their_own(eval_type: str, categories: dict) -> tuple[str | None, ReportSpec | None, dict]:
    """An eval type with no counterpart here (SCR, say): its numbers as a task of its own,
    `saebench_<eval type>`, as SAEBench wrote them (no per-doc scores, intervals or directions);
    headline: the first number of its first category. None when it holds no number."""
    numbers = {
        name: float(value)
        for values in categories.values()
        if isinstance(values, dict)
        for name, value in values.items()
        if isinstance(value, (int, float)) and not isinstance(value, bool)
    }
    if not numbers:
        return None, None, {}
    names = list(numbers)
    report = ReportSpec(headline=names[0], columns=tuple(names[:3]), position=900)
    return (
        f"saebench_{eval_type}",
        report,
        {m: Metric(m, v, None, None) for m, v in numbers.items()},
    )


def _int(value) -> int | None:
    try:
        return None if value is None else int(value)
    except (TypeError, ValueError):
        raise SaeInterpError(  # noqa: B904 (a user's file, not our bug: the cause adds nothing)
            f"sae_cfg_dict holds a non-integer width {value!r}; is this a SAEBench result file?"
        )
