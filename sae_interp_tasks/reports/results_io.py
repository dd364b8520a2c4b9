"""Reading lm-eval results files and their --log_samples files into typed runs.

A *run* is one `results_<date>.json` written by `lm_eval --model sae ... --output_path`: the
SAE it scored (from `results["config"]`, which `SAEBackend.get_model_info` fills), and per task
of this package its aggregate metrics with stderr, the instrument settings it ran under, the
`ReportSpec` the task recorded about itself (headline, columns, chance levels, pooled metrics, how
its docs are named and paired), and, where the `samples_<task>_<date>.jsonl` beside it exists (or
its gzipped `.jsonl.gz`), the per-doc scores keyed by the doc's id (with the statistics its pooled
metrics are computed from), which `samples_io` reads.

Nothing here imports torch or lm_eval: the `sae-interp` commands start in a fraction of a second.
Every bad input raises SaeInterpError with one line that names the file and the fix.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sae_interp_tasks import stats
from sae_interp_tasks.config import NOT_SETTINGS
from sae_interp_tasks.errors import SaeInterpError
from sae_interp_tasks.records import SAESource
from sae_interp_tasks.reports.samples_io import (
    RESULTS_NAME,
    DocScores,
    as_float,
    read_samples,
    samples_path,
)
from sae_interp_tasks.reports.spec import ReportSpec, builtin_report

log = logging.getLogger(__name__)


def percent(level: float) -> str:
    """0.95 -> '95%', 0.999 -> '99.9%' (never rounded up to 100%)."""
    return f"{round(level * 100, 6):g}%"


@dataclass(frozen=True)
class Metric:
    """One aggregate as lm-eval reports it; stderr is None where lm-eval wrote "N/A"."""

    name: str
    value: float
    stderr: float | None
    higher_is_better: bool | None


@dataclass(frozen=True, eq=False)
class TaskResult:
    task: str
    version: str
    metrics: dict[str, Metric]
    settings: dict  # the instrument settings (see task_settings)
    n_docs: int  # lm-eval's n-samples "effective"
    samples: DocScores | None
    report: ReportSpec

    @property
    def headline(self) -> str:
        return self.report.headline

    def chance_of(self, metric: str) -> str | None:
        """The metric holding `metric`'s chance level, where the task reports one."""
        chance = self.report.chance.get(metric)
        return chance if chance in self.metrics else None

    def pooled(self, metric: str) -> bool:
        return metric in self.report.pooled

    @property
    def from_saebench(self) -> bool:
        """Read from a SAEBench result file (reports.saebench): values only, no per-doc scores."""
        return str(self.settings.get("source", "")).startswith("SAEBench")

    def check_passed(self, metric: str) -> bool | None:
        """Whether the scorer behind `metric` passed its known-answer check; None where it was not
        checked (no check declared for the metric, or none ran: results written before checks,
        check turned off)."""
        passed = self.metrics.get(self.report.checks.get(metric, ""))
        if passed is None or not math.isfinite(passed.value):
            return None
        return passed.value >= 0.5

    def check_summary(self, metric: str, confidence: float) -> str:
        """The check behind `metric` in words: its statistic with its interval at `confidence`,
        e.g. for a failed one."""
        passed = self.report.checks.get(metric, "")
        prefix = passed.removesuffix("passed")
        stat = next(
            (m for name, m in self.metrics.items() if name.startswith(prefix) and name != passed),
            None,
        )
        if stat is None:
            return passed
        z = stats.z_for(confidence)
        interval = (
            f" [{stat.value - z * stat.stderr:.3f}, {stat.value + z * stat.stderr:.3f}]"
            if stat.stderr
            else ""
        )
        return f"{stat.name} {stat.value:.3f}{interval}"

    @property
    def skipped(self) -> float | None:
        m = self.metrics.get("skipped_dead")
        return None if m is None else m.value

    @property
    def latents_scored(self) -> int:
        """Docs whose latent got a headline score (known only with samples: they show the slots
        that found no live latent and the latents left unscored); without samples, every doc."""
        if self.samples is None or self.headline not in self.samples.values:
            return self.n_docs - (self.samples.unfilled if self.samples else 0)
        return int(np.isfinite(self.samples.values[self.headline]).sum())


@dataclass(frozen=True, eq=False)
class Run:
    """One results file: the SAE it scored and this package's tasks in it."""

    path: Path
    date: str
    sae: str  # the backend's label: release/sae_id, a path, demo, with +control=... for controls
    fingerprint: str | None
    d_sae: int | None
    d_in: int | None
    architecture: str | None
    hook_name: str | None
    subject_model: str | None
    control: str | None
    seed: int | None
    tasks: dict[str, TaskResult] = field(default_factory=dict)
    release: str | None = None  # sae_lens's release and sae_id, where the SAE came from one
    sae_id: str | None = None
    epoch_seconds: float = 0.0  # when the results were written
    # the reference SAEs a similarity task compared this one with (config.sae_references): each
    # {"label", "fingerprint", "d_sae", "hook_name", "architecture"}, by its reference setting
    references: dict = field(default_factory=dict)
    neuronpedia_id: str | None = None  # "model/source" where sae_lens's metadata names one
    # task -> SAEBench's per-latent core metrics (sae_core's feature_metrics): name -> [per latent]
    feature_metrics: dict = field(default_factory=dict)
    hook_name_out: str | None = None  # a transcoder's output hook (it reads hook_name)

    @property
    def identity(self) -> tuple:
        refs = tuple(
            sorted((r.get("label"), r.get("fingerprint")) for r in self.references.values())
        )
        return (self.sae, self.fingerprint, *refs)

    @property
    def shown_as(self) -> str:
        """The SAE's label, with the references it was compared with ("A vs B"): a similarity
        number belongs to the pair, never to the SAE alone."""
        refs = sorted({str(r.get("label")) for r in self.references.values()})
        label = f"{self.sae} vs {', '.join(refs)}" if refs else self.sae
        if self.hook_name_out:  # a transcoder: which activation it reads and which it writes
            label += f" (transcoder {self.hook_name} -> {self.hook_name_out})"
        return label

    @property
    def is_control(self) -> bool:
        return bool(self.control)


# --- finding files -------------------------------------------------------------------------------
def find_results(paths: list[str | Path]) -> list[Path]:
    """Results files named directly or found under folders, in the order given (each folder
    sorted)."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            inside = sorted(
                p
                for pattern in ("results_*.json", "*_eval_results.json")
                for p in path.rglob(pattern)
                if p.is_file()
            )
            if not inside:
                raise SaeInterpError(
                    f"{path} holds no results_*.json (nor SAEBench's *_eval_results.json); point "
                    "at "
                    "the folder lm_eval --output_path wrote, or at a results file"
                )
            found += inside
        elif path.is_file():
            found.append(path)
        else:
            raise SaeInterpError(
                f"{path} does not exist; give results files or lm_eval --output_path folders"
            )
    unique = list(dict.fromkeys(p.resolve() for p in found))
    return unique


# --- reading -------------------------------------------------------------------------------------
def load_json(path: Path) -> object:
    """A file's JSON; one line naming the file when it is not JSON (e.g. truncated)."""
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as err:
        raise SaeInterpError(
            f"{path} is not valid JSON ({err.msg}, line {err.lineno}); "
            "re-run lm_eval (or re-download the file) or remove it"
        ) from err
    except (OSError, UnicodeDecodeError) as err:
        raise SaeInterpError(
            f"cannot read {path} ({type(err).__name__}); check the path and its permissions"
        ) from err


def read_json(path: Path) -> dict:
    data = load_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("results"), dict):
        raise SaeInterpError(
            f'{path} is not an lm-eval results file (no "results" table); '
            "give the results_*.json that lm_eval --output_path writes"
        )
    return data


def _stderr(value) -> float | None:
    out = as_float(value)
    return None if math.isnan(out) else out


def task_settings(data: dict, task: str) -> dict:
    """What the task measured with: its metadata less the SAE's and harness's keys, its version,
    the seed."""
    meta = dict((data.get("configs", {}).get(task) or {}).get("metadata") or {})
    settings = {k: v for k, v in meta.items() if k not in NOT_SETTINGS}
    settings["version"] = str(data.get("versions", {}).get(task, meta.get("version")))
    settings["fewshot_seed"] = (data.get("config") or {}).get("fewshot_seed")
    return settings


def _sae_label(config: dict) -> str:
    """The backend's label; results written before get_model_info existed rebuild it from
    model_args."""
    if config.get("sae"):
        return str(config["sae"])
    args = config.get("model_args") or {}
    if isinstance(args, str):
        args = dict(kv.split("=", 1) for kv in args.split(",") if "=" in kv)
    return SAESource(
        release=args.get("release"),
        sae_id=args.get("sae_id"),
        path=args.get("path"),
        control=args.get("control"),
    ).label


def _int_or_none(value) -> int | None:
    return None if value is None else int(value)


def task_report(data: dict, task: str) -> ReportSpec | None:
    """The ReportSpec a task of this package recorded about itself; None for tasks that are not
    ours. Files written before tasks recorded it fall back to what the kind declares now
    (reports.spec.builtin_report)."""
    meta = ((data.get("configs") or {}).get(task) or {}).get("metadata") or {}
    if isinstance(meta.get("report"), dict):
        return ReportSpec.from_json(meta["report"])
    if meta.get("task_kind") or (data.get("config") or {}).get("model") == "sae":
        return builtin_report(task, meta.get("task_kind"))
    return None


def read_run(path: Path, load_samples: bool = True, data: dict | None = None) -> Run:
    """One results file as a Run; raises when it holds none of this package's tasks."""
    data = read_json(path) if data is None else data
    config = data.get("config") or {}
    groups = data.get("groups") or {}
    reports = {t: task_report(data, t) for t in data["results"] if t not in groups}
    ours = {t: report for t, report in reports.items() if report is not None}
    if not ours:
        listed = ", ".join(sorted(data["results"])[:5]) or "none"
        raise SaeInterpError(
            f"{path} holds no sae_interp_tasks results (tasks: {listed}); give the results of "
            "lm_eval --model sae with this package's tasks"
        )
    if config.get("model") not in (None, "sae"):
        raise SaeInterpError(
            f"{path} was written by --model {config.get('model')}, not --model sae; "
            "give results of lm_eval --model sae"
        )
    others = sorted(t for t in reports if t not in ours)
    if others:
        log.info("%s: not this package's tasks, left out: %s", path, ", ".join(others))
    m = RESULTS_NAME.match(path.name)
    tasks = {t: _read_task(data, t, report, path, load_samples) for t, report in ours.items()}
    seed = config.get("fewshot_seed")
    args = config.get("model_args") if isinstance(config.get("model_args"), dict) else {}
    return Run(
        path=path,
        date=m["date"] if m else "",
        sae=_sae_label(config),
        fingerprint=config.get("sae_fingerprint"),
        d_sae=_int_or_none(config.get("sae_d_sae")),
        d_in=_int_or_none(config.get("sae_d_in")),
        architecture=config.get("sae_architecture"),
        hook_name=config.get("sae_hook_name"),
        hook_name_out=config.get("sae_hook_name_out"),
        subject_model=config.get("subject_model"),
        control=config.get("sae_control") or args.get("control"),
        seed=_int_or_none(seed),
        tasks=tasks,
        release=args.get("release"),
        sae_id=args.get("sae_id"),
        epoch_seconds=float(data.get("date") or 0.0),
        references=dict(config.get("sae_references") or {}),
        neuronpedia_id=config.get("sae_neuronpedia_id"),
        feature_metrics=dict(config.get("sae_feature_metrics") or {}),
    )


def _read_task(
    data: dict, task: str, report: ReportSpec, path: Path, load_samples: bool
) -> TaskResult:
    raw = data["results"][task]
    better = (data.get("higher_is_better") or {}).get(task) or {}
    metrics = {}
    for key, value in raw.items():
        name, _, filt = key.partition(",")
        if not filt or name.endswith("_stderr"):
            continue
        metrics[name] = Metric(
            name=name,
            value=as_float(value),
            stderr=_stderr(raw.get(f"{name}_stderr,{filt}")),
            higher_is_better=better.get(name),
        )
    n_docs = int(
        ((data.get("n-samples") or {}).get(task) or {}).get("effective", raw.get("sample_len", 0))
    )
    found = samples_path(path, task) if load_samples else None
    if load_samples and found is None and (data.get("task_hashes") or {}).get(task):
        # lm-eval fills task_hashes only when it wrote samples: this run had them, and the file is
        # gone
        raise SaeInterpError(
            f"{path}: samples_{task}_*.jsonl is missing beside it (the run logged samples); "
            "restore it, or re-run lm_eval with --log_samples"
        )
    return TaskResult(
        task=task,
        version=str((data.get("versions") or {}).get(task, "")),
        metrics=metrics,
        settings=task_settings(data, task),
        n_docs=n_docs,
        samples=read_samples(found, report, list(metrics)) if found else None,
        report=report,
    )


def read_runs(paths: list[str | Path], load_samples: bool = True) -> list[Run]:
    return [read_run(p, load_samples) for p in find_results(paths)]


def require_samples(run: Run, tasks) -> None:
    for task in tasks:
        if run.tasks[task].samples is None:
            raise SaeInterpError(
                f"{run.path} has no samples_{task}_*.jsonl beside it; re-run lm_eval with "
                "--log_samples and keep the samples files next to the results file"
            )


def settings_differences(a: dict, b: dict) -> dict[str, tuple]:
    """key -> (value in a, value in b) for every key whose value differs (missing: None)."""
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def describe_differences(diffs: dict[str, tuple]) -> str:
    return ", ".join(f"{k} ({_short(a)} vs {_short(b)})" for k, (a, b) in diffs.items())


def _short(value) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else value
    return text if len(text) <= 60 else text[:57] + "..."
