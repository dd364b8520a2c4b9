"""The structure the package promises: one registry of task kinds, typed settings whose defaults
the YAMLs repeat exactly, no import cycles, YAMLs shipped in the wheel, a new task kind added the
way README's "Adding a task" says, and bad task input that fails before any model loads."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

import sae_interp_tasks.tasks  # noqa: F401  (declares the built-in task kinds)
from conftest import REPO
from helpers import error_lines, result_files, run_lm_eval, samples
from sae_interp_tasks import registry
from sae_interp_tasks.tasks.base import included_metadata

PACKAGE = REPO / "sae_interp_tasks"
TASK_DIR = REPO / "task_configs"


def shipped_tasks() -> dict[str, str]:
    """task name -> kind, for every task YAML in task_configs/ (a group names no class)."""
    kind_of = {f"{k.task_class.__module__}.{k.task_class.__name__}": name for name, k in registry.kinds().items()}
    found = {}
    for path in sorted(TASK_DIR.glob("*.yaml")):
        named = re.search(r"^class: !function (\S+)", path.read_text(), re.M)
        if named:
            assert named[1] in kind_of, f"{path.name} names {named[1]}, which declares no task kind"
            found[path.stem] = kind_of[named[1]]
    return found


BUILTIN = shipped_tasks()


# ------------------------------------------------------------------------------------ import graph
def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, known: set[str]) -> set[str]:
    """Every package module `path` imports, at top level or inside functions."""
    tree = ast.parse(path.read_text())
    this = module_name(path)
    package = this if path.name == "__init__.py" else this.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + ([base] if base else []))
            names = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != this:
                found.add(name)
    return found


def test_the_import_graph_has_no_cycles():
    files = sorted(PACKAGE.rglob("*.py"))
    known = {module_name(f) for f in files}
    graph = {}
    for f in files:
        name, deps = module_name(f), imported_modules(f, known)
        if f.name == "__init__.py":  # a package importing its own submodules is how packages work
            deps = {d for d in deps if not d.startswith(name + ".")}
        graph[name] = deps
    cycles, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for dep in sorted(graph[node]):
            if state.get(dep) == "open":
                cycles.append(stack[stack.index(dep):] + [dep])
            elif dep not in state:
                visit(dep, stack + [dep])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)
    assert "sae_interp_tasks.clients.records" in graph["sae_interp_tasks.clients.cache"]  # the parser sees imports


def test_no_test_module_imports_another():
    for path in sorted((REPO / "tests").glob("test_*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("test_"):
                pytest.fail(f"{path.name} imports {node.module}; shared helpers belong in tests/helpers.py")


# ------------------------------------------------------------------------------------ registry and settings
def test_every_builtin_task_yaml_names_a_registered_kind():
    # every kind the package declares ships a YAML, and the YAMLs found are the six task families
    declared = {name for name, k in registry.kinds().items() if k.task_class.__module__.startswith("sae_interp_tasks.")}
    assert set(BUILTIN.values()) == declared >= {"core", "detection", "fuzzing", "embedding", "selfexplain",
                                                 "intervention"}
    for task, kind in BUILTIN.items():
        spec = registry.get(kind)
        yaml_text = (TASK_DIR / f"{task}.yaml").read_text()
        assert f"{spec.task_class.__module__}.{spec.task_class.__name__}" in yaml_text, task
        assert spec.headline in spec.metrics, kind
        assert callable(spec.serve()), kind


def test_every_yaml_default_equals_its_settings_default():
    """YAML metadata (with its includes) and the dataclass defaults are one source of truth."""
    for task, kind in BUILTIN.items():
        path = TASK_DIR / f"{task}.yaml"
        own = json.loads(json.dumps(_yaml(path).get("metadata") or {}))
        metadata = {**included_metadata(path), **own}
        defaults = registry.get(kind).settings.defaults()
        listed = {k: v for k, v in metadata.items() if k != "version"}
        assert listed, task
        for key, value in listed.items():
            assert key in defaults, f"{task}.yaml sets {key!r}, which {kind}'s settings do not have"
            assert defaults[key] == value, f"{task}.yaml: {key}={value!r} but the settings default is {defaults[key]!r}"
        # the YAML is the place users read: every key the kind reads appears there, except the
        # client and batching knobs documented in docs/methods.md
        quiet = {"corpus_name", "corpus_split", "text_field", "pass_batch_size", "latents", "seed", "n_deciles",
                 "explainer_base_url", "explainer_max_tokens", "max_concurrency", "scorer_base_url",
                 "scorer_max_tokens", "embedding_batch_size", "selfexplain_batch_size", "intervention_batch_size",
                 "surprisal_base_url"}
        missing = set(defaults) - set(listed) - quiet
        assert not missing, f"{task}.yaml does not list {sorted(missing)}"


def test_the_result_readers_know_each_builtin_headline():
    """sae-interp reads results without importing the registry; its fallback table agrees with it."""
    from sae_interp_tasks.results_io import HEADLINE

    for task, kind in BUILTIN.items():
        assert HEADLINE[task] == registry.get(kind).headline, task


def test_stages_sharing_a_key_agree_on_its_default():
    for kind in registry.kinds().values():
        seen: dict = {}
        for stage in kind.settings.stages().values():
            for key, value in stage().as_dict().items():
                assert seen.setdefault(key, value) == value, (kind.name, key)


def test_a_kind_without_a_handler_fails_when_declared():
    from sae_interp_tasks.config import Settings
    from sae_interp_tasks.errors import SaeInterpError
    from sae_interp_tasks.tasks.base import SAETask

    with pytest.raises(SaeInterpError, match="task kind 'orphan' .*has no handler"):
        @registry.task_kind("orphan", settings=Settings)
        class Orphan(SAETask):
            METRICS = {}

    with pytest.raises(SaeInterpError, match="handler 'sae_interp_tasks.tasks.base:serve_lat' names no function"):
        @registry.task_kind("typo", settings=Settings, handler="sae_interp_tasks.tasks.base:serve_lat")
        class Typo(SAETask):
            METRICS = {}

        Typo(config={"task": "typo", "metadata": {}})


# ------------------------------------------------------------------------------------ packaging
def _yaml(path: Path) -> dict:
    import yaml

    from sae_interp_tasks.tasks.base import _YamlLoader

    return yaml.load(path.read_text(), Loader=_YamlLoader)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel as `pip install .` builds it (hatchling's PEP 517 hook, in process)."""
    import os

    from hatchling.build import build_wheel

    out = tmp_path_factory.mktemp("wheel")
    cwd = os.getcwd()
    os.chdir(REPO)
    try:
        return out / build_wheel(str(out))
    finally:
        os.chdir(cwd)


def test_the_wheel_carries_the_task_yamls_and_the_hook(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "sae_interp_tasks.pth" in names
    for path in TASK_DIR.iterdir():
        assert f"sae_interp_tasks/task_configs/{path.name}" in names, path.name


def test_an_installed_wheel_finds_its_task_yamls(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target", str(target),
                    str(wheel)], check=True, capture_output=True)
    code = "import sae_interp_tasks._lm_eval_hook as h; print(h.TASK_DIR)"
    proc = subprocess.run([sys.executable, "-S", "-c", code], env={"PYTHONPATH": str(target)}, cwd=tmp_path, capture_output=True,
                          text=True, check=True)
    assert Path(proc.stdout.strip()) == target / "sae_interp_tasks" / "task_configs"
    # and the source checkout (editable install) finds the top-level folder
    import sae_interp_tasks._lm_eval_hook as hook

    assert Path(hook.TASK_DIR) == TASK_DIR


def test_the_pinned_lm_eval_has_what_the_hook_patches():
    import importlib.metadata

    from packaging.specifiers import SpecifierSet

    requirement = next(r for r in importlib.metadata.requires("sae-interp-tasks") if r.startswith("lm-eval"))
    pinned = SpecifierSet(requirement.removeprefix("lm-eval"))
    assert importlib.metadata.version("lm_eval") in pinned and "0.5.0" not in pinned
    import inspect

    from lm_eval.api.registry import model_registry
    from lm_eval.tasks import TaskManager

    assert "include_path" in inspect.signature(TaskManager.__init__).parameters
    assert model_registry.get("sae") is not None
    # what the hook patches in, and the lm-eval internals the Task glue writes, exist in this version
    import dataclasses

    import lm_eval.evaluator_utils as evaluator_utils
    from lm_eval.api.model import LM
    from lm_eval.api.task import Task, TaskConfig

    from sae_interp_tasks.aggregations import nanmean

    assert getattr(evaluator_utils.stderr_for_metric, "_sae_interp", False)
    assert evaluator_utils.stderr_for_metric(nanmean, 100000) is nanmean.stderr  # closed form, not a bootstrap
    assert callable(getattr(LM, "interpret", None))  # the one-line error for other backends
    assert {"task", "metadata", "output_type"} <= {f.name for f in dataclasses.fields(TaskConfig)}
    assert "config" in inspect.signature(Task.__init__).parameters
    task = registry.get("detection").task_class(config={"task": "sae_detection", "metadata": {}})
    assert task.config.output_type == "interpret" and task.config.metadata["task_kind"] == "detection"


# ------------------------------------------------------------------------------------ adding a task
TOY_MODULE = '''
"""A toy task kind, written the way README's "Adding a task" says: a scorer, a Task class, a YAML."""
from dataclasses import dataclass, field

from lm_eval.api.metrics import nanmean

from sae_interp_tasks.config import StageConfig, positive
from sae_interp_tasks.memo import LatentRun, LatentSettings
from sae_interp_tasks.records import ScoredLatent
from sae_interp_tasks.registry import task_kind
from sae_interp_tasks.tasks.base import LatentTask


@dataclass(frozen=True)
class ToyConfig(StageConfig):
    toy_top_tokens: int = positive(1)  # how many of the explanation's quoted tokens count


@dataclass(frozen=True)
class ToySettings(LatentSettings):
    toy: ToyConfig = field(default_factory=ToyConfig)


def score_toy(run: LatentRun):
    """Hit rate: the share of test windows holding a token the explanation quotes, activating vs not."""
    decode = run.backend.tok_decode
    out = {}
    for lat in run.latents:
        split, quoted = run.splits[lat], run.explanations[lat].text.split('"')[1::2]
        quoted = quoted[:run.settings.toy.toy_top_tokens]
        hit = lambda ex: any(q in decode(ex.tokens.tolist()) for q in quoted)
        on = sum(map(hit, split.test_activating)) / len(split.test_activating)
        off = sum(map(hit, split.test_non_activating)) / len(split.test_non_activating)
        out[lat] = ScoredLatent(lat, "toy", run.explanations[lat].text, [], {"hit_rate": on, "false_hit_rate": off},
                                {"quoted": quoted})
    return out


@task_kind("toy", settings=ToySettings, scorer=score_toy, headline="hit_rate")
class ToyTask(LatentTask):
    METRICS = {"hit_rate": (nanmean, True), "false_hit_rate": (nanmean, False)}
'''

TOY_YAML = '''
include: {template}
task: sae_toy
class: !function toy_task.ToyTask
metadata:
  version: 1.0
  explainer: tokens
  toy_top_tokens: 1
'''

BAD_KIND_MODULE = '''
from sae_interp_tasks.tasks.base import LatentTask


class Undeclared(LatentTask):
    KIND = "undeclared"
    METRICS = {}
'''


@pytest.fixture(scope="module")
def toy_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("toy_tasks")
    (folder / "toy_task.py").write_text(textwrap.dedent(TOY_MODULE))
    (folder / "sae_toy.yaml").write_text(TOY_YAML.format(template=TASK_DIR / "_sae_latents_yaml"))
    (folder / "undeclared_task.py").write_text(BAD_KIND_MODULE)
    (folder / "sae_undeclared.yaml").write_text("task: sae_undeclared\nclass: !function undeclared_task.Undeclared\n")
    return folder


TINY_LATENTS = {"n_tokens": 4096, "context_size": 64, "window": 16, "n_top": 10, "n_sample": 40, "n_random": 64,
                "latents": [0, 1], "min_examples": 5, "n_train": 10, "n_test_per_decile": 1, "n_test_non_activating": 10}


def test_a_new_task_kind_runs_through_lm_eval(planted_sae, corpus_file, toy_dir, sae_cache, tmp_path):
    meta = {"corpus": str(corpus_file), **TINY_LATENTS}
    proc = run_lm_eval(["--model", "sae", "--model_args", f"path={planted_sae.path},device=cpu,batch_size=8",
                        "--tasks", "sae_toy", "--include_path", str(toy_dir), "--metadata", json.dumps(meta),
                        "--log_samples", "--output_path", str(tmp_path)], sae_cache)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (path,) = result_files(tmp_path)
    results = json.loads(path.read_text())
    got = results["results"]["sae_toy"]
    # the planted latents fire exactly on " cat" / " dog", and the token explainer quotes that token
    assert got["hit_rate,none"] == 1.0 and got["false_hit_rate,none"] == 0.0
    assert got["skipped_dead,none"] == 0
    meta_used = results["configs"]["sae_toy"]["metadata"]
    assert meta_used["toy_top_tokens"] == 1 and meta_used["n_train"] == 10
    assert meta_used["embedding_model"] == "sentence-transformers/all-MiniLM-L6-v2"  # from the included template
    assert meta_used["task_kind"] == "toy" and meta_used["headline_metric"] == "hit_rate"
    assert "scorer" not in meta_used and "chunk_contexts" not in meta_used  # only what the toy kind reads
    rows = samples(tmp_path, "sae_toy")
    assert [r["response"]["latent"] for r in rows] == [0, 1]
    assert rows[0]["response"]["scorer"]["quoted"] == [" cat"]
    # the leaderboard shows the new kind with no change to the CLI
    board = subprocess.run([sys.executable, "-m", "sae_interp_tasks.cli", "leaderboard", str(tmp_path), "--format",
                            "json"], capture_output=True, text=True)
    assert board.returncode == 0, board.stderr
    assert "sae_toy" in board.stdout and "hit_rate" in board.stdout


# ------------------------------------------------------------------------------------ instrument defaults an SAE brings
def test_an_sae_brings_its_own_instrument_defaults(planted_sae, corpus_file, sae_cache, tmp_path):
    """A folder SAE whose sae_lens metadata holds sae_interp_defaults: they replace the YAML's values for keys
    the user did not set, a warning line says so and how to restore them, and the results record it; a key the
    user sets wins, and a default equal to the YAML's is not mentioned."""
    import shutil

    sae_dir = shutil.copytree(planted_sae.path, tmp_path / "sae_with_defaults")
    cfg_path = sae_dir / "cfg.json"
    cfg = json.loads(cfg_path.read_text())
    # n_latents differs from the YAML's 64; non_activating and n_deciles equal the YAML's and the settings' own
    cfg.setdefault("metadata", {})["sae_interp_defaults"] = {"n_latents": 2, "non_activating": "random", "n_deciles": 10}
    cfg_path.write_text(json.dumps(cfg))
    meta = {k: v for k, v in TINY_LATENTS.items() if k != "latents"}
    meta.update(corpus=str(corpus_file), explainer="tokens")

    def lm_eval(extra: dict, out: Path):
        proc = run_lm_eval(["--model", "sae", "--model_args", f"path={sae_dir},device=cpu,batch_size=8", "--tasks",
                            "sae_embedding", "--metadata", json.dumps({**meta, **extra}), "--output_path", str(out)],
                           sae_cache)
        assert proc.returncode == 0, proc.stderr[-3000:]
        (path,) = result_files(out)
        return proc, json.loads(path.read_text())

    proc, results = lm_eval({}, tmp_path / "sae_defaults")
    (line,) = {ln for ln in proc.stderr.replace("\r", "\n").splitlines() if "instrument defaults" in ln}
    assert line.endswith(f"sae_embedding: the SAE {sae_dir} sets its own instrument defaults {{\"n_latents\": 2}} "
                         "(the task's are {\"n_latents\": 64}); for a full evaluation pass --metadata "
                         "'{\"n_latents\": 64}'"), line
    used = results["configs"]["sae_embedding"]["metadata"]
    assert used["n_latents"] == 2 and used["instrument_defaults_from"] == str(sae_dir)
    assert results["n-samples"]["sae_embedding"]["effective"] == 2

    proc, results = lm_eval({"n_latents": 3}, tmp_path / "user_set")
    assert "instrument defaults" not in proc.stderr
    used = results["configs"]["sae_embedding"]["metadata"]
    assert used["n_latents"] == 3 and "instrument_defaults_from" not in used
    assert results["n-samples"]["sae_embedding"]["effective"] == 3


# ------------------------------------------------------------------------------------ bad task input, end to end
@pytest.mark.parametrize("extra,expected", [
    (["--include_path", "{toy_dir}", "--tasks", "sae_undeclared"],
     "error: unknown task kind 'undeclared'"),
    (["--tasks", "sae_detection", "--metadata", json.dumps({"constrained": "maybe"})],
     "error: setting constrained='maybe' should be a boolean: true or false"),
    (["--tasks", "sae_detection", "--metadata", json.dumps({"n_latents": -4})],
     "error: setting n_latents=-4 must be at least 1"),
    (["--tasks", "sae_fuzzing", "--metadata", json.dumps({"train_sampling": "best"})],
     "error: setting train_sampling='best' is not valid; choose from: deciles, top, random"),
])
def test_bad_task_input_fails_before_any_model_loads(extra, expected, planted_sae, toy_dir, sae_cache, tmp_path):
    args = ["--model", "sae", "--model_args", f"path={planted_sae.path},device=cpu",
            *[a.replace("{toy_dir}", str(toy_dir)) for a in extra], "--output_path", str(tmp_path)]
    proc = run_lm_eval(args, sae_cache)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    (line,) = error_lines(proc.stderr)
    assert line.startswith(expected), line
    assert "sae backend: loading" not in proc.stderr  # failed at task-load time
    assert not result_files(tmp_path)


def test_these_tasks_with_another_backend_say_they_need_model_sae(tiny_model_dir, sae_cache, tmp_path):
    proc = run_lm_eval(["--model", "hf", "--model_args", f"pretrained={tiny_model_dir}", "--tasks", "sae_detection",
                        "--limit", "1", "--output_path", str(tmp_path)], sae_cache)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    (line,) = error_lines(proc.stderr)
    assert line.startswith("error: sae_detection needs --model sae (the SAE under evaluation), not --model"), line
    assert not result_files(tmp_path)
