"""Text corpora turned into fixed-length token contexts for the activation pass.

Sources (the `corpus` setting):
- `stdlib` (offline default): the Python standard library that ships with the interpreter:
  the language reference topics of `pydoc_data` and every stdlib module's source, read at
  run time (nothing is copied into this repo). About 3M tokens on Python 3.11.
- `hf:<dataset>` (optionally `corpus_name`, `corpus_split`, `text_field`): any Hugging Face
  dataset, streamed.
- a local path: a text file, a .jsonl/.json/.parquet/.csv file, or a folder of them.
- `sae`: the dataset the SAE was trained on (sae_lens metadata `dataset_path`).
Documents are shuffled with the seed, tokenized, separated by EOS and packed into contexts
of `context_size` tokens, each starting with BOS when the SAE expects one.
"""

from __future__ import annotations

import hashlib
import logging
import random
import sys
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from sae_interp_tasks.config import StageConfig
from sae_interp_tasks.errors import SaeInterpError

log = logging.getLogger(__name__)

_STDLIB_SKIP = {"site-packages", "test", "tests", "idlelib", "lib2to3", "__pycache__"}
_LOCAL_FORMATS = {
    ".txt": "text",
    ".md": "text",
    ".jsonl": "json",
    ".json": "json",
    ".parquet": "parquet",
    ".csv": "csv",
}


@dataclass(frozen=True)
class CorpusSpec:
    source: str = "stdlib"
    name: str | None = None  # HF dataset config name
    split: str = "train"
    text_field: str = "text"

    @property
    def label(self) -> str:
        return self.source if self.name is None else f"{self.source}:{self.name}"


@dataclass(frozen=True)
class CorpusConfig(StageConfig):
    """Which text the tasks read (task metadata keys)."""

    corpus: str = "sae"  # sae (the SAE's training set) | stdlib | hf:<dataset> | <local path>
    corpus_name: str | None = None  # the Hugging Face dataset's config name
    corpus_split: str = "train"
    text_field: str = "text"

    def spec(self, sae_dataset: str | None) -> CorpusSpec:
        """The concrete corpus; `sae` resolves to the SAE's own `dataset_path` (stdlib when it
        names none)."""
        source = self.corpus
        if source == "sae":
            if not sae_dataset:
                log.warning(
                    "the SAE's metadata names no dataset_path; using the offline stdlib corpus "
                    "(set corpus=hf:<dataset> to choose one)"
                )
                source = "stdlib"
            elif sae_dataset == "stdlib" or sae_dataset.startswith(("hf:", "/", ".")):
                source = sae_dataset
            else:
                source = f"hf:{sae_dataset}"
        return CorpusSpec(
            source=source,
            name=self.corpus_name,
            split=self.corpus_split,
            text_field=self.text_field,
        )


def stdlib_documents() -> list[str]:
    """Language-reference topics plus every stdlib module's source, in a fixed order."""
    from pydoc_data import topics

    docs = [topics.topics[key] for key in sorted(topics.topics)]
    root = Path(sysconfig.get_paths()["stdlib"])
    for path in sorted(root.rglob("*.py")):
        if _STDLIB_SKIP & set(path.relative_to(root).parts):
            continue
        try:
            docs.append(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, OSError):
            continue
    return [d for d in docs if d.strip()]


def _hf_texts(spec: CorpusSpec, seed: int) -> Iterator[str]:
    import datasets

    path = spec.source[3:] if spec.source.startswith("hf:") else spec.source
    local = Path(path)
    try:
        if local.exists():
            files = sorted(
                str(p)
                for p in (local.rglob("*") if local.is_dir() else [local])
                if p.suffix in _LOCAL_FORMATS
            )
            if not files:
                raise SaeInterpError(
                    f"corpus {path!r} has no {'/'.join(sorted(_LOCAL_FORMATS))} files"
                )
            builders = {_LOCAL_FORMATS[Path(f).suffix] for f in files}
            if len(builders) > 1:
                raise SaeInterpError(
                    f"corpus folder {path!r} mixes formats {sorted(builders)}; keep one kind of "
                    "file"
                )
            dataset = datasets.load_dataset(
                builders.pop(), data_files=files, split="train", streaming=True
            )
        else:
            dataset = datasets.load_dataset(path, spec.name, split=spec.split, streaming=True)
    except SaeInterpError:
        raise
    except Exception as err:  # datasets raises many types for "not found" / offline / bad config
        raise SaeInterpError(
            f"cannot open corpus {spec.label!r}: {str(err).splitlines()[0][:300]} "
            "(check the dataset name, corpus_name/corpus_split, your hub access, or use a local "
            "path)"
        ) from err
    dataset = dataset.shuffle(seed=seed, buffer_size=1000)
    checked = False
    for row in dataset:
        if not checked:
            if spec.text_field not in row:
                raise SaeInterpError(
                    f"corpus {spec.label!r} has no field {spec.text_field!r}; "
                    f"set text_field to one of: {', '.join(row)}"
                )
            checked = True
        text = row[spec.text_field]
        if isinstance(text, str) and text.strip():
            yield text


def iter_documents(spec: CorpusSpec, seed: int) -> Iterator[str]:
    if spec.source == "stdlib":
        docs = stdlib_documents()
        random.Random(seed).shuffle(docs)
        yield from docs
    else:
        yield from _hf_texts(spec, seed)


def token_contexts(
    spec: CorpusSpec,
    tokenizer,
    n_tokens: int,
    context_size: int,
    prepend_bos: bool,
    seed: int,
    batch_docs: int = 64,
) -> Iterator[torch.Tensor]:
    """Yield contexts (int64 [context_size]) until `n_tokens` tokens are produced; raise if the
    corpus runs dry."""
    if n_tokens <= 0 or context_size <= 1:
        raise SaeInterpError(
            f"n_tokens ({n_tokens}) and context_size ({context_size}) must be positive"
        )
    bos = tokenizer.bos_token_id if prepend_bos else None
    if prepend_bos and bos is None:
        raise SaeInterpError(
            "the SAE expects a BOS token but the tokenizer has none; set prepend_bos false in its "
            "metadata"
        )
    sep = tokenizer.eos_token_id
    body = context_size - (1 if bos is not None else 0)
    buffer: list[int] = []
    produced = 0
    docs = iter_documents(spec, seed)
    exhausted = False
    while produced < n_tokens:
        while len(buffer) < body and not exhausted:
            batch = [d for _, d in zip(range(batch_docs), docs, strict=False)]
            exhausted = len(batch) < batch_docs
            for ids in tokenizer(batch, add_special_tokens=False)["input_ids"] if batch else []:
                buffer.extend(ids)
                if sep is not None:
                    buffer.append(sep)
        if len(buffer) < body:
            raise SaeInterpError(
                f"corpus {spec.label!r} ran out after {produced} tokens but {n_tokens} were asked "
                "for; "
                "lower n_tokens or choose a larger corpus"
            )
        chunk, buffer = buffer[:body], buffer[body:]
        ctx = ([bos] if bos is not None else []) + chunk
        yield torch.tensor(ctx, dtype=torch.long)
        produced += context_size


def fingerprint(spec: CorpusSpec) -> str:
    """Identifies the corpus content for cache keys (the stdlib differs between Python versions)."""
    if spec.source == "stdlib":
        return (
            f"stdlib-py{sys.version_info.major}.{sys.version_info.minor}.{sys.version_info.micro}"
        )
    local = Path(spec.source)
    if local.exists():
        files = sorted(local.rglob("*")) if local.is_dir() else [local]
        digest = hashlib.sha256()
        for f in files:
            if f.is_file():
                digest.update(f"{f}:{f.stat().st_size}:{f.stat().st_mtime_ns}".encode())
        return "local-" + digest.hexdigest()[:16]
    return f"hf-{spec.source}-{spec.name}-{spec.split}-{spec.text_field}"
