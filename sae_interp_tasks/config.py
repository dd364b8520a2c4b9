"""Typed settings: a frozen config per pipeline stage, bundled per task kind.

lm-eval merges a task YAML's `metadata`, `--model_args` and `--metadata` into one flat dict per
task. Every key of that dict names one field of one stage config (`CorpusConfig.corpus`,
`PassConfig.n_tokens`, ...). A task kind's `Settings` bundle has one attribute per stage config
it needs (`settings.corpus`, `settings.activations`, ...), and `Settings.from_metadata(flat)`
builds them all.

Each stage config checks its own values when it is built: types are converted where the
metadata could only carry a string (a JSON list, an integer, a true/false word), and each field
declared with `option(...)` is checked against its range or its choices. A bad value is a
one-line `SaeInterpError` naming the key and what it accepts, raised at task-load time.
"""

from __future__ import annotations

import dataclasses
import json
import math
import typing
from dataclasses import dataclass, field, fields

from sae_interp_tasks.errors import SaeInterpError

# keys lm-eval itself puts into a task's metadata (and USER_KEYS, which the import hook adds: the
# keys the user set), and the `sae` backend's --model_args (lm-eval copies --model_args into every
# task's metadata too)
USER_KEYS = "sae_interp_user_keys"
HARNESS_KEYS = frozenset({"version", "config_source", "_metadata", "pretrained", USER_KEYS})
MODEL_ARG_KEYS = (
    "release",
    "sae_id",
    "path",
    "model",
    "device",
    "dtype",
    "batch_size",
    "max_batch_size",
    "control",
    "control_k",
    "max_length",
    "trust_remote_code",
    "hookpoint",
)
# what a Task records in its results metadata besides its settings: which kind, how to report it,
# and whose instrument defaults it took (see harness.task)
SELF_DESCRIPTION_KEYS = frozenset(
    {"task_kind", "headline_metric", "report", "instrument_defaults_from"}
)
# the metadata keys that are not instrument settings
NOT_SETTINGS = HARNESS_KEYS | frozenset(MODEL_ARG_KEYS) | SELF_DESCRIPTION_KEYS

TRUE_WORDS = ("true", "yes", "on", "1")
FALSE_WORDS = ("false", "no", "off", "0")


def option(
    default,
    *,
    choices: tuple | None = None,
    min: float | None = None,
    max: float | None = None,
    above: float | None = None,
    below: float | None = None,
):
    """A config field with its accepted values: `choices`, or a range (`min`/`max` inclusive,
    `above`/`below` exclusive). A `None` value is accepted wherever the field's type allows it."""
    checks = {"choices": choices, "min": min, "max": max, "above": above, "below": below}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: json.loads(json.dumps(default)), metadata=checks)
    return field(default=default, metadata=checks)


def positive(default):
    return option(default, min=1)


@dataclass(frozen=True)
class StageConfig:
    """Base of every stage config: converts and checks its fields after construction."""

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in fields(self):
            value = _convert(f.name, hints[f.name], getattr(self, f.name))
            _check_range(f, value)
            object.__setattr__(self, f.name, value)
        self.check()

    def check(self) -> None:
        """Rules between fields; raise SaeInterpError naming the keys."""

    @classmethod
    def keys(cls) -> frozenset[str]:
        return frozenset(f.name for f in fields(cls))

    @classmethod
    def from_metadata(cls, metadata: dict):
        return cls(**{key: metadata[key] for key in cls.keys() if key in metadata})

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Settings:
    """A task kind's settings: one attribute per stage config (subclasses declare them)."""

    @classmethod
    def stages(cls) -> dict[str, type[StageConfig]]:
        hints = typing.get_type_hints(cls)
        return {f.name: hints[f.name] for f in fields(cls)}

    @classmethod
    def keys(cls) -> frozenset[str]:
        return frozenset().union(*(stage.keys() for stage in cls.stages().values()))

    @classmethod
    def from_metadata(cls, metadata: dict):
        """The bundle from flat task metadata (keys no stage declares are ignored here; the
        registry rejects keys that no task kind knows)."""
        return cls(**{name: stage.from_metadata(metadata) for name, stage in cls.stages().items()})

    @classmethod
    def defaults(cls) -> dict:
        """Every flat key with its default value."""
        out: dict = {}
        for stage in cls.stages().values():
            out.update(stage().as_dict())
        return out

    def project(self, other: type[Settings]):
        """This bundle's stage configs seen as another kind's bundle (which must be a subset of
        them), e.g. sae_selfexplain reading its settings as sae_detection's to share detection
        scores."""
        return other(**{name: getattr(self, name) for name in other.stages()})


# --- conversion and checks ---------------------------------------------------------------------
def _describe(hint) -> str:
    base = [t for t in typing.get_args(hint) if t is not type(None)] or [hint]
    names = [
        f"boolean: true or false ({'/'.join(TRUE_WORDS)}, {'/'.join(FALSE_WORDS)})"
        if t is bool
        else getattr(t, "__name__", str(t))
        for t in base
    ]
    return " or ".join(names) + (" (or null)" if type(None) in typing.get_args(hint) else "")


def _convert(name: str, hint, value):
    """`value` as the field's type, converting what metadata could only carry as text. With several
    types (`float | list`), the first that takes the value wins."""
    args = typing.get_args(hint)
    if value is None:
        if type(None) in args:
            return None
        raise SaeInterpError(f"setting {name} cannot be null; give a {_describe(hint)}")
    for base in [t for t in args if t is not type(None)] or [hint]:
        try:
            return _to_type(typing.get_origin(base) or base, value)
        except (TypeError, ValueError, json.JSONDecodeError):
            continue
    raise SaeInterpError(f"setting {name}={value!r} should be a {_describe(hint)}")


def _to_type(target, value):
    if target is bool:
        return _to_bool(value)
    if target is int:
        return _to_int(value)
    if target is float:
        if isinstance(value, bool):
            raise ValueError
        number = float(value)
        if not math.isfinite(number):
            raise ValueError
        return number
    if target is str:
        if not isinstance(value, str):
            raise ValueError
        return value
    if target in (list, dict):
        if isinstance(value, str):
            value = json.loads(value)
        if target is list and isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, target):
            raise ValueError
        return value
    return value


def _to_bool(value) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in TRUE_WORDS + FALSE_WORDS:
        return value.strip().lower() in TRUE_WORDS
    raise ValueError(f"one of {'/'.join(TRUE_WORDS + FALSE_WORDS)}")


def _to_int(value) -> int:
    if isinstance(value, bool):
        raise ValueError
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("+-").isdigit():
        return int(value.strip())
    raise ValueError


def _check_range(f: dataclasses.Field, value) -> None:
    rules = f.metadata
    if value is None or not rules:
        return
    name = f.name
    if rules.get("choices") is not None:
        items = value if isinstance(value, list) else [value]
        bad = [v for v in items if v not in rules["choices"]]
        if bad:
            raise SaeInterpError(
                f"setting {name}={value!r} is not valid; choose from: "
                f"{', '.join(map(str, rules['choices']))}"
            )
        return
    for key, ok, words in (
        ("min", lambda v, b: v >= b, "at least"),
        ("max", lambda v, b: v <= b, "at most"),
        ("above", lambda v, b: v > b, "above"),
        ("below", lambda v, b: v < b, "below"),
    ):
        bound = rules.get(key)
        if bound is not None and not ok(value, bound):
            raise SaeInterpError(f"setting {name}={value!r} must be {words} {bound}")
