"""Tensors saved into the cache folder (caching.py names the entries): written whole or not at
all."""

from __future__ import annotations

import os
from pathlib import Path

import torch


def atomic_save(obj, path: Path) -> None:
    """torch.save to a temporary file, then rename: readers see the old entry or the whole new
    one."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    torch.save(obj, tmp)
    tmp.replace(path)
