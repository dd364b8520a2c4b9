"""Helpers shared by the test modules: running the real `lm_eval` console script, reading its
output, and an oracle that reads detection/fuzzing prompts and answers them correctly."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import REPO, subprocess_env


# --- the lm_eval console script -------------------------------------------------------------------
def lm_eval_script() -> str:
    local = Path(sys.executable).parent / "lm_eval"  # the venv's console script
    found = str(local) if local.exists() else shutil.which("lm_eval")
    assert found, "the lm_eval console script is not installed"
    return found


# lm_eval's own entry point in a fresh process, with lm-eval's ~14k built-in task YAMLs left out of the
# task index (indexing them costs 10-25 s a run here); everything else is the console script's path
FAST_DRIVER = """
import sys
import lm_eval.tasks.manager as manager
from lm_eval.__main__ import cli_evaluate

original = manager.TaskManager.__init__
def without_builtin_tasks(self, *args, **kwargs):
    original(self, *args, **{**kwargs, "include_defaults": False})
manager.TaskManager.__init__ = without_builtin_tasks
sys.argv = ["lm_eval", *sys.argv[1:]]
cli_evaluate()
"""


def run_lm_eval(args: list[str], cache: Path, timeout: int = 400, console: bool = False,
                **env: str) -> subprocess.CompletedProcess:
    """`lm_eval ARGS` in a subprocess: the installed console script itself with `console=True`, else
    lm_eval's entry point without lm-eval's built-in tasks (this package's tasks and --include_path only)."""
    command = [lm_eval_script()] if console else [sys.executable, "-c", FAST_DRIVER]
    # DISABLE_MULTIPROC: lm-eval bootstraps each nanmean metric's stderr (100k draws) in a fresh
    # process pool per metric; in-process it takes ~1 s per metric instead of ~1.7 s here
    return subprocess.run([*command, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          env={**subprocess_env(cache), "DISABLE_MULTIPROC": "1", **env})


def run_python(code: str, cache: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, env=subprocess_env(cache), capture_output=True,
                          text=True, timeout=120)


def result_files(folder: Path) -> list[Path]:
    return sorted(folder.rglob("results_*.json"))


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def samples(out: Path, task: str, key: str = "slot") -> list[dict]:
    """The task's samples file rows, each with its parsed `response` (our Response's str is JSON)."""
    (path,) = out.rglob(f"samples_{task}_*.jsonl")
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    for row in rows:
        row["response"] = json.loads(row["resps"][0][0])
    return sorted(rows, key=lambda r: r["doc"][key])


# --- an oracle scorer ------------------------------------------------------------------------------
def read_scorer_prompt(system: str, user: str) -> tuple[str, list[str], bool]:
    """(explanation, example texts, is_fuzzing) from the messages of a classifier.scorer_prompt."""
    explanation = re.match(r"Explanation: (.*)\n\n", user).group(1)
    body = user.split("\n\n", 1)[1].rsplit("\n\nYour list of", 1)[0]
    examples = re.split(r"(?:^|\n)Example \d+: ", body)[1:]
    n = int(re.search(r"Your list of (\d+) numbers", user).group(1))
    assert len(examples) == n, (n, examples)
    return explanation, examples, "marked <<like this>>" in system


def mentions(text: str, explanation: str) -> bool:
    """Does the text hold what the explanation names: its quoted tokens ('the token " cat"') if it
    quotes any, else its last word ("the word cat") as a whole word."""
    quoted = re.findall(r'"([^"]+)"', explanation)
    if quoted:
        return any(q in text for q in quoted)
    return re.search(rf"\b{re.escape(explanation.split()[-1])}\b", text) is not None


def verdicts(system: str, user: str) -> list[bool]:
    """An ideal scorer: detection asks whether the example holds what the explanation names,
    fuzzing whether the marked tokens do."""
    explanation, examples, fuzzing = read_scorer_prompt(system, user)
    if fuzzing:
        return [any(mentions(m, explanation) for m in re.findall(r"<<(.*?)>>", text)) for text in examples]
    return [mentions(text, explanation) for text in examples]
