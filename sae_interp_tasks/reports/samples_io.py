"""Reading the --log_samples files lm-eval writes beside a results file into per-doc scores.

`samples_<task>_<date>.jsonl` (or its gzipped `.jsonl.gz`) sits beside `results_<date>.json`: one
row per doc, whose response (this package's Response, as JSON) holds the doc's scores, the
statistics the task's pooled metrics are computed from, and the field its docs pair on. Read here
into DocScores, keyed by the doc's id as the task's ReportSpec names it (a latent, a chunk).

Nothing here imports torch or lm_eval. Every bad input raises SaeInterpError with one line that
names the file and the fix.
"""

from __future__ import annotations

import gzip
import json
import logging
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sae_interp_tasks.aggregations import Pooled
from sae_interp_tasks.errors import SaeInterpError
from sae_interp_tasks.reports.spec import ReportSpec

log = logging.getLogger(__name__)

# lm-eval's results file name; the samples files beside it carry its date
RESULTS_NAME = re.compile(r"^results_(?P<date>.+)\.json$")


def as_float(value) -> float:
    """A JSON value as a float; NaN where it is none (None, "N/A")."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        return math.nan
    return out


@dataclass(frozen=True, eq=False)
class DocStats:
    """The statistics pooled metrics are computed from, one row per doc (`arrays[name]`: [docs] or
    [docs, dim]), read from the samples' `stats` fields."""

    arrays: dict

    @property
    def n_docs(self) -> int:
        return len(next(iter(self.arrays.values()))) if self.arrays else 0

    def carries(self, expression: str) -> bool:
        """Whether every statistic the pooled expression reads was logged."""
        return all(name in self.arrays for name in Pooled(expression).stats)

    def take(self, rows: np.ndarray) -> DocStats:
        return DocStats({name: values[rows] for name, values in self.arrays.items()})


@dataclass(frozen=True, eq=False)
class DocScores:
    """Per-doc scores from a samples file: `keys[i]` is doc i's id (the report's `doc_id`: a
    latent, a chunk); `values[metric][i]` is NaN where the doc has no score (latent skipped, batch
    unanswered)."""

    path: Path
    keys: tuple
    values: dict[str, np.ndarray]
    unfilled: int  # docs whose slot found no live latent (`latent: null`), left out of keys
    stats: DocStats | None = None  # when the samples carry every statistic the pooled metrics read
    pair_values: tuple | None = (
        None  # each doc's value of the report's `pair_on` field, when logged
    )


def samples_path(results_path: Path, task: str) -> Path | None:
    """lm-eval writes samples_<task>_<date>.jsonl beside results_<date>.json (kept gzipped:
    .jsonl.gz)."""
    m = RESULTS_NAME.match(results_path.name)
    if not m:
        return None
    for suffix in (".jsonl", ".jsonl.gz"):
        path = results_path.with_name(f"samples_{task}_{m['date']}{suffix}")
        if path.exists():
            return path
    return None


def samples_text(path: Path) -> str:
    """A samples file's text, gzipped (.jsonl.gz) or not."""
    path = Path(path)
    return gzip.decompress(path.read_bytes()).decode() if path.suffix == ".gz" else path.read_text()


def sample_rows(path: Path) -> Iterator[tuple[dict, dict]]:
    """Each row of a samples file with the response it logged (this package's Response, as JSON);
    a file or row that is not one is a one-line error naming the fix."""
    try:
        lines = samples_text(path).splitlines()
    except (OSError, EOFError, UnicodeDecodeError) as err:
        raise SaeInterpError(
            f"cannot read {path} ({type(err).__name__}); re-run lm_eval with --log_samples"
        ) from err
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            response = json.loads(row["resps"][0][0])  # our Response's str() is JSON
        except (json.JSONDecodeError, KeyError, IndexError, TypeError) as err:
            raise SaeInterpError(
                f"{path} line {number} is not a samples row of this package "
                f"({type(err).__name__}); re-run lm_eval with --log_samples"
            ) from err
        yield row, response


def read_samples(path: Path, report: ReportSpec, metric_names: list[str]) -> DocScores:
    """Per-doc scores of one samples file, keyed by the report's doc id; the statistics of its
    pooled metrics and its pairing field where the responses carry them."""
    keys, rows, stats, pairs, unfilled = [], [], [], [], 0
    for row, response in sample_rows(path):
        doc = row.get("doc") or {}
        # the doc names its latent (LatentTask.process_results); older files only the response
        named = doc if report.doc_id in doc else response
        key = named.get(report.doc_id, row.get("doc_id"))
        if key is None and report.doc_id in named:  # a slot that found no live latent
            unfilled += 1
            continue
        keys.append(key)
        rows.append(row)
        stats.append(response.get("stats"))
        pairs.append(response.get(report.pair_on))
    values = {
        name: np.array([as_float(r.get(name)) for r in rows], dtype=float) for name in metric_names
    }
    if len(set(keys)) < len(keys):
        log.warning(
            "%s: some docs share a %s id; pairing uses the first of each", path, report.doc_id
        )
    return DocScores(
        path=path,
        keys=tuple(keys),
        values=values,
        unfilled=unfilled,
        stats=_doc_stats(stats, report),
        pair_values=tuple(pairs) if pairs and all(p is not None for p in pairs) else None,
    )


def _doc_stats(stats: list, report: ReportSpec) -> DocStats | None:
    """The statistics the pooled expressions read that every doc logged; None when no doc logged
    any (e.g. written before they were logged, when `stats` was a repr string). Samples written
    before a statistic was added still resample the metrics that do not read it
    (`DocStats.carries`)."""
    names = sorted({name for expr in report.pooled.values() if expr for name in Pooled(expr).stats})
    if not names or not stats or not all(isinstance(s, dict) for s in stats):
        return None
    kept = [n for n in names if all(n in s for s in stats)]
    return (
        DocStats({name: np.array([s[name] for s in stats], dtype=float) for name in kept})
        if kept
        else None
    )
