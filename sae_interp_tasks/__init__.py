"""Interpretability tasks for sparse autoencoders, as an lm-evaluation-harness plugin.

Kept import-free on purpose: the `.pth` hook imports this package in every Python
process of the environment, so anything heavy belongs in the submodules.
"""

__version__ = "0.1.0"
