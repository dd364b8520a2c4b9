"""The registry of task kinds: each kind is declared once, on its Task class, with `@task_kind`.

A kind ties together the lm-eval Task class (docs, metrics), the `Settings` bundle its YAML
metadata builds, the handler that serves its requests in the `sae` backend, and, for kinds
whose docs are latents, the scorer that turns the run's shared stages into per-latent scores.
Handlers and scorers may be given as "module:function" strings: they are imported when first
needed (as lm-eval's own model registry does), and checked when the Task is built, so a kind
that cannot be served fails at task-load time, before any model loads.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from sae_interp_tasks.config import HARNESS_KEYS, MODEL_ARG_KEYS, Settings
from sae_interp_tasks.errors import SaeInterpError, closest, unknown

Target = str | Callable


@dataclass(frozen=True)
class TaskKind:
    name: str
    task_class: type
    settings: type[Settings]
    metrics: dict  # metric -> (aggregation, higher_is_better)
    handler: Target  # (backend, [payload]) -> [Response]
    scorer: Target | None = None  # latent kinds: (LatentRun) -> {latent: ScoredLatent}
    headline: str | None = None  # the metric a leaderboard shows first

    def serve(self) -> Callable:
        return _resolve(self.handler, f"task kind {self.name!r}'s handler")

    def score(self) -> Callable:
        if self.scorer is None:
            raise SaeInterpError(f"task kind {self.name!r} declares no scorer")
        return _resolve(self.scorer, f"task kind {self.name!r}'s scorer")


_KINDS: dict[str, TaskKind] = {}


def task_kind(name: str, *, settings: type[Settings], handler: Target | None = None, scorer: Target | None = None,
              headline: str | None = None):
    """Class decorator declaring a task kind: `@task_kind("detection", settings=..., scorer=...)`.

    The class's `METRICS` are the kind's metrics; `handler` defaults to the class's `HANDLER`.
    """

    def declare(cls):
        chosen = handler or getattr(cls, "HANDLER", None)
        if chosen is None:
            raise SaeInterpError(f"task kind {name!r} ({cls.__qualname__}) has no handler: pass handler= to "
                                 "@task_kind or derive from a Task class that has one")
        cls.KIND = name
        register(TaskKind(name=name, task_class=cls, settings=settings, metrics=dict(cls.METRICS), handler=chosen,
                          scorer=scorer, headline=headline))
        return cls

    return declare


def register(kind: TaskKind) -> None:
    previous = _KINDS.get(kind.name)
    if previous is not None and previous.task_class.__qualname__ != kind.task_class.__qualname__:
        raise SaeInterpError(f"task kind {kind.name!r} is declared twice: by {previous.task_class.__qualname__} "
                             f"and {kind.task_class.__qualname__}; rename one")
    _KINDS[kind.name] = kind  # the same class loaded again (lm-eval reloads YAML-side modules) replaces itself


def get(name: str) -> TaskKind:
    if name not in _KINDS:
        raise unknown("task kind", name, _KINDS, fix="declare it with @task_kind on its Task class")
    return _KINDS[name]


def kinds() -> dict[str, TaskKind]:
    return dict(_KINDS)


def check_servable(name: str) -> TaskKind:
    """The kind, with its handler and scorer importable: called when a Task is built."""
    kind = get(name)
    kind.serve()
    if kind.scorer is not None:
        kind.score()
    return kind


# --- metadata keys ------------------------------------------------------------------------------
def valid_keys() -> frozenset[str]:
    """Every key some task kind reads, plus the harness's and the backend's own. lm-eval hands the
    same --metadata to every task of a run, so a key any kind knows is accepted by all."""
    keys = set(HARNESS_KEYS) | set(MODEL_ARG_KEYS)
    for kind in _KINDS.values():
        keys |= kind.settings.keys()
    return frozenset(keys)


def check_keys(metadata: dict) -> None:
    valid = valid_keys()
    for key in metadata:
        if key not in valid:
            near = closest(key, valid)
            hint = f"did you mean {', '.join(near)}? " if near else ""
            listed = sorted(valid - HARNESS_KEYS - set(MODEL_ARG_KEYS))
            raise SaeInterpError(f"unknown --metadata key {key!r}; {hint}valid keys: {', '.join(listed)}")


def settings_for(name: str, metadata: dict) -> Settings:
    """The kind's typed settings from flat task metadata; unknown keys and bad values raise."""
    check_keys(metadata)
    return get(name).settings.from_metadata(metadata)


# --- resolving "module:function" ----------------------------------------------------------------
def _resolve(target: Target, what: str) -> Callable:
    if callable(target):
        return target
    module_name, _, attr = str(target).partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise SaeInterpError(f"{what} {target!r} cannot be imported ({err}); give it as 'package.module:function'") from err
    found = getattr(module, attr, None) if attr else None
    if not callable(found):
        near = closest(attr or "", [n for n in dir(module) if not n.startswith("_")])
        hint = f" (did you mean {', '.join(near)}?)" if near else ""
        raise SaeInterpError(f"{what} {target!r} names no function in {module_name}{hint}")
    return found
