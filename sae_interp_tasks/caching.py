"""Where cached work lives and how it is named and written.

Everything expensive is cached under `$SAE_INTERP_CACHE` (default
`~/.cache/sae_interp_tasks`): converted models, activation passes, sae_core chunks, LLM answers.
A cache entry is named by `cache_key(...)` of everything that determines its content (the LLM
answers too: the rows of their sqlite file, `clients/cache.py`), and written with
`stages.saved.atomic_save`, so an interrupted run leaves no half-written entry and a rerun resumes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
from pathlib import Path


def cache_root() -> Path:
    root = os.environ.get("SAE_INTERP_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "sae_interp_tasks"
    )
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def canonical(*parts) -> str:
    """A stable text form of `parts` (dataclasses as dicts, keys sorted, text as it is): equal
    inputs, equal text."""
    return json.dumps(
        [
            dataclasses.asdict(p) if dataclasses.is_dataclass(p) and not isinstance(p, type) else p
            for p in parts
        ],
        sort_keys=True,
        default=str,
        ensure_ascii=False,
    )


def cache_key(*parts, length: int = 24) -> str:
    """The hex name of a cache entry determined by `parts` (a sha256, cut to `length` hex digits;
    64 keeps all of it, as the LLM answer cache does: it holds far more entries than there are
    activation passes)."""
    return hashlib.sha256(canonical(*parts).encode()).hexdigest()[:length]


def write_files(files: dict[Path, str | bytes]) -> None:
    """Every file or none: each is written to a temporary file beside it, and only once all are
    written are they renamed into place. On failure the temporary files, and the folders made for
    them, are removed, and the error is raised as it came."""
    made: list[Path] = []
    tmps: dict[Path, Path] = {}
    try:
        for path, data in files.items():
            path = Path(path)
            missing = [p for p in (path.parent, *path.parent.parents) if not p.exists()]
            path.parent.mkdir(parents=True, exist_ok=True)
            made += reversed(missing)
            tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
            tmps[path] = tmp
            tmp.write_bytes(data.encode() if isinstance(data, str) else data)
        for path, tmp in tmps.items():
            tmp.replace(path)
    except BaseException:
        for tmp in tmps.values():
            tmp.unlink(missing_ok=True)
        for folder in reversed(made):
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
