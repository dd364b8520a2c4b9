"""The structure the package promises: one registry of task kinds, typed settings whose defaults
the YAMLs repeat exactly, no import cycles, no task kind named outside `tasks/` and the registry,
files and functions of a readable size, YAMLs shipped in the wheel, a new task kind (with an extra
column and a pooled metric) added the way README's "Adding a task" says and reaching lm_eval, the
leaderboard and compare, and bad task input that fails before any model loads."""

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
from helpers import SMALL_PASS, error_lines, result_files, run_lm_eval, samples
from sae_interp_tasks import registry
from sae_interp_tasks.harness.task import included_metadata

PACKAGE = REPO / "sae_interp_tasks"
TASK_DIR = REPO / "task_configs"


def shipped_tasks() -> dict[str, str]:
    """task name -> kind, for every task YAML in task_configs/ (a group names no class)."""
    kind_of = {
        f"{k.task_class.__module__}.{k.task_class.__name__}": name
        for name, k in registry.kinds().items()
    }
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
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1]
                    + ([base] if base else [])
                )
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
                cycles.append(stack[stack.index(dep) :] + [dep])
            elif dep not in state:
                visit(dep, stack + [dep])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)
    # the parser sees imports
    assert "sae_interp_tasks.clients.records" in graph["sae_interp_tasks.clients.cache"]


def test_no_test_module_imports_another():
    for path in sorted((REPO / "tests").glob("test_*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("test_"):
                pytest.fail(
                    f"{path.name} imports {node.module}; shared helpers belong in tests/helpers.py"
                )


# ------------------------------------------------------------------------------------ registry and
# settings
def test_every_builtin_task_yaml_names_a_registered_kind():
    # every kind the package declares ships a YAML, and the YAMLs found are the six task families
    declared = {
        name
        for name, k in registry.kinds().items()
        if k.task_class.__module__.startswith("sae_interp_tasks.")
    }
    assert (
        set(BUILTIN.values())
        == declared
        >= {"core", "detection", "fuzzing", "embedding", "selfexplain", "intervention"}
    )
    for task, kind in BUILTIN.items():
        spec = registry.lookup(kind)
        yaml_text = (TASK_DIR / f"{task}.yaml").read_text()
        assert f"{spec.task_class.__module__}.{spec.task_class.__name__}" in yaml_text, task
        assert spec.headline in spec.metrics, kind
        assert callable(spec.serve), kind
        assert spec.task_class.__module__ == f"sae_interp_tasks.tasks.{kind}"  # one home per kind


def test_every_yaml_default_equals_its_settings_default():
    """YAML metadata (with its includes) and the dataclass defaults are one source of truth."""
    for task, kind in BUILTIN.items():
        path = TASK_DIR / f"{task}.yaml"
        own = json.loads(json.dumps(_yaml(path).get("metadata") or {}))
        metadata = {**included_metadata(path), **own}
        defaults = registry.lookup(kind).settings.defaults()
        listed = {k: v for k, v in metadata.items() if k != "version"}
        assert listed, task
        for key, value in listed.items():
            assert key in defaults, f"{task}.yaml sets {key!r}, which {kind}'s settings do not have"
            assert defaults[key] == value, (
                f"{task}.yaml: {key}={value!r} but the settings default is {defaults[key]!r}"
            )
        # the YAML is the place users read: every key the kind reads appears there, except the
        # client and batching knobs documented in docs/methods.md
        quiet = {
            "corpus_name",
            "corpus_split",
            "text_field",
            "pass_batch_size",
            "latents",
            "seed",
            "n_deciles",
            "explainer_base_url",
            "explainer_max_tokens",
            "max_concurrency",
            "scorer_base_url",
            "scorer_max_tokens",
            "embedding_batch_size",
            "selfexplain_batch_size",
            "intervention_batch_size",
            "surprisal_base_url",
        }
        missing = set(defaults) - set(listed) - quiet
        assert not missing, f"{task}.yaml does not list {sorted(missing)}"


def test_results_files_carry_each_kinds_report_and_the_readers_take_it_from_there():
    """A Task writes its kind's Report into the results metadata; the report readers rebuild it
    from the file alone, and the one fallback (files without it) gives the same report."""
    from sae_interp_tasks.reports.results_io import task_report
    from sae_interp_tasks.reports.spec import ReportSpec

    for task, kind in BUILTIN.items():
        spec = registry.lookup(kind)
        built = spec.task_class(config={"task": task, "metadata": {}})
        recorded = json.loads(json.dumps(built.config.metadata["report"]))  # as lm-eval writes it
        data = {"configs": {task: {"metadata": {"report": recorded}}}, "config": {"model": "sae"}}
        assert ReportSpec.from_json(recorded) == spec.report == task_report(data, task), task
        # before reports were recorded
        old = {
            "configs": {task: {"metadata": {}}},
            "config": {"model": "sae"},
        }
        assert task_report(old, task) == spec.report, task
        assert spec.report.headline in spec.metrics
        assert all(
            m in spec.metrics and c in spec.metrics for m, c in spec.report.chance.items()
        ), task


def _non_doc_strings(path: Path):
    """(line, text) of every string constant in a module that is not a docstring."""
    tree = ast.parse(path.read_text())
    docs = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs
    ]


def test_no_module_outside_tasks_and_the_registry_names_a_task_kind():
    """No task name (sae_core, ...) in any module outside tasks/ and registry.py, and no kind name
    in the harness and report modules, where dispatch on a kind would sit. (A scorer or stage may
    use its own method's word, "surprisal", "simulation", for its progress bars and random streams:
    that names the method, not a task.)"""
    kinds = set(registry.kinds())
    tasks = set(BUILTIN) | {"sae_interp"}
    task_words = re.compile(r"\b(" + "|".join(sorted(tasks)) + r")\b")
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        inside = path.relative_to(PACKAGE).parts
        if inside[0] == "tasks" or path.name == "registry.py":
            continue
        dispatching = inside[0] in ("harness", "reports") or path.name == "cli.py"
        found += [
            f"{path.relative_to(REPO)}:{line} {text!r}"
            for line, text in _non_doc_strings(path)
            if (dispatching and text in kinds) or task_words.search(text)
        ]
    assert not found, "task kinds named outside tasks/ and registry.py: " + "; ".join(found)


def test_files_and_functions_stay_readable():
    """About 400 lines a file, 60 a function (STYLE: split by role, not by line count)."""
    too_long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text()
        if len(text.splitlines()) > 400:
            too_long.append(f"{path.relative_to(REPO)}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if (
                isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
                and node.end_lineno - node.lineno + 1 > 60
            ):
                too_long.append(
                    f"{path.relative_to(REPO)}:{node.lineno} {node.name}: "
                    f"{node.end_lineno - node.lineno + 1} lines"
                )
    assert not too_long, too_long


def test_stages_sharing_a_key_agree_on_its_default():
    for kind in registry.kinds().values():
        seen: dict = {}
        for stage in kind.settings.stages().values():
            for key, value in stage().as_dict().items():
                assert seen.setdefault(key, value) == value, (kind.name, key)


def test_a_kind_declares_its_handler_and_a_headline_among_its_metrics():
    from sae_interp_tasks.aggregations import nanmean
    from sae_interp_tasks.config import Settings
    from sae_interp_tasks.errors import SaeInterpError
    from sae_interp_tasks.harness.serve import serve_latents
    from sae_interp_tasks.harness.task import SAETask
    from sae_interp_tasks.reports.spec import ReportSpec

    with pytest.raises(SaeInterpError, match="task kind 'orphan' .*needs serve="):

        @registry.task_kind(
            "orphan", settings=Settings, serve=None, report=ReportSpec(headline="x")
        )
        class Orphan(SAETask):
            METRICS = {"x": (nanmean, True)}

    with pytest.raises(
        SaeInterpError, match="task kind 'typo': headline 'acuracy' is not one of its METRICS"
    ):

        @registry.task_kind(
            "typo", settings=Settings, serve=serve_latents, report=ReportSpec(headline="acuracy")
        )
        class Typo(SAETask):
            METRICS = {"accuracy": (nanmean, True)}

    assert "orphan" not in registry.kinds() and "typo" not in registry.kinds()


def test_a_key_is_checked_by_the_kind_that_declares_it_whichever_task_reads_it():
    from sae_interp_tasks.errors import SaeInterpError

    with pytest.raises(
        SaeInterpError, match="setting shuffled_control='maybe' should be a boolean"
    ):
        # a key of the LLM scorer's stage
        registry.settings_for("embedding", {"shuffled_control": "maybe"})
    with pytest.raises(
        SaeInterpError, match="target_kl must be a positive number or a list of them, got -1"
    ):
        registry.settings_for("core", {"target_kl": -1})
    assert registry.settings_for("embedding", {"shuffled_control": "no"})  # a good value passes


# ------------------------------------------------------------------------------------ packaging
def _yaml(path: Path) -> dict:
    import yaml

    from sae_interp_tasks.harness.task import _YamlLoader

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
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-index",
            "--target",
            str(target),
            str(wheel),
        ],
        check=True,
        capture_output=True,
    )
    code = "import sae_interp_tasks._lm_eval_hook as h; print(h.TASK_DIR)"
    proc = subprocess.run(
        [sys.executable, "-S", "-c", code],
        env={"PYTHONPATH": str(target)},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    assert Path(proc.stdout.strip()) == target / "sae_interp_tasks" / "task_configs"
    # and the source checkout (editable install) finds the top-level folder
    import sae_interp_tasks._lm_eval_hook as hook

    assert Path(hook.TASK_DIR) == TASK_DIR


def test_the_pinned_lm_eval_has_what_the_hook_patches():
    import importlib.metadata

    from packaging.specifiers import SpecifierSet

    requirement = next(
        r for r in importlib.metadata.requires("sae-interp-tasks") if r.startswith("lm-eval")
    )
    pinned = SpecifierSet(requirement.removeprefix("lm-eval"))
    assert importlib.metadata.version("lm_eval") in pinned and "0.5.0" not in pinned
    import inspect

    from lm_eval.api.registry import model_registry
    from lm_eval.tasks import TaskManager

    assert "include_path" in inspect.signature(TaskManager.__init__).parameters
    assert model_registry.get("sae") is not None
    # what the hook patches in, and the lm-eval internals the Task glue writes, exist in this
    # version
    import dataclasses

    import lm_eval.evaluator_utils as evaluator_utils
    from lm_eval.api.model import LM
    from lm_eval.api.task import Task, TaskConfig

    from sae_interp_tasks.aggregations import nanmean

    assert getattr(evaluator_utils.stderr_for_metric, "_sae_interp", False)
    # closed form, not a bootstrap
    assert evaluator_utils.stderr_for_metric(nanmean, 100000) is nanmean.stderr
    assert callable(getattr(LM, "interpret", None))  # the one-line error for other backends
    assert {"task", "metadata", "output_type"} <= {f.name for f in dataclasses.fields(TaskConfig)}
    assert "config" in inspect.signature(Task.__init__).parameters
    task = registry.lookup("detection").task_class(config={"task": "sae_detection", "metadata": {}})
    assert (
        task.config.output_type == "interpret" and task.config.metadata["task_kind"] == "detection"
    )


# ------------------------------------------------------------------------------------ adding a task
TOY_MODULE = '''
"""A toy task kind, written the way README's "Adding a task" says: a scorer, a Task class,
a YAML."""
from dataclasses import dataclass, field

from sae_interp_tasks.aggregations import Pooled, nanmean
from sae_interp_tasks.config import StageConfig, positive
from sae_interp_tasks.harness.run_stages import LatentRun, LatentSettings
from sae_interp_tasks.harness.serve import serve_latents
from sae_interp_tasks.harness.task import LatentTask
from sae_interp_tasks.records import ScoredLatent
from sae_interp_tasks.registry import ReportSpec, task_kind


@dataclass(frozen=True)
class ToyConfig(StageConfig):
    toy_top_tokens: int = positive(1)  # how many of the explanation's quoted tokens count


@dataclass(frozen=True)
class ToySettings(LatentSettings):
    toy: ToyConfig = field(default_factory=ToyConfig)


def score_toy(run: LatentRun):
    """Hit rate: the share of test windows holding a token the explanation quotes, activating vs
    not; pooled over latents, the hits over all activating windows."""
    out = {}
    for lat in run.owned:
        split, quoted = run.splits[lat], run.explanations[lat].text.split('"')[1::2]
        quoted = quoted[:run.settings.toy.toy_top_tokens]
        hit = lambda ex: any(q in run.decode(ex.tokens.tolist()) for q in quoted)
        on, off = sum(map(hit, split.test_activating)), sum(map(hit, split.test_non_activating))
        metrics = {
            "hit_rate": on / len(split.test_activating),
            "false_hit_rate": off / len(split.test_non_activating),
        }
        stats = {"hits": on, "windows": len(split.test_activating)}
        out[lat] = ScoredLatent(
            lat, run.explanations[lat].text, [], metrics, {"quoted": quoted}, stats=stats
        )
    return out


@task_kind("toy", settings=ToySettings, serve=serve_latents, scorer=score_toy,
           report=ReportSpec(headline="hit_rate", extra=("false_hit_rate", "pooled_hit_rate")))
class ToyTask(LatentTask):
    METRICS = {"hit_rate": (nanmean, True), "false_hit_rate": (nanmean, False),
               "pooled_hit_rate": (Pooled("sum(hits) / sum(windows)"), True)}
'''

TOY_YAML = """
include: {template}
task: sae_toy
class: !function toy_task.ToyTask
metadata:
  version: 1.0
  explainer: tokens
  toy_top_tokens: 1
"""

BAD_KIND_MODULE = """
from sae_interp_tasks.harness.task import LatentTask


class Undeclared(LatentTask):
    KIND = "undeclared"
    METRICS = {}
"""


@pytest.fixture(scope="module")
def toy_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("toy_tasks")
    (folder / "toy_task.py").write_text(textwrap.dedent(TOY_MODULE))
    (folder / "sae_toy.yaml").write_text(TOY_YAML.format(template=TASK_DIR / "_sae_latents_yaml"))
    (folder / "undeclared_task.py").write_text(BAD_KIND_MODULE)
    (folder / "sae_undeclared.yaml").write_text(
        "task: sae_undeclared\nclass: !function undeclared_task.Undeclared\n"
    )
    return folder


TINY_LATENTS = {**SMALL_PASS, "latents": [0, 1]}


@pytest.mark.slow  # runs lm_eval end to end
def test_a_new_task_kind_runs_through_lm_eval(
    planted_sae, corpus_file, toy_dir, sae_cache, tmp_path
):
    """A new latent kind with an extra column and a pooled metric reaches lm_eval, the leaderboard
    in every format and compare, from its own folder (its scorer, its Task class and its YAML):
    nothing else changes."""
    meta = {"corpus": str(corpus_file), **TINY_LATENTS}
    proc = run_lm_eval(
        [
            "--model",
            "sae",
            "--model_args",
            f"path={planted_sae.path},device=cpu,batch_size=8",
            "--tasks",
            "sae_toy",
            "--include_path",
            str(toy_dir),
            "--metadata",
            json.dumps(meta),
            "--log_samples",
            "--output_path",
            str(tmp_path / "run"),
        ],
        sae_cache,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (path,) = result_files(tmp_path / "run")
    results = json.loads(path.read_text())
    got = results["results"]["sae_toy"]
    # the planted latents fire exactly on " cat" / " dog", and the token explainer quotes that token
    assert (
        got["hit_rate,none"] == 1.0
        and got["false_hit_rate,none"] == 0.0
        and got["pooled_hit_rate,none"] == 1.0
    )
    assert got["skipped_dead,none"] == 0
    meta_used = results["configs"]["sae_toy"]["metadata"]
    assert meta_used["toy_top_tokens"] == 1 and meta_used["n_train"] == 10
    # from the included template
    assert meta_used["embedding_model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert meta_used["task_kind"] == "toy" and meta_used["headline_metric"] == "hit_rate"
    assert meta_used["report"]["pooled"] == {"pooled_hit_rate": "sum(hits) / sum(windows)"}
    # only what the toy kind reads
    assert "scorer" not in meta_used and "chunk_contexts" not in meta_used
    rows = samples(tmp_path / "run", "sae_toy")
    assert [r["response"]["latent"] for r in rows] == [0, 1]
    assert rows[0]["response"]["scorer"]["quoted"] == [" cat"]
    stats = rows[0]["response"]["stats"]
    assert set(stats) == {"hits", "windows"} and stats["hits"] == stats["windows"] > 0
    # the leaderboard shows the new kind's columns in every format, with no change to the CLI
    boards = {
        fmt: subprocess.run(
            [
                sys.executable,
                "-m",
                "sae_interp_tasks.cli",
                "leaderboard",
                str(tmp_path / "run"),
                "--format",
                fmt,
            ],
            capture_output=True,
            text=True,
        )
        for fmt in ("markdown", "csv", "json", "html")
    }
    for fmt, board in boards.items():
        assert board.returncode == 0, (fmt, board.stderr)
    for metric in ("hit_rate", "false_hit_rate", "pooled_hit_rate"):
        assert (
            f"sae_toy {metric}" in boards["markdown"].stdout
            and f"sae_toy {metric}" in boards["html"].stdout
        )
        assert f"sae_toy/{metric}" in boards["csv"].stdout.splitlines()[0]
    cells = json.loads(boards["json"].stdout)["groups"][0]["rows"][0]["tasks"]["sae_toy"]["metrics"]
    assert set(cells) == {"hit_rate", "false_hit_rate", "pooled_hit_rate"}
    assert (
        cells["pooled_hit_rate"]["value"] == 1.0
        and cells["pooled_hit_rate"]["interval"] == "bootstrap"
    )
    # compare gates on the headline and on the pooled metric, recomputed from the samples' stats
    gate = subprocess.run(
        [
            sys.executable,
            "-m",
            "sae_interp_tasks.cli",
            "compare",
            str(tmp_path / "run"),
            str(tmp_path / "run"),
            "--metrics",
            "sae_toy/hit_rate,sae_toy/pooled_hit_rate",
        ],
        capture_output=True,
        text=True,
    )
    assert gate.returncode == 0, gate.stderr
    assert "sae_toy/pooled_hit_rate" in gate.stdout and "paired by latent" in gate.stdout


# ------------------------------------------------------------------------------------ instrument
# defaults an SAE brings
@pytest.mark.slow  # runs lm_eval end to end
def test_an_sae_brings_its_own_instrument_defaults(planted_sae, corpus_file, sae_cache, tmp_path):
    """A folder SAE whose sae_lens metadata holds sae_interp_defaults: they replace the YAML's
    values for keys the user did not set, a warning line says so and how to restore them, and the
    results record it; a key the user sets wins, and a default equal to the YAML's is not
    mentioned."""
    import shutil

    sae_dir = shutil.copytree(planted_sae.path, tmp_path / "sae_with_defaults")
    cfg_path = sae_dir / "cfg.json"
    cfg = json.loads(cfg_path.read_text())
    # n_latents differs from the YAML's 64; non_activating and n_deciles equal the YAML's and the
    # settings' own
    cfg.setdefault("metadata", {})["sae_interp_defaults"] = {
        "n_latents": 2,
        "non_activating": "random",
        "n_deciles": 10,
    }
    cfg_path.write_text(json.dumps(cfg))
    meta = {k: v for k, v in TINY_LATENTS.items() if k != "latents"}
    meta.update(corpus=str(corpus_file), explainer="tokens")

    def lm_eval(extra: dict, out: Path):
        proc = run_lm_eval(
            [
                "--model",
                "sae",
                "--model_args",
                f"path={sae_dir},device=cpu,batch_size=8",
                "--tasks",
                "sae_embedding",
                "--metadata",
                json.dumps({**meta, **extra}),
                "--output_path",
                str(out),
            ],
            sae_cache,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        (path,) = result_files(out)
        return proc, json.loads(path.read_text())

    proc, results = lm_eval({}, tmp_path / "sae_defaults")
    (line,) = {
        ln for ln in proc.stderr.replace("\r", "\n").splitlines() if "instrument defaults" in ln
    }
    assert line.endswith(
        f'sae_embedding: the SAE {sae_dir} sets its own instrument defaults {{"n_latents": 2}} '
        '(the task\'s are {"n_latents": 64}); for a full evaluation pass --metadata '
        "'{\"n_latents\": 64}'"
    ), line
    used = results["configs"]["sae_embedding"]["metadata"]
    assert used["n_latents"] == 2 and used["instrument_defaults_from"] == str(sae_dir)
    assert results["n-samples"]["sae_embedding"]["effective"] == 2

    proc, results = lm_eval({"n_latents": 3}, tmp_path / "user_set")
    assert "instrument defaults" not in proc.stderr
    used = results["configs"]["sae_embedding"]["metadata"]
    assert used["n_latents"] == 3 and "instrument_defaults_from" not in used
    assert results["n-samples"]["sae_embedding"]["effective"] == 3


# ------------------------------------------------------------------------------------ bad task
# input, end to end
@pytest.mark.parametrize(
    "extra,expected",
    [
        (
            ["--include_path", "{toy_dir}", "--tasks", "sae_undeclared"],
            "error: unknown task kind 'undeclared'",
        ),
        (
            ["--tasks", "sae_detection", "--metadata", json.dumps({"constrained": "maybe"})],
            "error: setting constrained='maybe' should be a boolean: true or false",
        ),
        (
            ["--tasks", "sae_detection", "--metadata", json.dumps({"n_latents": -4})],
            "error: setting n_latents=-4 must be at least 1",
        ),
        (
            ["--tasks", "sae_fuzzing", "--metadata", json.dumps({"train_sampling": "best"})],
            "error: setting train_sampling='best' is not valid; choose from: deciles, top, random",
        ),
    ],
)
def test_bad_task_input_fails_before_any_model_loads(
    extra, expected, planted_sae, toy_dir, sae_cache, tmp_path
):
    args = [
        "--model",
        "sae",
        "--model_args",
        f"path={planted_sae.path},device=cpu",
        *[a.replace("{toy_dir}", str(toy_dir)) for a in extra],
        "--output_path",
        str(tmp_path),
    ]
    proc = run_lm_eval(args, sae_cache)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    (line,) = error_lines(proc.stderr)
    assert line.startswith(expected), line
    assert "sae backend: loading" not in proc.stderr  # failed at task-load time
    assert not result_files(tmp_path)


def test_these_tasks_with_another_backend_say_they_need_model_sae(
    tiny_model_dir, sae_cache, tmp_path
):
    proc = run_lm_eval(
        [
            "--model",
            "hf",
            "--model_args",
            f"pretrained={tiny_model_dir}",
            "--tasks",
            "sae_detection",
            "--limit",
            "1",
            "--output_path",
            str(tmp_path),
        ],
        sae_cache,
    )
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    (line,) = error_lines(proc.stderr)
    assert line.startswith(
        "error: sae_detection needs --model sae (the SAE under evaluation), not --model"
    ), line
    assert not result_files(tmp_path)


# ------------------------------------------------------------------------------- house rules
def test_the_report_snapshot_equals_the_declarations():
    """Older results files are reported through reports/report_snapshot.json (so the readers never
    import the task modules); it must say what the kinds declare now."""
    from sae_interp_tasks.reports import spec

    snapshot = json.loads((Path(spec.__file__).parent / spec.SNAPSHOT).read_text())
    assert snapshot == json.loads(json.dumps(registry.report_snapshot())), (
        "the built-in kinds changed: run python scripts/write_report_snapshot.py"
    )


# a suppression comment names its rule codes, then says why in words
# (the patterns are split at "#" so that this file's own lines do not match them)
NOQA_WITH_REASON = re.compile("#" + r" noqa: [A-Z]+\d+(, ?[A-Z]+\d+)*\s+\(?\w")
NOQA = re.compile("#" + r"\s*noqa\b")


def test_every_noqa_names_its_rule_and_says_why():
    files = [
        p
        for folder in ("sae_interp_tasks", "tests", "benchmarks", "scripts")
        for p in (REPO / folder).rglob("*.py")
    ]
    bare = [
        f"{p.relative_to(REPO)}:{n}"
        for p in files
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if NOQA.search(line) and not NOQA_WITH_REASON.search(line)
    ]
    assert not bare, bare


def test_a_task_parses_its_settings_once_and_its_requests_carry_them(monkeypatch):
    """The Task parses its metadata into typed settings when it is built; each request carries
    those settings (no re-parse per doc), travels through lm-eval as its JSON text, and survives
    pickling (a launcher's gather) with its typed record."""
    import pickle

    from sae_interp_tasks.harness.request import InterpretRequest, WireRequest, read_request
    from sae_interp_tasks.tasks.detection import SAEDetectionTask

    task = SAEDetectionTask(config={"task": "sae_detection", "metadata": {"n_latents": 3}})
    monkeypatch.setattr(
        registry, "settings_for", lambda *a, **k: pytest.fail("settings parsed again")
    )
    wires = [task.construct_requests(doc, None).arguments[0] for doc in task.test_docs()]
    assert all(isinstance(w, WireRequest) for w in wires) and len(wires) == 3
    typed = [read_request(w) for w in wires]
    assert all(r.settings is task.settings for r in typed)
    assert [r.slot for r in typed] == [0, 1, 2]
    text = json.loads(wires[1])  # what lm-eval hashes and --log_samples records
    assert text["kind"] == "detection" and text["doc"] == {"slot": 1}
    assert text["settings"]["n_latents"] == 3
    again = pickle.loads(pickle.dumps(wires[1]))
    assert again == wires[1] and again.request == typed[1]
    monkeypatch.undo()
    parsed = InterpretRequest.from_json(str(wires[1]))  # a plain JSON string is parsed once
    assert parsed == typed[1] and parsed.settings == task.settings
