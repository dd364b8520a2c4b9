"""Explanations and their scores out, in delphi's and Neuronpedia's layouts, so that a run here is
read by those tools (`sae-interp export RESULTS --format delphi|neuronpedia --output DIR`).

Both read what the run logged with `--log_samples`: each latent's explanation (any latent task that
reads explanations logs it) and, per task, its scores and the windows its scorer judged.

- delphi (its run folder, as `python -m delphi` writes it): `<sae>/explanations/<module>_latent<i>
  .txt` (the explanation as a JSON string), `<sae>/scores/detection/` and `scores/fuzz/` (per
  latent a JSON list of the windows judged: `str_tokens`, `activations`, `distance` (the window's
  decile; -1 for a non-activating one, as delphi marks random negatives), `activating`,
  `prediction`, `probability`, `correct`), and `run_config.json`. The module is the SAE's hook.
  Which tasks go there, and as which scorer, each task's report says (`ReportSpec.delphi`).
  delphi's `log/hookpoint_firing_counts.pt` is not written: it holds the firing count of every
  latent of the SAE, and a run logs them for scored latents only; delphi's `load_data` reads the
  folder without it (then it computes no frequency-weighted F1; ours is in the results).
- Neuronpedia (its dataset export, which its admin import reads): `<model>/<source>/explanations/
  batch-<n>.jsonl.gz`, rows of its `Explanation` table (`id`, `modelId`, `layer`, `index` as a
  string, `authorId`, `description`, `typeName`, `explanationModelName`), and `config/*.jsonl`,
  the `ExplanationType`, `ExplanationModelType`, `ExplanationScoreType` and `ExplanationScoreModel`
  rows naming this package's explainers and methods, which its config import upserts. Scores go
  to `<model>/<source>/explanation_scores/batch-<n>.jsonl.gz` as rows of its `ExplanationScore`
  table (`value`: the task's headline for the latent; `jsonDetails`: every metric): Neuronpedia's
  importer reads no scores from an export (its own exports carry none), so an instance loads
  these rows itself. The importer needs the SAE's features on the instance already (each
  explanation points at its `Neuron` row) and the author to be one of its users.

A round trip holds: `explainer: file` with `explanations_path` at an exported folder reads back the
same explanations.
"""

from __future__ import annotations

import gzip
import json
import uuid
from pathlib import Path

from sae_interp_tasks.errors import SaeInterpError
from sae_interp_tasks.reports.results_io import Run
from sae_interp_tasks.reports.saebench import file_name
from sae_interp_tasks.reports.samples_io import sample_rows, samples_path

# the setting naming the model that scored a task's explanations, first found
SCORER_KEYS = ("scorer_model", "surprisal_model", "embedding_model")
BATCH = 1024  # rows per batch file, as Neuronpedia's exports hold
CREATOR = "sae-interp-tasks"
EXPLANATION_TYPE = "sae-interp-tasks"


def logged(run: Run, task: str) -> list[dict]:
    """The responses a task logged, one per scored latent ([] without a samples file)."""
    path = samples_path(run.path, task)
    if path is None:
        return []
    return [response for _, response in sample_rows(path) if response.get("latent") is not None]


def explanations(run: Run) -> dict[int, tuple[str, str]]:
    """latent -> (explanation, explainer) from whichever latent tasks logged one."""
    found: dict[int, tuple[str, str]] = {}
    for task in run.tasks:
        for row in logged(run, task):
            text = str(row.get("explanation") or "").strip()
            if text:
                found.setdefault(int(row["latent"]), (text, str(row.get("explainer") or "")))
    if not found:
        raise SaeInterpError(
            f"{run.path} logged no explanations; export the results of a latent task that reads "
            "explanations, run with --log_samples"
        )
    return dict(sorted(found.items()))


# --- delphi --------------------------------------------------------------------------------------
def delphi(runs: list[Run]) -> dict[Path, bytes]:
    """Relative path -> content of a delphi run folder per SAE."""
    files: dict[Path, bytes] = {}
    for run in runs:
        root, module = Path(file_name(run)), run.hook_name or "sae"
        texts = explanations(run)
        for latent, (text, _) in texts.items():
            files[root / "explanations" / f"{module}_latent{latent}.txt"] = _json(text)
        scorers = []
        for task, result in run.tasks.items():
            name = result.report.delphi  # delphi's name of the scorer, where delphi has it
            if not name:
                continue
            scorers.append(name)
            for row in logged(run, task):
                records = [_delphi_window(w, run, task) for w in row["scorer"]["windows"]]
                files[root / "scores" / name / f"{module}_latent{row['latent']}.txt"] = _json(
                    records
                )
        config = {
            "sparse_model": run.sae,
            "model": run.subject_model,
            "hookpoints": [module],
            "scorers": scorers,
            "explainer_model": sorted({e for _, e in texts.values()}),
            "constructor_cfg": {"min_examples": _setting(run, "min_examples")},
            "exported_by": f"{CREATOR}, from {run.path}",
        }
        files[root / "run_config.json"] = _json(config, indent=1)
    return files


def _delphi_window(window: dict, run: Run, task: str) -> dict:
    if "str_tokens" not in window:
        raise SaeInterpError(
            f"{run.path}: the {task} samples predate per-token logging (str_tokens, activations); "
            "rerun the task with --log_samples to export it for delphi"
        )
    prediction = window.get("prediction")
    return {
        "str_tokens": window["str_tokens"],
        "activations": window["activations"],
        "distance": window["decile"] if window["label"] else -1.0,
        "activating": bool(window["label"]),
        "prediction": prediction,
        "probability": window.get("probability"),
        "correct": None if prediction is None else prediction == window["label"],
    }


def _setting(run: Run, key: str):
    return next((r.settings[key] for r in run.tasks.values() if key in r.settings), None)


# --- Neuronpedia ---------------------------------------------------------------------------------
def neuronpedia(
    runs: list[Run], neuronpedia_id: str | None, author: str = CREATOR
) -> dict[Path, bytes]:
    """Relative path -> content of a Neuronpedia dataset export of every run's explanations and
    scores, with the config rows naming our explainers and methods."""
    if neuronpedia_id and len(runs) > 1:
        raise SaeInterpError(
            "--neuronpedia-id names one SAE but several results were given; export them one at a "
            "time"
        )
    files: dict[Path, bytes] = {}
    config: dict[str, dict] = {}
    for run in runs:
        model, source = _np_id(run, neuronpedia_id)
        texts = explanations(run)
        ids = {lat: _row_id(model, source, lat, text) for lat, (text, _) in texts.items()}
        rows = [
            {
                "id": ids[lat],
                "modelId": model,
                "layer": source,
                "index": str(lat),
                "authorId": author,
                "description": text,
                "typeName": EXPLANATION_TYPE,
                "explanationModelName": explainer or None,
            }
            for lat, (text, explainer) in texts.items()
        ]
        scores = _np_scores(run, ids, author, config)
        base = Path(model) / source
        files.update(_batches(base / "explanations", rows))
        files.update(_batches(base / "explanation_scores", scores))
        for _, explainer in texts.values():
            if explainer:
                config.setdefault("explanation_model_type", {})[explainer] = _named(
                    explainer, f"an explainer of {CREATOR} ({explainer})"
                )
    config["explanation_type"] = {
        EXPLANATION_TYPE: {
            **_named(EXPLANATION_TYPE, "explanations written by sae-interp-tasks' explainers"),
            "creatorId": author,
        }
    }
    for table, named in sorted(config.items()):
        lines = "".join(json.dumps(row) + "\n" for _, row in sorted(named.items()))
        files[Path("config") / f"{table}.jsonl"] = lines.encode()
    return files


def _np_id(run: Run, given: str | None) -> tuple[str, str]:
    found = given or run.neuronpedia_id
    if not found or "/" not in found:
        raise SaeInterpError(
            f"{run.sae} has no Neuronpedia id (sae_lens's metadata of its release names none); "
            "pass --neuronpedia-id MODEL/SOURCE, e.g. gpt2-small/6-res-jb"
        )
    model, source = found.split("/", 1)
    return model, source


def _np_scores(run: Run, ids: dict, author: str, config: dict) -> list[dict]:
    """One ExplanationScore row per scored latent of every task that scored explanations."""
    rows = []
    for task, result in run.tasks.items():
        scorer = str(next((result.settings[k] for k in SCORER_KEYS if result.settings.get(k)), ""))
        for row in logged(run, task):
            lat, metrics = int(row["latent"]), row.get("metrics") or {}
            value = metrics.get(result.headline)
            if lat not in ids or "explanation" not in row or not _finite(value):
                continue
            rows.append(
                {
                    "id": _row_id(task, ids[lat], scorer),
                    "initiatedByUserId": author,
                    "value": float(value),
                    "explanationId": ids[lat],
                    "explanationScoreTypeName": task,
                    "explanationScoreModelName": scorer,
                    "jsonDetails": json.dumps(
                        {"metric": result.headline, "metrics": metrics, "results": str(run.path)}
                    ),
                }
            )
            config.setdefault("explanation_score_type", {})[task] = {
                **_named(task, f"{task} of {CREATOR} (docs/methods.md)"),
                "scoreDescription": f"{result.headline}, per latent",
                "creatorId": author,
            }
            config.setdefault("explanation_score_model", {})[scorer] = _named(
                scorer, f"a scorer of {CREATOR} ({scorer})"
            )
    return rows


def _named(name: str, description: str) -> dict:
    return {"name": name, "displayName": name, "description": description, "creatorName": CREATOR}


def _row_id(*parts) -> str:
    return "sit" + uuid.uuid5(uuid.NAMESPACE_URL, "\x1f".join(map(str, parts))).hex[:22]


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and value == value and abs(value) != float("inf")


def _batches(folder: Path, rows: list[dict]) -> dict[Path, bytes]:
    out = {}
    for n, start in enumerate(range(0, len(rows), BATCH)):
        text = "".join(json.dumps(r) + "\n" for r in rows[start : start + BATCH])
        out[folder / f"batch-{n}.jsonl.gz"] = gzip.compress(text.encode(), mtime=0)
    return out


def _json(value, indent: int | None = None) -> bytes:
    return json.dumps(value, indent=indent).encode()
