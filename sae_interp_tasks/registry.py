"""The registry of task kinds: each kind is declared once, on its Task class, with `@task_kind`.

A kind ties together the lm-eval Task class (docs, metrics), the `Settings` bundle its YAML
metadata builds, the handler that serves its requests in the `sae` backend (`serve`), for kinds
whose docs are latents the scorer that turns the run's shared stages into per-latent scores
(`scorer`), and the `Report` a results file carries about it: its headline, further columns,
chance levels, pooled metrics and how its docs pair across runs. Handlers and scorers are the
functions themselves, so a request is followed from `SAEBackend.interpret` by reading names.

This module and `tasks/` are the only places that name a task kind.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace

from sae_interp_tasks.aggregations import Pooled
from sae_interp_tasks.config import HARNESS_KEYS, MODEL_ARG_KEYS, Settings
from sae_interp_tasks.errors import SaeInterpError, closest, unknown


@dataclass(frozen=True)
class Report:
    """What a results file says about a task, so that `sae-interp leaderboard` and `compare` need no
    table of task kinds. The Task writes it into its results metadata (`report`).

    - `headline`: the metric a leaderboard shows first and `compare` gates on by default;
    - `columns`: the metrics a leaderboard shows, in order (default: the headline, then `extra`);
    - `chance`: metric -> the metric holding its chance level (default: `<metric>_shuffled` where
    the kind has it); - `pooled`: metric -> an expression over the docs' summed statistics
    (`aggregations.Pooled`), or
      None where the metric is pooled but cannot be recomputed from what the samples log;
    - `doc_id`: the response field naming a doc ("latent", "chunk");
    - `pair_on`: when two runs' docs are the same doc: "sae" (the same SAE's weights), or a response
      field whose values must agree (e.g. the hash of a chunk's tokens);
    - `plotted`: metrics plotted per group (default: the headline); `axis`: a metric of this task
      that describes the SAE and that other tasks' headlines are plotted against (e.g. L0);
    - `labels`: metric -> its column header (default "<task> <metric>"); `position`: where the
      task's columns go among other tasks' (lower first, then by task name);
    - `checks`: metric -> the metric saying whether the scorer behind it passed its known-answer
      check (1 passed, 0 failed: then the leaderboard marks the metric and `compare` does not gate
    on it); - `saebench`: for a kind SAEBench also evaluates, how its results map onto SAEBench's
    result
      files (`eval_type_id`, the `task` name, `metrics` {category: {their metric: ours}},
      `left_out` {category: [their metrics we do not compute]}); empty: exported under our own eval
      type (reports/saebench.py).
    """

    headline: str
    extra: tuple = ()
    columns: tuple = ()
    chance: dict = field(default_factory=dict)
    pooled: dict = field(default_factory=dict)
    doc_id: str = "latent"
    pair_on: str = "sae"
    plotted: tuple = ()
    axis: str | None = None
    labels: dict = field(default_factory=dict)
    position: int = 100
    checks: dict = field(default_factory=dict)
    saebench: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "columns", tuple(self.columns) or (self.headline, *self.extra))
        object.__setattr__(self, "plotted", tuple(self.plotted) or (self.headline,))
        object.__setattr__(self, "extra", tuple(self.extra))

    def for_metrics(self, metrics: dict) -> Report:
        """This report completed from a kind's metrics: default chance levels and the pooled
        ones."""
        chance = {m: f"{m}_shuffled" for m in metrics if f"{m}_shuffled" in metrics}
        pooled = {m: agg.expression for m, (agg, _) in metrics.items() if isinstance(agg, Pooled)}
        return replace(self, chance={**chance, **self.chance}, pooled={**pooled, **self.pooled})

    def to_json(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_json(cls, data: dict) -> Report:
        known = {f.name for f in fields(cls)}
        return cls(
            **{k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in known}
        )


@dataclass(frozen=True)
class TaskKind:
    name: str
    task_class: type
    settings: type[Settings]
    metrics: dict  # metric -> (aggregation, higher_is_better)
    serve: Callable  # (context, [payload]) -> [Response]
    report: Report
    scorer: Callable | None = None  # latent kinds: (LatentRun) -> {latent: ScoredLatent}
    estimate: Callable | None = (
        None  # (LatentRun without explanations, PromptCounter) -> costs.Estimate of its LLM use
    )

    @property
    def headline(self) -> str:
        return self.report.headline


_KINDS: dict[str, TaskKind] = {}


def task_kind(
    name: str,
    *,
    settings: type[Settings],
    serve: Callable,
    report: Report,
    scorer: Callable | None = None,
    estimate: Callable | None = None,
):
    """Class decorator declaring a task kind:
    `@task_kind("detection", settings=..., serve=serve_latents, scorer=score_detection,
    report=Report(headline=...))`.

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
    torch)."""
    import sae_interp_tasks.tasks  # noqa: F401


def builtin_report(task: str, kind_name: str | None) -> Report | None:
    """The one fallback for results files written before tasks recorded their `report`: the report
    the kind declares now (kind from the file's `task_kind`, else the task name without its `sae_`
    prefix)."""
    _declare_builtins()
    name = kind_name or task.removeprefix("sae_")
    return _KINDS[name].report if name in _KINDS else None


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
