"""Task settings: the YAML's `metadata` holds each task's defaults, `--metadata` overrides them.

lm-eval merges the YAML `metadata`, `--model_args` and `--metadata` into one dict per task.
Each flat key names one field of one typed stage config (CorpusSpec, PassConfig, ...), so
`settings_for(kind, metadata)` builds the typed configs and rejects any key that no task knows.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import typing
from dataclasses import dataclass, fields

from sae_interp_tasks.activations import PassConfig
from sae_interp_tasks.corpus import CorpusSpec
from sae_interp_tasks.errors import SaeInterpError, closest
from sae_interp_tasks.examples import ExampleConfig

log = logging.getLogger(__name__)

# keys lm-eval itself puts into a task's metadata, and the backend's --model_args
HARNESS_KEYS = {"version", "config_source", "_metadata", "pretrained"}
MODEL_ARG_KEYS = {"release", "sae_id", "path", "model", "device", "dtype", "batch_size", "max_batch_size",
                  "control", "control_k", "max_length", "trust_remote_code"}


@dataclass(frozen=True)
class CorpusSettings:
    corpus: str = "sae"  # sae (the SAE's training set) | stdlib | hf:<dataset> | <local path>
    corpus_name: str | None = None
    corpus_split: str = "train"
    text_field: str = "text"

    def spec(self, sae_dataset: str | None) -> CorpusSpec:
        source = self.corpus
        if source == "sae":
            if not sae_dataset:
                log.warning("the SAE's metadata names no dataset_path; using the offline stdlib corpus "
                            "(set corpus=hf:<dataset> to choose one)")
                source = "stdlib"
            elif sae_dataset == "stdlib" or sae_dataset.startswith(("hf:", "/", ".")):
                source = sae_dataset
            else:
                source = f"hf:{sae_dataset}"
        return CorpusSpec(source=source, name=self.corpus_name, split=self.corpus_split, text_field=self.text_field)


@dataclass(frozen=True)
class CoreSettings:
    n_tokens: int = 32_768
    context_size: int = 256
    chunk_contexts: int = 8  # contexts per doc (one doc = one chunk)
    seed: int | None = None  # None: the harness's --seed


@dataclass(frozen=True)
class LatentSelection:
    n_latents: int = 64  # docs: latent slots, filled with a seeded sample of live latents
    latents: list | None = None  # or exactly these latent ids
    seed: int | None = None


def _field_names(cls) -> set[str]:
    return {f.name for f in fields(cls)}


TASK_CONFIGS: dict[str, tuple] = {
    "core": (CorpusSettings, CoreSettings),
}


def register_task_configs(kind: str, *classes) -> None:
    TASK_CONFIGS[kind] = classes


def valid_keys() -> set[str]:
    keys = set(HARNESS_KEYS) | MODEL_ARG_KEYS
    for classes in TASK_CONFIGS.values():
        for cls in classes:
            keys |= _field_names(cls)
    return keys


def check_keys(metadata: dict) -> None:
    valid = valid_keys()
    for key in metadata:
        if key not in valid:
            near = closest(key, valid)
            hint = f"did you mean {', '.join(near)}? " if near else ""
            raise SaeInterpError(f"unknown --metadata key {key!r}; {hint}valid keys: {', '.join(sorted(valid - HARNESS_KEYS - MODEL_ARG_KEYS))}")


def _coerce(cls, name: str, value):
    hint = typing.get_type_hints(cls)[name]
    base = [t for t in typing.get_args(hint) if t is not type(None)] or [hint]
    target = base[0] if isinstance(base[0], type) else None
    if value is None or target is None or isinstance(value, target):
        return value
    try:
        if target is bool and isinstance(value, str):
            return value.lower() in ("1", "true", "yes")
        if target is list and isinstance(value, str):
            return json.loads(value)
        return target(value)
    except (TypeError, ValueError, json.JSONDecodeError) as err:
        raise SaeInterpError(f"setting {name}={value!r} should be a {target.__name__}") from err


ZERO_OK = {"seed", "patch_layer", "probe_layer"}  # int settings where 0 is meaningful


def build(cls, metadata: dict):
    """An instance of a settings dataclass from the flat metadata (unknown keys checked elsewhere)."""
    kwargs = {f.name: _coerce(cls, f.name, metadata[f.name]) for f in fields(cls) if f.name in metadata}
    obj = cls(**kwargs)
    for f in fields(cls):
        value = getattr(obj, f.name)
        if isinstance(value, int) and not isinstance(value, bool) and value <= 0 and f.name not in ZERO_OK:
            raise SaeInterpError(f"{f.name} must be positive, got {value}")
    return obj


def settings_for(kind: str, metadata: dict) -> dict:
    """{class name: instance} for every settings class of the task kind."""
    check_keys(metadata)
    return {cls.__name__: build(cls, metadata) for cls in TASK_CONFIGS[kind]}


def pass_config(settings: "PassSettings", seed: int, batch_size: int) -> PassConfig:
    """The pass runs max(--batch_size, pass_batch_size) contexts a forward: lm-eval's default
    --batch_size of 1 would otherwise make it several times slower."""
    fields = {k: v for k, v in dataclasses.asdict(settings).items() if k != "pass_batch_size"}
    return PassConfig(**fields, seed=seed, batch_size=max(batch_size, settings.pass_batch_size))


@dataclass(frozen=True)
class PassSettings:
    """The activation pass's knobs as task settings (the seed comes from LatentSelection/--seed)."""

    n_tokens: int = 262_144
    context_size: int = 256
    window: int = 32
    n_top: int = 40
    n_sample: int = 200
    n_random: int = 2_000
    pass_batch_size: int = 8  # at least this many contexts per forward in the activation pass
