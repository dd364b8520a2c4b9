"""The lm-eval glue: one module per task kind, each declaring its kind with `@task_kind`.

Importing this package imports every module in it, so the registry knows all built-in kinds
(and their settings keys) whichever task YAML lm-eval loads first. A new task module needs no
entry here.
"""

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
