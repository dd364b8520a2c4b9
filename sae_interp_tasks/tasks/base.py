"""lm-eval Task classes shared by every task kind, and the handler that serves latent tasks.

A doc is one latent slot (latent tasks) or one corpus chunk (sae_core). Each doc becomes one
`interpret` request whose single argument is a JSON payload naming the task kind, the doc, the
seed and the task's flat settings; the `sae` backend answers all of a run's requests together,
grouped by the handler each kind declares (see `registry`).

Task YAMLs `include:` shared templates. lm-eval merges an include shallowly (the task's own
`metadata:` replaces the template's), so the Task merges the `metadata` of its YAML's include
chain itself: template keys, then the task's own, then `--metadata` (lm-eval has already merged
those two).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import yaml
from lm_eval.api.instance import Instance
from lm_eval.api.task import Task, TaskConfig

from sae_interp_tasks import memo, registry
from sae_interp_tasks.aggregations import total
from sae_interp_tasks.caching import canonical
from sae_interp_tasks.config import HARNESS_KEYS, MODEL_ARG_KEYS

NOT_SETTINGS = frozenset({"task_kind", "headline_metric", "instrument_defaults_from"})
from sae_interp_tasks.records import Response

DEFAULT_SEED = 1234  # lm-eval's default --seed for the fewshot sampler
RECORDED = frozenset({"version", "config_source"})  # lm-eval's own metadata keys a task keeps
log = logging.getLogger(__name__)
NAN = float("nan")


class _YamlLoader(yaml.SafeLoader):
    """Reads task YAMLs as data: `!function` tags stay strings (lm-eval resolves them itself)."""


_YamlLoader.add_constructor("!function", lambda loader, node: loader.construct_scalar(node))


def included_metadata(yaml_path: str | Path | None, _seen: frozenset = frozenset()) -> dict:
    """The `metadata` of the files a task YAML includes, deepest first (the task's own file excluded)."""
    if not yaml_path or not Path(yaml_path).is_file():
        return {}
    path = Path(yaml_path).resolve()
    if path in _seen:
        return {}
    cfg = yaml.load(path.read_text(), Loader=_YamlLoader) or {}
    merged: dict = {}
    includes = cfg.get("include") or []
    for inc in includes if isinstance(includes, list) else [includes]:
        inc_path = path.parent / inc
        merged.update(included_metadata(inc_path, _seen | {path}))
        inc_cfg = yaml.load(inc_path.read_text(), Loader=_YamlLoader) or {}
        merged.update(inc_cfg.get("metadata") or {})
    return merged


class SAETask(Task):
    """Base of every task here. Subclasses are declared with `@registry.task_kind(...)` and set METRICS
    (metric -> (aggregation, higher_is_better)) and make_docs."""

    VERSION = 1
    KIND = ""
    METRICS: dict = {}

    def __init__(self, config=None, **kwargs):
        config = dict(config or {})
        own = dict(config.get("metadata") or {})
        metadata = {**included_metadata(own.get("config_source")), **own}
        # an unknown kind or handler, an unknown key or a bad value fails here, before any model loads
        kind = registry.check_servable(self.KIND)
        self._defaults_from = self._apply_sae_defaults(metadata, kind, config.get("task", self.KIND))
        self.settings = registry.settings_for(self.KIND, metadata)
        # lm-eval hands every task all of --metadata and --model_args; the results file records only
        # what this task reads, with its kind and headline metric (so result readers need no registry)
        self._metadata = {k: v for k, v in metadata.items() if k in kind.settings.keys() or k in RECORDED}
        self._metadata.update(task_kind=kind.name, headline_metric=kind.headline)
        if self._defaults_from:
            self._metadata["instrument_defaults_from"] = self._defaults_from
        self._seed = DEFAULT_SEED
        # Task.__init__ builds a default TaskConfig (output type generate_until, so it warns about
        # generation settings) that is replaced below: its construction has nothing to say here
        config_log = logging.getLogger("lm_eval.config.task")
        level = config_log.level
        config_log.setLevel(logging.ERROR)
        try:
            super().__init__()
        finally:
            config_log.setLevel(level)
        # Task.__init__ would wrap a dict as TaskConfig({...}) (all of it in `task`, the metadata lost
        # from the results file); build the config field by field, with our own output type
        known = {f.name for f in dataclasses.fields(TaskConfig)}
        fields = {k: v for k, v in config.items() if k in known}
        fields.update(metadata=self._metadata, output_type="interpret")
        self._config = TaskConfig(**fields)
        if isinstance(self._metadata.get("version"), (int, float)):
            self.VERSION = self._metadata["version"]

    @staticmethod
    def _apply_sae_defaults(metadata: dict, kind, task: str) -> str | None:
        """Put the SAE's own instrument defaults (see saes.INSTRUMENT_DEFAULTS_KEY) over the YAML's, for
        keys the user did not set; the SAE's label when any applied. Only when the run's metadata is
        known (lm-eval built a TaskManager): otherwise nothing tells the YAML's values from the user's."""
        from sae_interp_tasks import _lm_eval_hook
        from sae_interp_tasks.saes import instrument_defaults

        user = _lm_eval_hook.RUN_METADATA
        label, defaults = instrument_defaults(metadata.get("release"), metadata.get("sae_id"), metadata.get("path"))
        current = {**kind.settings.defaults(), **metadata}  # the YAML's value, else the settings default
        applied = {k: v for k, v in defaults.items()
                   if k in kind.settings.keys() and user is not None and k not in user and current[k] != v}
        if not applied:
            return None
        yaml_values = {k: current[k] for k in applied}
        metadata.update(applied)
        log.warning("%s: the SAE %s sets its own instrument defaults %s (the task's are %s); for a full evaluation "
                    "pass --metadata '%s'", task, label, json.dumps(applied), json.dumps(yaml_values),
                    json.dumps(yaml_values))
        return label

    @classmethod
    def all_metrics(cls) -> dict:
        return dict(cls.METRICS)

    def download(self, *args, **kwargs) -> None:
        pass

    def has_training_docs(self) -> bool:
        return False

    def has_validation_docs(self) -> bool:
        return False

    def has_test_docs(self) -> bool:
        return True

    def test_docs(self):
        return self.make_docs()

    def make_docs(self) -> list[dict]:
        raise NotImplementedError

    def doc_to_text(self, doc) -> str:
        return json.dumps(doc, sort_keys=True)

    def doc_to_target(self, doc) -> str:
        return ""

    def set_fewshot_seed(self, seed: int | None = None) -> None:
        super().set_fewshot_seed(seed)
        self._seed = DEFAULT_SEED if seed is None else int(seed)

    @property
    def seed(self) -> int:
        chosen = self._metadata.get("seed")
        return self._seed if chosen is None else int(chosen)

    def task_settings(self) -> dict:
        return {k: v for k, v in self._metadata.items() if k not in HARNESS_KEYS | set(MODEL_ARG_KEYS) | NOT_SETTINGS}

    def construct_requests(self, doc, ctx, **kwargs):
        payload = {"kind": self.KIND, "task": self.config.task, "doc": doc, "seed": self.seed,
                   "settings": self.task_settings(), "defaults_from": self._defaults_from}
        return Instance(request_type="interpret", doc=doc, arguments=(json.dumps(payload, sort_keys=True),),
                        idx=0, metadata=kwargs.get("metadata", (self.config.task, None, 1)))

    def process_results(self, doc, results) -> dict:
        response: Response = results[0]
        return {name: response.metrics.get(name, NAN) for name in self.METRICS}

    def aggregation(self) -> dict:
        return {name: agg for name, (agg, _) in self.all_metrics().items()}

    def higher_is_better(self) -> dict:
        return {name: better for name, (_, better) in self.all_metrics().items()}


class LatentTask(SAETask):
    """Docs are latent slots, filled by a seeded sample of live latents (or `latents: [...]`)."""

    HANDLER = "sae_interp_tasks.tasks.base:serve_latents"

    @classmethod
    def all_metrics(cls) -> dict:
        return {**cls.METRICS, "skipped_dead": (total, False)}

    def make_docs(self) -> list[dict]:
        return [{"slot": i} for i in range(self.settings.selection.n_slots)]

    def process_results(self, doc, results) -> dict:
        values = super().process_results(doc, results)
        values["skipped_dead"] = results[0].skipped_before
        return values

    @classmethod
    def response_detail(cls, scored, run: memo.LatentRun) -> dict:
        """What --log_samples shows for a scored latent besides its metrics."""
        split = run.splits[scored.latent]
        explanation = run.explanations[scored.latent]
        decode = run.backend.tok_decode
        return {
            "explanation": explanation.text,
            "explainer": explanation.explainer,
            "train_windows": [{"text": decode(ex.tokens.tolist()), "max_act": round(ex.max_act, 4),
                               "decile": ex.decile} for ex in split.train],
            "scorer": scored.detail,
        }


def serve_latents(backend, payloads: list[dict]) -> list[Response]:
    """Answer the docs of every latent task of a run: the shared stages once, then each kind's scores."""
    typed = [registry.settings_for(p["kind"], p["settings"]) for p in payloads]
    n_slots: dict[str, int] = {}  # per latent selection: the most slots any task asks for
    for p, s in zip(payloads, typed):
        key = canonical(*memo.selection_key(s, p["seed"]))
        n_slots[key] = max(n_slots.get(key, 0), p["doc"]["slot"] + 1)
    if backend.world_size > 1:  # every rank holds a share of the slots: they agree on the pool to select from
        for part in backend.all_gather_object(n_slots):
            for key, n in part.items():
                n_slots[key] = max(n_slots.get(key, 0), n)
    responses = []
    for p, s in zip(payloads, typed):
        run = memo.latent_run(backend, s, p["seed"], n_slots[canonical(*memo.selection_key(s, p["seed"]))])
        slot = p["doc"]["slot"]
        latent, skipped = run.selection.latents[slot], run.selection.skipped_before[slot]
        if latent is None:
            responses.append(Response(metrics={}, latent=None, skipped_before=skipped))
            continue
        scored = memo.scores(run, p["kind"])[latent]
        detail = registry.get(p["kind"]).task_class.response_detail(scored, run)
        responses.append(Response(metrics=scored.metrics, latent=latent, skipped_before=skipped, detail=detail))
    return responses

