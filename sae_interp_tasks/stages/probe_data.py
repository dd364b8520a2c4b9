"""The labelled texts of sparse probing (the sae_sparse_probing task): a dataset's classes, each
with its train and test texts.

- `stdlib` (offline default): which standard-library package a piece of Python source comes from.
  Every module of the packages is read, its first `SKIP_CHARS` characters skipped (licence
  headers and module docstrings, as SAEBench skips the first 50 tokens of github-code), and cut
  into pieces of about `probe_context` tokens (3 characters a token, as SAEBench cuts code); a
  class is a top-level package (email, asyncio, ...), the most populous first.
- `hf:<dataset>` (or `hf:<dataset>:<config>`): a Hugging Face dataset's `probe_split`, its text in
  `probe_text_field` and its class in `probe_label_field`, as SAEBench's eight datasets are.

Per class, `probe_train_per_class` train texts and `probe_test_per_class` test texts drawn without
overlap (seeded). A class with too few texts is skipped and counted, never scored.
"""

from __future__ import annotations

import random
import sysconfig
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from sae_interp_tasks.config import StageConfig, option, positive
from sae_interp_tasks.errors import SaeInterpError

SKIP_CHARS = 150  # about 50 tokens of 3 characters
CHARS_PER_TOKEN = 3
K_CHOICES = (1, 2, 5, 10, 20, 50, 100)  # SAEBench's
# packages left out of the stdlib dataset: tests, vendored and generated code (codec tables, the
# documentation topics file), and distutils (gone from Python 3.12): a package's own source only
LEFT_OUT = frozenset(
    {
        "test",
        "idlelib",
        "lib2to3",
        "site-packages",
        "__pycache__",
        "ensurepip",
        "encodings",
        "pydoc_data",
        "distutils",
    }
)


@dataclass(frozen=True)
class ProbeConfig(StageConfig):
    probe_dataset: str = "stdlib"  # stdlib | hf:<dataset>[:<config>]
    probe_split: str = "train"  # hf: the split read
    probe_text_field: str = "text"
    probe_label_field: str = "label"
    probe_classes: list | None = None  # None: the most populous `probe_max_classes`
    probe_max_classes: int = positive(5)  # doc slots: one binary task (class vs rest) each
    probe_train_per_class: int = positive(250)
    probe_test_per_class: int = positive(100)
    probe_context: int = option(128, min=8)  # tokens read of each text
    # probes on the k latents (and k activation dimensions) that differ most between the classes
    probe_k: list = option([1, 2, 5], choices=K_CHOICES)

    def check(self) -> None:
        if not self.probe_k:
            raise SaeInterpError("probe_k is empty; give at least one k, e.g. [1, 2, 5]")
        if self.probe_classes is not None and len(self.probe_classes) < 2:
            raise SaeInterpError(
                f"probe_classes={self.probe_classes!r} names fewer than 2 classes; a probe "
                "tells one class from the others"
            )

    @property
    def n_slots(self) -> int:
        return len(self.probe_classes) if self.probe_classes else self.probe_max_classes


@dataclass(frozen=True)
class ProbeData:
    """The classes chosen (most populous first) with their train and test texts, and those skipped
    for too few texts (class -> how many it had)."""

    classes: list[str]
    train: dict[str, list[str]]
    test: dict[str, list[str]]
    skipped: dict[str, int] = field(default_factory=dict)


def load_probe_data(cfg: ProbeConfig, seed: int) -> ProbeData:
    texts = _stdlib_texts(cfg) if cfg.probe_dataset == "stdlib" else _hf_texts(cfg)
    need = cfg.probe_train_per_class + cfg.probe_test_per_class
    if cfg.probe_classes is not None:
        wanted = [str(c) for c in cfg.probe_classes]
        missing = [c for c in wanted if c not in texts]
        if missing:
            known = ", ".join(sorted(texts, key=lambda c: -len(texts[c]))[:20])
            raise SaeInterpError(
                f"probe_classes {missing} are not classes of {cfg.probe_dataset} (its classes: "
                f"{known}); fix probe_classes"
            )
    else:
        wanted = sorted(texts, key=lambda c: (-len(texts[c]), c))[: cfg.probe_max_classes]
    skipped = {c: len(texts[c]) for c in wanted if len(texts[c]) < need}
    chosen = [c for c in wanted if c not in skipped]
    if len(chosen) < 2:
        raise SaeInterpError(
            f"{cfg.probe_dataset}: fewer than 2 classes have the {need} texts a split needs "
            f"({', '.join(f'{c}: {n}' for c, n in skipped.items())}); lower "
            "probe_train_per_class / probe_test_per_class"
        )
    rng = random.Random(f"{seed}:probe-split")
    train, test = {}, {}
    for c in chosen:
        drawn = rng.sample(texts[c], need)
        train[c], test[c] = drawn[: cfg.probe_train_per_class], drawn[cfg.probe_train_per_class :]
    return ProbeData(chosen, train, test, skipped)


def _stdlib_texts(cfg: ProbeConfig) -> dict[str, list[str]]:
    root = Path(sysconfig.get_paths()["stdlib"])
    size = cfg.probe_context * CHARS_PER_TOKEN
    out: dict[str, list[str]] = defaultdict(list)
    for package in sorted(p for p in root.iterdir() if p.is_dir() and p.name not in LEFT_OUT):
        if not (package / "__init__.py").exists():
            continue
        for module in sorted(package.rglob("*.py")):
            if "test" in module.relative_to(package).parts[:-1]:
                continue
            text = module.read_text(encoding="utf-8", errors="replace")[SKIP_CHARS:]
            for start in range(0, len(text) - size + 1, size):
                out[package.name].append(text[start : start + size])
    return dict(out)


def _hf_texts(cfg: ProbeConfig) -> dict[str, list[str]]:
    if not cfg.probe_dataset.startswith("hf:"):
        raise SaeInterpError(
            f"probe_dataset={cfg.probe_dataset!r}: give stdlib or hf:<dataset>[:<config>]"
        )
    from datasets import load_dataset

    name, _, config = cfg.probe_dataset[3:].partition(":")
    try:
        data = load_dataset(name, config or None, split=cfg.probe_split)
    except Exception as err:  # the hub's and datasets' many errors: one line that says what to fix
        raise SaeInterpError(
            f"cannot load {cfg.probe_dataset} split {cfg.probe_split!r} ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}); check the name, config and split"
        ) from err
    fields = list(data.column_names)
    for key in ("probe_text_field", "probe_label_field"):
        if getattr(cfg, key) not in fields:
            raise SaeInterpError(
                f"{cfg.probe_dataset} has no field {getattr(cfg, key)!r}; set {key} to one of: "
                f"{', '.join(fields)}"
            )
    names = getattr(data.features[cfg.probe_label_field], "names", None)
    out: dict[str, list[str]] = defaultdict(list)
    for row in data:
        label = row[cfg.probe_label_field]
        text = str(row[cfg.probe_text_field] or "").strip()
        if text:
            out[names[label] if names else str(label)].append(text)
    return dict(out)
