"""lm-eval Task classes shared by every task kind.

A doc is one latent slot (latent tasks) or one corpus chunk (sae_core). Each doc becomes one
`interpret` request whose single argument is a JSON payload naming the task kind, the doc, the
seed and the task's flat settings; the `sae` backend answers all of a run's requests together,
grouped by the handler each kind declares (`serve=` in `registry.task_kind`).

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

from sae_interp_tasks import registry
from sae_interp_tasks.aggregations import Pooled, total
from sae_interp_tasks.config import NOT_SETTINGS, USER_KEYS
from sae_interp_tasks.harness.request import InterpretRequest, WireRequest
from sae_interp_tasks.records import USAGE_METRICS, Response

DEFAULT_SEED = 1234  # lm-eval's default --seed for the fewshot sampler
# lm-eval's own metadata keys a task keeps
LM_EVAL_KEYS_KEPT = frozenset({"version", "config_source"})
log = logging.getLogger(__name__)
NAN = float("nan")


class _YamlLoader(yaml.SafeLoader):
    """Reads task YAMLs as data: `!function` tags stay strings (lm-eval resolves them itself)."""


_YamlLoader.add_constructor("!function", lambda loader, node: loader.construct_scalar(node))


def included_metadata(yaml_path: str | Path | None, _seen: frozenset = frozenset()) -> dict:
    """The `metadata` of the files a task YAML includes, deepest first (the task's own file
    excluded)."""
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
    """Base of every task here. Subclasses are declared with `@registry.task_kind(...)` and set
    METRICS (metric -> (aggregation, higher_is_better)) and make_docs."""

    VERSION = 1
    KIND = ""
    METRICS: dict = {}

    def __init__(self, config=None, **kwargs):
        config = dict(config or {})
        own = dict(config.get("metadata") or {})
        metadata = {**included_metadata(own.get("config_source")), **own}
        # the keys the user set (the import hook adds their list to the run's metadata); None when
        # the task is built outside a TaskManager, where nothing tells them from the YAML's
        user_keys = metadata.pop(USER_KEYS, None)
        # an unknown kind, an unknown key or a bad value fails here, before any model loads
        kind = registry.lookup(self.KIND)
        self._defaults_from = self._apply_sae_defaults(
            metadata, kind, config.get("task", self.KIND), user_keys
        )
        self.settings = registry.settings_for(self.KIND, metadata)
        # lm-eval hands every task all of --metadata and --model_args; the results file records only
        # what this task reads, with its kind and its report (so result readers need no registry)
        self._metadata = {
            k: v for k, v in metadata.items() if k in kind.settings.keys() or k in LM_EVAL_KEYS_KEPT
        }
        self._metadata.update(
            task_kind=kind.name, headline_metric=kind.headline, report=kind.report.to_json()
        )
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
        # Task.__init__ would wrap a dict as TaskConfig({...}) (all of it in `task`, the metadata
        # lost from the results file); build the config field by field, with our own output type
        known = {f.name for f in dataclasses.fields(TaskConfig)}
        fields = {k: v for k, v in config.items() if k in known}
        fields.update(metadata=self._metadata, output_type="interpret")
        self._config = TaskConfig(**fields)
        if isinstance(self._metadata.get("version"), (int, float)):
            self.VERSION = self._metadata["version"]

    @staticmethod
    def _apply_sae_defaults(metadata: dict, kind, task: str, user_keys: list | None) -> str | None:
        """Put the SAE's own instrument defaults (see saes.INSTRUMENT_DEFAULTS_KEY) over the
        YAML's, for keys the user did not set; the SAE's label when any applied. Only when the
        user's keys are known (lm-eval built a TaskManager): otherwise nothing tells the YAML's
        values from the user's."""
        from sae_interp_tasks.stages.saes import instrument_defaults

        if user_keys is None:
            return None
        label, defaults = instrument_defaults(
            metadata.get("release"), metadata.get("sae_id"), metadata.get("path")
        )
        # the YAML's value, else the settings default
        current = {
            **kind.settings.defaults(),
            **metadata,
        }
        applied = {
            k: v
            for k, v in defaults.items()
            if k in kind.settings.keys() and k not in user_keys and current[k] != v
        }
        if not applied:
            return None
        yaml_values = {k: current[k] for k in applied}
        metadata.update(applied)
        log.warning(
            "%s: the SAE %s sets its own instrument defaults %s (the task's are %s); for a full "
            "evaluation "
            "pass --metadata '%s'",
            task,
            label,
            json.dumps(applied),
            json.dumps(yaml_values),
            json.dumps(yaml_values),
        )
        return label

    def metric_specs(self) -> dict:
        """This task's metrics, name -> (aggregation, higher_is_better): the kind's METRICS (a task
        may add ones its settings call for)."""
        return dict(self.METRICS)

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
        return {k: v for k, v in self._metadata.items() if k not in NOT_SETTINGS}

    def construct_requests(self, doc, ctx, **kwargs):
        request = InterpretRequest(
            kind=self.KIND,
            task=self.config.task,
            doc=doc,
            seed=self.seed,
            settings=self.settings,  # parsed once, when the task was built
            recorded=self.task_settings(),
            defaults_from=self._defaults_from,
        )
        return Instance(
            request_type="interpret",
            doc=doc,
            arguments=(WireRequest(request),),
            idx=0,
            metadata=kwargs.get("metadata", (self.config.task, None, 1)),
        )

    def process_results(self, doc, results) -> dict:
        """Each metric's per-doc value; a pooled metric's is the doc's statistics (see
        aggregations.Pooled)."""
        response: Response = results[0]
        return {
            name: response.stats if isinstance(agg, Pooled) else response.metrics.get(name, NAN)
            for name, (agg, _) in self.metric_specs().items()
        }

    def aggregation(self) -> dict:
        return {name: agg for name, (agg, _) in self.metric_specs().items()}

    def higher_is_better(self) -> dict:
        return {name: better for name, (_, better) in self.metric_specs().items()}


class LatentTask(SAETask):
    """Docs are latent slots, filled by a seeded sample of live latents (or `latents: [...]`); their
    requests are served by `harness.serve.serve_latents`."""

    def metric_specs(self) -> dict:
        # what the task's LLM calls cost (harness.costs): per-doc shares that sum to the task's
        # totals
        return {
            **super().metric_specs(),
            "skipped_dead": (total, False),
            **{m: (total, False) for m in USAGE_METRICS},
        }

    def make_docs(self) -> list[dict]:
        return [{"slot": i} for i in range(self.settings.selection.n_slots)]

    def process_results(self, doc, results) -> dict:
        values = super().process_results(doc, results)
        values["skipped_dead"] = results[0].skipped_before
        # the doc records which latent filled its slot: lm-eval writes this doc into the samples
        # file after this call, so a reader finds the latent without parsing the response
        doc["latent"] = results[0].latent
        return values

    @classmethod
    def response_detail(cls, scored, run) -> dict:
        """What --log_samples shows for a scored latent (run: harness.run_stages.LatentRun) besides
        its metrics."""
        split = run.splits[scored.latent]
        explanation = run.explanations[scored.latent]
        decode = run.decode
        return {
            "explanation": explanation.text,
            "explainer": explanation.explainer,
            "train_windows": [
                {
                    "text": decode(ex.tokens.tolist()),
                    "max_act": round(ex.max_act, 4),
                    "decile": ex.decile,
                }
                for ex in split.train
            ],
            "scorer": scored.detail,
        }
