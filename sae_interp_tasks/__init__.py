"""Interpretability tasks for sparse autoencoders, as an lm-evaluation-harness plugin.

Kept import-free on purpose: the `.pth` hook imports this package in every Python
process of the environment, so anything heavy belongs in the submodules.
"""

__version__ = "0.1.0"


def task_configs() -> str:
    """The folder of this package's task YAMLs (for `lm_eval --include_path` and plugin loaders)."""
    from sae_interp_tasks._lm_eval_hook import TASK_DIR

    return TASK_DIR
