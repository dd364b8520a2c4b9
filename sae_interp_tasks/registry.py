"""The registry of task kinds: each kind is declared once, on its Task class, with `@task_kind`.

A kind ties together the lm-eval Task class (docs, metrics), the `Settings` bundle its YAML
metadata builds, the handler that serves its requests in the `sae` backend (`serve`), for kinds
whose docs are latents the scorer that turns the run's shared stages into per-latent scores
(`scorer`), and the `ReportSpec` a results file carries about it: its headline, further columns,
chance levels, pooled metrics and how its docs pair across runs. Handlers and scorers are the
functions themselves, so a request is followed from `SAEBackend.interpret` by reading names.

This module and `tasks/` are the only places that name a task kind.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from sae_interp_tasks.config import HARNESS_KEYS, MODEL_ARG_KEYS, Settings
from sae_interp_tasks.errors import SaeInterpError, closest, unknown
from sae_interp_tasks.reports.spec import ReportSpec

# the package whose modules declare the built-in kinds, loaded by name the way a plugin host loads
# its plugins: the registry (below tasks/ and harness/) depends on none of them
BUILTIN_KINDS_PACKAGE = "sae_interp_tasks.tasks"


@dataclass(frozen=True)
class TaskKind:
    name: str
    task_class: type
    settings: type[Settings]
    metrics: dict  # metric -> (aggregation, higher_is_better)
    serve: Callable  # (context, [payload]) -> [Response]
    report: ReportSpec
    scorer: Callable | None = None  # latent kinds: (LatentRun) -> {latent: ScoredLatent}
    estimate: Callable | None = (
        None  # (LatentRun without explanations, PromptCounter) -> costs.Estimate of its LLM use
    )
    # latent kinds: whether its scorer reads the run's explanations; a callable decides from the
    # task's settings (sae_similarity explains only when asked for the semantic overlap)
    explained: bool | Callable[[Settings], bool] = True

    @property
    def headline(self) -> str:
        return self.report.headline

    def reads_explanations(self, settings: Settings) -> bool:
        return bool(self.explained(settings) if callable(self.explained) else self.explained)


_KINDS: dict[str, TaskKind] = {}


def task_kind(
    name: str,
    *,
    settings: type[Settings],
    serve: Callable,
    report: ReportSpec,
    scorer: Callable | None = None,
    estimate: Callable | None = None,
    explained: bool | Callable[[Settings], bool] = True,
):
    """Class decorator declaring a task kind:
    `@task_kind("detection", settings=..., serve=serve_latents, scorer=score_detection,
    report=ReportSpec(headline=...))`.

    The class's `METRICS` are the kind's metrics."""

    def declare(cls):
        if not callable(serve):
            raise SaeInterpError(
                f"task kind {name!r} ({cls.__qualname__}) needs serve=<the function answering its "
                f"requests>, got {serve!r}"
            )
        if scorer is not None and not callable(scorer):
            raise SaeInterpError(f"task kind {name!r}: scorer must be a function, got {scorer!r}")
        metrics = dict(cls.METRICS)
        if report.headline not in metrics:
            raise SaeInterpError(
                f"task kind {name!r}: headline {report.headline!r} is not one of its METRICS"
            )
        cls.KIND = name
        register(
            TaskKind(
                name=name,
                task_class=cls,
                settings=settings,
                metrics=metrics,
                serve=serve,
                report=report.for_metrics(metrics),
                scorer=scorer,
                estimate=estimate,
                explained=explained,
            )
        )
        return cls

    return declare


def register(kind: TaskKind) -> None:
    previous = _KINDS.get(kind.name)
    if previous is not None and previous.task_class.__qualname__ != kind.task_class.__qualname__:
        raise SaeInterpError(
            f"task kind {kind.name!r} is declared twice: by {previous.task_class.__qualname__} "
            f"and {kind.task_class.__qualname__}; rename one"
        )
    _KINDS[kind.name] = (
        kind  # the same class loaded again (lm-eval reloads YAML-side modules) replaces itself
    )


def lookup(name: str) -> TaskKind:
    if name not in _KINDS:
        _declare_builtins()
    if name not in _KINDS:
        raise unknown("task kind", name, _KINDS, fix="declare it with @task_kind on its Task class")
    return _KINDS[name]


def kinds() -> dict[str, TaskKind]:
    _declare_builtins()
    return dict(_KINDS)


def _declare_builtins() -> None:
    """Import the package's task modules, which declare the built-in kinds (imports lm_eval and
    torch; reports never need it: they read reports.spec's snapshot)."""
    importlib.import_module(BUILTIN_KINDS_PACKAGE)


def report_snapshot() -> dict:
    """What `reports.spec.builtin_report` reads for files that predate recorded reports: every
    built-in kind's report and metrics' directions (scripts/write_report_snapshot.py writes it)."""
    return {
        name: {
            "report": kind.report.to_json(),
            "higher_is_better": {m: better for m, (_, better) in kind.metrics.items()},
        }
        for name, kind in sorted(kinds().items())
    }


# --- metadata keys ------------------------------------------------------------------------------
def valid_keys() -> frozenset[str]:
    """Every key some task kind reads, plus the harness's and the backend's own. lm-eval hands the
    same --metadata to every task of a run, so a key any kind knows is accepted by all."""
    keys = set(HARNESS_KEYS) | set(MODEL_ARG_KEYS)
    for kind in kinds().values():
        keys |= kind.settings.keys()
    return frozenset(keys)


def check_keys(metadata: dict) -> None:
    """Unknown keys are an error listing the valid ones; every known key's value is checked by the
    stage config that declares it, whichever task reads the metadata."""
    valid = valid_keys()
    for key in metadata:
        if key not in valid:
            near = closest(key, valid)
            hint = f"did you mean {', '.join(near)}? " if near else ""
            listed = sorted(valid - HARNESS_KEYS - set(MODEL_ARG_KEYS))
            raise SaeInterpError(
                f"unknown --metadata key {key!r}; {hint}valid keys: {', '.join(listed)}"
            )
    checked: set[type] = set()
    for kind in kinds().values():
        for stage in kind.settings.stages().values():
            if stage not in checked and stage.keys() & metadata.keys():
                stage.from_metadata(metadata)  # raises on a bad value
                checked.add(stage)


def settings_for(name: str, metadata: dict) -> Settings:
    """The kind's typed settings from flat task metadata; unknown keys and bad values raise."""
    check_keys(metadata)
    return lookup(name).settings.from_metadata(metadata)
