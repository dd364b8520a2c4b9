"""Registers the `sae` backend and this package's task folder with lm-eval 0.4.13.

lm-eval 0.4.13 reads no plugin entry points and resolves `--model` before loading any
task YAML, so the wheel ships `sae_interp_tasks.pth`, which imports this module at
interpreter start. It only adds a meta-path finder (no lm_eval import, no torch):

- when `lm_eval.api.registry` has loaded, import `lm_eval.models` first (the built-in
  models register only while the registry is empty), then register `sae` lazily as
  "sae_interp_tasks.harness.backend:SAEBackend", and give lm-eval's base `LM` an `interpret` that
  says these tasks need `--model sae` (another backend would fail with an AttributeError);
- when `lm_eval.tasks.manager` has loaded, every `TaskManager` also scans this
  package's `task_configs/` folder, and the metadata it is built with (lm-eval's CLI passes
  `--model_args` merged with `--metadata`) gains one key, `sae_interp_user_keys`, listing the keys
  the user set; lm-eval hands that metadata to every task it builds, so a task can tell the keys a
  user set from its YAML's defaults;
- when `lm_eval.evaluator_utils` has loaded, an aggregation function that carries its own
  closed-form `stderr` uses it instead of lm-eval's bootstrap (which forks the process per metric);
- our own `SaeInterpError` ends a CLI run with one line naming the fix, not a traceback.

The task YAMLs live in the repository's top-level `task_configs/`; the wheel carries them as
`sae_interp_tasks/task_configs/` (hatchling force-includes it). Without the `.pth` (e.g. a source
checkout on PYTHONPATH) use
`lm_eval --include_path task_configs` and call `register()` yourself.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys

_PACKAGE = os.path.dirname(os.path.abspath(__file__))
# installed wheel: inside the package; source checkout or editable install: beside it
TASK_DIR = next(
    (
        path
        for path in (
            os.path.join(_PACKAGE, "task_configs"),
            os.path.join(os.path.dirname(_PACKAGE), "task_configs"),
        )
        if os.path.isdir(path)
    ),
    os.path.join(_PACKAGE, "task_configs"),
)
BACKEND = "sae_interp_tasks.harness.backend:SAEBackend"


def register_backend(registry_module) -> None:
    import lm_eval.models  # noqa: F401  (built-ins before us, see the module docstring)

    if "sae" not in registry_module.model_registry:
        registry_module.model_registry.register("sae", target=BACKEND)
    _guard_other_backends()
    _install_excepthook()


def _guard_other_backends() -> None:
    from lm_eval.api.model import LM

    if hasattr(LM, "interpret"):
        return

    def interpret(self, requests):
        from sae_interp_tasks.errors import SaeInterpError

        tasks = sorted({req.task_name for req in requests if getattr(req, "task_name", None)})
        named = ", ".join(tasks) or "these tasks"
        raise SaeInterpError(
            f"{named} need{'s' if len(tasks) == 1 else ''} --model sae (the SAE under evaluation), "
            f"not --model {getattr(self, 'MODEL_NAME', None) or type(self).__name__}"
        )

    LM.interpret = interpret


def add_task_dir(manager_module) -> None:
    cls = manager_module.TaskManager
    if getattr(cls.__init__, "_sae_interp_wrapped", False):
        return
    original = cls.__init__

    def __init__(self, *args, include_path=None, **kwargs):
        paths = (
            []
            if include_path is None
            else (list(include_path) if isinstance(include_path, (list, tuple)) else [include_path])
        )
        if TASK_DIR not in [str(p) for p in paths]:
            paths.insert(0, TASK_DIR)  # user paths come later, so they can override ours
        from sae_interp_tasks.config import USER_KEYS

        metadata = dict(kwargs.get("metadata") or {})
        metadata.setdefault(USER_KEYS, sorted(k for k in metadata if k != USER_KEYS))
        kwargs["metadata"] = metadata
        original(self, *args, include_path=paths, **kwargs)

    __init__._sae_interp_wrapped = True
    cls.__init__ = __init__


def register() -> None:
    """Explicit registration, for processes where the `.pth` hook did not run."""
    import lm_eval.api.registry as registry
    import lm_eval.evaluator_utils as evaluator_utils
    import lm_eval.tasks.manager as manager

    register_backend(registry)
    add_task_dir(manager)
    closed_form_stderr(evaluator_utils)


def _install_excepthook() -> None:
    previous = sys.excepthook
    if getattr(previous, "_sae_interp", False):
        return

    def hook(exc_type, exc, tb):
        from sae_interp_tasks.errors import SaeInterpError

        cause = exc
        while cause is not None and not isinstance(cause, SaeInterpError):
            cause = cause.__cause__ or cause.__context__
        if cause is None:
            return previous(exc_type, exc, tb)
        sys.stderr.write(f"error: {cause}\n")

    hook._sae_interp = True
    sys.excepthook = hook


def closed_form_stderr(utils_module) -> None:
    """Aggregations with a `stderr` attribute get it as their standard error, not a bootstrap."""
    original = utils_module.stderr_for_metric
    if getattr(original, "_sae_interp", False):
        return

    def stderr_for_metric(metric, bootstrap_iters):
        own = getattr(metric, "stderr", None)
        if own is not None and bootstrap_iters and bootstrap_iters > 0:
            return own
        return original(metric, bootstrap_iters)

    stderr_for_metric._sae_interp = True
    utils_module.stderr_for_metric = stderr_for_metric


_AFTER_IMPORT = {
    "lm_eval.api.registry": register_backend,
    "lm_eval.tasks.manager": add_task_dir,
    "lm_eval.evaluator_utils": closed_form_stderr,
}


class _Loader(importlib.abc.Loader):
    def __init__(self, inner, callback):
        self.inner, self.callback = inner, callback

    def create_module(self, spec):
        return self.inner.create_module(spec)

    def exec_module(self, module):
        self.inner.exec_module(module)
        self.callback(module)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        callback = _AFTER_IMPORT.get(fullname)
        if callback is None:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
        if spec is None or spec.loader is None:
            return None
        spec.loader = _Loader(spec.loader, callback)
        return spec


if not any(isinstance(f, _Finder) for f in sys.meta_path):
    sys.meta_path.insert(0, _Finder())
