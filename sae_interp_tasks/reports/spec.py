"""What a results file says about each of its tasks (`ReportSpec`), so that `sae-interp
leaderboard` and `compare` read how to report a task from the file instead of a table of task
kinds; and, for files written before tasks recorded it, the built-in kinds' reports as a snapshot
(`report_snapshot.json`, kept equal to the declarations by a test).

A leaf of the package: it imports neither torch nor lm_eval.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from functools import cache
from importlib import resources

from sae_interp_tasks.aggregations import Pooled

SNAPSHOT = "report_snapshot.json"


@dataclass(frozen=True)
class ReportSpec:
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
      type (reports/saebench.py);
    - `delphi`: for a window classifier delphi also runs, the name of delphi's scorer (its
      `scores/<name>/` folder in `export --format delphi`); empty: not exported there.
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
    delphi: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "columns", tuple(self.columns) or (self.headline, *self.extra))
        object.__setattr__(self, "plotted", tuple(self.plotted) or (self.headline,))
        object.__setattr__(self, "extra", tuple(self.extra))

    def for_metrics(self, metrics: dict) -> ReportSpec:
        """This report completed from a kind's metrics: default chance levels and the pooled
        ones."""
        chance = {m: f"{m}_shuffled" for m in metrics if f"{m}_shuffled" in metrics}
        pooled = {m: agg.expression for m, (agg, _) in metrics.items() if isinstance(agg, Pooled)}
        return replace(self, chance={**chance, **self.chance}, pooled={**pooled, **self.pooled})

    def to_json(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_json(cls, data: dict) -> ReportSpec:
        known = {f.name for f in fields(cls)}
        return cls(
            **{k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in known}
        )


@cache
def _snapshot() -> dict:
    return json.loads(resources.files(__package__).joinpath(SNAPSHOT).read_text())


def builtin_kinds() -> dict[str, dict]:
    """kind -> {"report": ReportSpec, "higher_is_better": {metric: bool}} of the built-in kinds."""
    return {
        name: {
            "report": ReportSpec.from_json(entry["report"]),
            "higher_is_better": entry["higher_is_better"],
        }
        for name, entry in _snapshot().items()
    }


def builtin_report(task: str, kind_name: str | None) -> ReportSpec | None:
    """The one fallback for results files written before tasks recorded their `report`: the report
    the kind declares (kind from the file's `task_kind`, else the task name without its `sae_`
    prefix)."""
    entry = _snapshot().get(kind_name or task.removeprefix("sae_"))
    return ReportSpec.from_json(entry["report"]) if entry else None
