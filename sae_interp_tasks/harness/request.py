"""The `interpret` request: a typed record from the Task to the handler of its kind.

The Task builds one `InterpretRequest` per doc with the settings it parsed once, at task load
(`SAETask.settings`). lm-eval carries a request's arguments as strings (it hashes them and writes
them into the samples file), so at that boundary the request travels as `WireRequest`: a `str`
whose text is the request's JSON (what `--log_samples` records under `arguments`, exactly as before
requests were typed) and which holds the typed record itself. The backend reads `.request` back; a
plain JSON string (a request built by hand, or one that lost its record) is parsed once, here.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from sae_interp_tasks import registry
from sae_interp_tasks.caching import canonical
from sae_interp_tasks.config import Settings


@dataclass(frozen=True)
class InterpretRequest:
    """One doc of one task: `doc` is {"slot": i} for latent kinds, {"chunk": i} for sae_core;
    `settings` is the kind's typed bundle and `recorded` the same settings as the task's flat
    metadata (what the samples file records); `defaults_from` names the SAE whose instrument
    defaults the task took (None: none)."""

    kind: str
    task: str
    doc: dict
    seed: int
    settings: Settings = field(compare=False)
    recorded: dict = field(default_factory=dict)
    defaults_from: str | None = None

    @property
    def slot(self) -> int:
        return int(self.doc["slot"])

    @property
    def chunk(self) -> int:
        return int(self.doc["chunk"])

    def to_json(self) -> str:
        return json.dumps(
            {
                "kind": self.kind,
                "task": self.task,
                "doc": self.doc,
                "seed": self.seed,
                "settings": self.recorded,
                "defaults_from": self.defaults_from,
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> InterpretRequest:
        """A request from its JSON; its settings parsed (and checked) by its kind."""
        data = json.loads(text)
        return cls(
            kind=data["kind"],
            task=data["task"],
            doc=data["doc"],
            seed=int(data["seed"]),
            settings=registry.settings_for(data["kind"], data["settings"]),
            recorded=data["settings"],
            defaults_from=data.get("defaults_from"),
        )


class WireRequest(str):
    """A request as lm-eval carries it: its JSON text, holding the typed request."""

    request: InterpretRequest

    def __new__(cls, request: InterpretRequest) -> WireRequest:
        wire = super().__new__(cls, request.to_json())
        wire.request = request
        return wire

    def __reduce__(self):  # pickled (a launcher's gather) as the typed request it carries
        return (WireRequest, (self.request,))


def read_request(argument: str) -> InterpretRequest:
    """The typed request an `interpret` Instance carries (parsed from JSON where it has none)."""
    if isinstance(argument, WireRequest):
        return argument.request
    return InterpretRequest.from_json(argument)


def group_key(parts: tuple) -> str:
    """The text that names a group of requests whose work is determined by `parts` (settings,
    seed, ...): `caching.canonical`, the same text on every rank of a launcher."""
    return canonical(*parts)


def grouped(items: Iterable, key: Callable[[object], tuple]) -> dict[str, list[int]]:
    """Indices of `items` by group_key(key(item)), in first-seen order: the one way requests are
    grouped by the settings that determine their work."""
    groups: dict[str, list[int]] = {}
    for i, item in enumerate(items):
        groups.setdefault(group_key(key(item)), []).append(i)
    return groups
