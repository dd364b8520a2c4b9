"""How per-doc values become a task's number: lm-eval calls these with every doc's value.

- `nanmean` and `total` take per-doc numbers. `nanmean` carries its own closed-form standard error
  (`stderr`), which the import hook makes lm-eval use instead of its bootstrap (100,000 resamples, a
  forked process per metric: about a minute per run at 512 docs for numbers a formula gives at
once). - `Pooled` metrics take each doc's statistics (sums over its tokens or windows) and pool
them over
  the docs, e.g. explained variance about the corpus mean. With an expression over summed statistics
  ("1 - sum(sq_err_sum) / sum(x_sq_sum)") the same object also recomputes the metric for bootstrap
  resamples of the docs, which is what `sae-interp leaderboard` and `compare` do with the statistics
  the samples files log: one definition serves the task and its reports.

Nothing here imports torch or lm_eval.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Mapping

import numpy as np

from sae_interp_tasks import stats


def nanmean(values) -> float:
    """The mean over docs that have a value (NaN: a latent left unscored, never counted as 0)."""
    return stats.mean(values)


nanmean.stderr = stats.stderr_of_mean


class Shared:
    """For a number every doc of a run shares, measured with its own standard error (e.g. a scorer's
    known-answer check): each doc's value is {"value": v, "stderr": s}; the aggregate is v, and its
    standard error s (not the spread over docs, which is zero)."""

    __name__ = "shared"

    def __call__(self, values) -> float:
        first = _first_shared(values)
        return float(first["value"]) if first else float("nan")

    def stderr(self, values) -> float:
        first = _first_shared(values)
        return float(first["stderr"]) if first else float("nan")


def _first_shared(values) -> dict | None:
    return next((v for v in values if isinstance(v, dict) and "value" in v), None)


def total(values) -> float:
    """For counts (e.g. dead-or-rare latents passed over): their sum over docs; no standard
    error."""
    return float(sum(values))


def spread(values) -> float:
    """The sample standard deviation over docs that have a value (NaN: left unscored), as
    SAEBench's statistics.stdev over its letters; NaN with fewer than two values."""
    finite = [float(v) for v in values if np.isfinite(v)]
    return float(np.std(finite, ddof=1)) if len(finite) > 1 else float("nan")


# --- pooled metrics ------------------------------------------------------------------------------
_FUNCTIONS = ("sum", "sqnorm")
_OPS = {ast.Add: np.add, ast.Sub: np.subtract, ast.Mult: np.multiply, ast.Div: np.divide}


class Pooled:
    """A metric pooled over docs from each doc's statistics.

    `expression` uses numbers, + - * /, parentheses, `sum(stat)` (the statistic summed over the
    docs) and `sqnorm(sum(stat))` (the squared norm of a summed vector statistic). Without an
    expression, `compute(docs)` pools the docs' statistics itself; such a metric cannot be
    resampled by reports.
    """

    def __init__(self, expression: str | None = None, compute: Callable | None = None):
        if (expression is None) == (compute is None):
            raise ValueError("give a Pooled metric an expression or a compute function")
        self.expression = expression
        self._compute = compute
        self._tree = _parse(expression) if expression is not None else None
        self.__name__ = expression or getattr(compute, "__name__", "pooled")

    @property
    def stats(self) -> tuple[str, ...]:
        """The statistics the expression reads."""
        if self._tree is None:
            return ()
        return tuple(
            dict.fromkeys(
                n.id
                for n in ast.walk(self._tree)
                if isinstance(n, ast.Name) and n.id not in _FUNCTIONS
            )
        )

    def __call__(self, docs) -> float:
        """lm-eval's aggregation: each doc's value is its statistics (a mapping, or an object with
        them as attributes)."""
        docs = [d for d in docs if d is not None]  # a latent slot left empty has no statistics
        if self._compute is not None:
            return float(self._compute(docs))
        stats = {name: np.array([_stat(d, name) for d in docs], dtype=float) for name in self.stats}
        return float(self.resampled(stats, np.ones((1, len(docs))))[0])

    def resampled(self, stats: Mapping[str, np.ndarray], weights: np.ndarray) -> np.ndarray:
        """The metric for each row of `weights` [resamples, docs] (how often each doc is drawn); a
        row of ones gives the metric itself. `stats[name]` is [docs] or [docs, dim]."""
        if self._tree is None:
            raise ValueError(f"{self.__name__} has no expression to recompute")
        return np.asarray(_evaluate(self._tree.body, stats, weights), dtype=float)


def _stat(doc, name: str):
    value = doc[name] if isinstance(doc, Mapping) else getattr(doc, name)
    return np.asarray(value, dtype=float)


def _parse(expression: str) -> ast.Expression:
    try:
        tree = ast.parse(expression, mode="eval")
    except SyntaxError as err:
        raise ValueError(f"pooled expression {expression!r} does not parse ({err.msg})") from err
    for node in ast.walk(tree):
        ok = isinstance(
            node,
            (
                ast.Expression,
                ast.BinOp,
                ast.UnaryOp,
                ast.USub,
                ast.Constant,
                ast.Name,
                ast.Call,
                ast.Load,
                *_OPS,
            ),
        )
        if isinstance(node, ast.Call):
            ok = (
                isinstance(node.func, ast.Name)
                and node.func.id in _FUNCTIONS
                and len(node.args) == 1
                and not node.keywords
            )
            if ok and node.func.id == "sum":
                ok = isinstance(node.args[0], ast.Name)
            if ok and node.func.id == "sqnorm":
                inner = node.args[0]
                ok = (
                    isinstance(inner, ast.Call)
                    and isinstance(inner.func, ast.Name)
                    and inner.func.id == "sum"
                )
        if isinstance(node, ast.Constant):
            ok = isinstance(node.value, (int, float)) and not isinstance(node.value, bool)
        if not ok:
            raise ValueError(
                f"pooled expression {expression!r}: {ast.unparse(node)} is not allowed; use "
                "numbers, "
                "+ - * /, sum(stat) and sqnorm(sum(stat))"
            )
    return tree


def _evaluate(node, stats: Mapping[str, np.ndarray], weights: np.ndarray):
    if isinstance(node, ast.Constant):
        return float(node.value)
    if isinstance(node, ast.UnaryOp):
        return -_evaluate(node.operand, stats, weights)
    if isinstance(node, ast.BinOp):
        return _OPS[type(node.op)](
            _evaluate(node.left, stats, weights), _evaluate(node.right, stats, weights)
        )
    name = node.func.id
    if name == "sum":
        return weights @ np.asarray(stats[node.args[0].id], dtype=float)
    # sqnorm(sum(v)) = w^T (V V^T) w per resample: [resamples, docs] memory, never [resamples, dim]
    vectors = np.asarray(stats[node.args[0].args[0].id], dtype=float)
    gram = vectors @ vectors.T
    return np.einsum("bi,bi->b", weights @ gram, weights)
