"""Helpers shared by the test modules: running the real `lm_eval` console script, reading its
output, and an oracle that reads detection/fuzzing prompts and answers them correctly."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from conftest import REPO, subprocess_env


# --- the lm_eval console script -------------------------------------------------------------------
def lm_eval_script() -> str:
    local = Path(sys.executable).parent / "lm_eval"  # the venv's console script
    found = str(local) if local.exists() else shutil.which("lm_eval")
    assert found, "the lm_eval console script is not installed"
    return found


# Python that patches lm-eval's TaskManager to leave its ~14k built-in task YAMLs out of the task
# index (indexing them costs 10-25 s a run here); only this package's tasks run, so the results
# files are what the console script writes
WITHOUT_BUILTIN_TASKS = """
import json, sys
import lm_eval.tasks.manager as manager
from lm_eval.__main__ import cli_evaluate

original = manager.TaskManager.__init__
def without_builtin_tasks(self, *args, **kwargs):
    original(self, *args, **{**kwargs, "include_defaults": False})
manager.TaskManager.__init__ = without_builtin_tasks
"""
# lm_eval's own entry point in a fresh process, the built-in tasks left out
FAST_DRIVER = (
    WITHOUT_BUILTIN_TASKS
    + """
sys.argv = ["lm_eval", *sys.argv[1:]]
cli_evaluate()
"""
)


def run_lm_eval(
    args: list[str], cache: Path, timeout: int = 400, console: bool = False, **env: str
) -> subprocess.CompletedProcess:
    """`lm_eval ARGS` in a subprocess: the installed console script itself with `console=True`, else
    lm_eval's entry point without lm-eval's built-in tasks (this package's tasks and --include_path
    only)."""
    command = [lm_eval_script()] if console else [sys.executable, "-c", FAST_DRIVER]
    # DISABLE_MULTIPROC: lm-eval bootstraps each nanmean metric's stderr (100k draws) in a fresh
    # process pool per metric; in-process it takes ~1 s per metric instead of ~1.7 s here
    return subprocess.run(
        [*command, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**subprocess_env(cache), "DISABLE_MULTIPROC": "1", **env},
    )


def sae_interp(*args, cache: Path | None = None) -> subprocess.CompletedProcess:
    """`sae-interp ARGS` in a subprocess (offline, with `cache` as its cache where given)."""
    return subprocess.run(
        [sys.executable, "-m", "sae_interp_tasks.cli", *map(str, args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env=subprocess_env(cache) if cache is not None else None,
    )


# what every hand-written SAEBench result file here says of its run and SAE
SAEBENCH_RUN = {
    "eval_id": "their-run",
    "datetime_epoch_millis": 1,
    "eval_result_details": [],
    "sae_bench_commit_hash": "abc",
    "sae_lens_release_id": "their-release",
    "sae_lens_version": "6.0",
}


SAEBENCH_PEER = REPO / ".venv" / "peers" / "sae-bench"  # scripts/setup.sh installs it, --no-deps


def saebench(*modules: str) -> list:
    """SAEBench's modules from the peer install (`evals.absorption.main`, ...); the calling test is
    skipped where the peer is not installed."""
    import importlib

    import pytest

    if not (SAEBENCH_PEER / "sae_bench").is_dir():
        pytest.skip("the sae-bench peer is not installed (bash scripts/setup.sh installs it)")
    sys.path.insert(0, str(SAEBENCH_PEER))
    try:
        return [importlib.import_module(f"sae_bench.{name}") for name in modules]
    finally:
        sys.path.remove(str(SAEBENCH_PEER))


def saebench_row(*files: Path) -> dict:
    """The leaderboard row (its JSON) of the SAEBench file among `files` (our runs beside it)."""
    board = sae_interp("leaderboard", *files, "--format", "json")
    assert board.returncode == 0, board.stderr
    rows = [r for g in json.loads(board.stdout)["groups"] for r in g["rows"]]
    return next(r for r in rows if "(SAEBench)" in r["sae"])


def run_python(code: str, cache: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env=subprocess_env(cache),
        capture_output=True,
        text=True,
        timeout=120,
    )


def result_files(folder: Path) -> list[Path]:
    return sorted(folder.rglob("results_*.json"))


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def samples(out: Path, task: str, key: str = "slot") -> list[dict]:
    """The task's samples file rows, each with its parsed `response` (our Response's str is
    JSON)."""
    (path,) = out.rglob(f"samples_{task}_*.jsonl")
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    for row in rows:
        row["response"] = json.loads(row["resps"][0][0])
    return sorted(rows, key=lambda r: r["doc"][key])


# --- an oracle scorer
# ------------------------------------------------------------------------------
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
        return [
            any(mentions(m, explanation) for m in re.findall(r"<<(.*?)>>", text))
            for text in examples
        ]
    return [mentions(text, explanation) for text in examples]


YES, NO = math.log(0.9), math.log(0.1)


def chat_completion(content: str, top: list[dict[str, float]] | None = None) -> dict:
    """A chat.completion body whose one choice says `content`, with top logprobs per token when
    given."""
    logprobs = (
        None
        if top is None
        else {
            "content": [
                {
                    "token": max(alts, key=alts.get),
                    "logprob": max(alts.values()),
                    "bytes": None,
                    "top_logprobs": [
                        {"token": t, "logprob": lp, "bytes": None} for t, lp in alts.items()
                    ],
                }
                for alts in top
            ]
        }
    )
    return {
        "id": "oracle",
        "object": "chat.completion",
        "created": 0,
        "model": "oracle",
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {"role": "assistant", "content": content},
                "logprobs": logprobs,
            }
        ],
    }


def oracle_answer(messages: list[dict]) -> dict:
    """The oracle scorer's chat answer: the right 0/1 list with logprobs; a plain "no" to anything
    else."""
    system, user = messages[0]["content"], messages[-1]["content"]
    if not user.startswith("Explanation: "):  # not a scorer prompt (e.g. a judge)
        return chat_completion("no", [{"no": 0.0}])
    said = verdicts(system, user)
    top: list[dict[str, float]] = [{"[": 0.0}]
    for i, v in enumerate(said):
        top.append({"1": YES, "0": NO} if v else {"0": YES, "1": NO})
        top.append({", " if i < len(said) - 1 else "]": 0.0})
    return chat_completion("[" + ", ".join("1" if v else "0" for v in said) + "]", top)


class JsonEndpoint:
    """An HTTP server on 127.0.0.1 answering each POST with `respond(path, body) -> (status,
    payload)` as JSON; `asked` holds every request body, `url` ends in /v1. A context manager, or
    call close()."""

    def __init__(self, respond):
        from servers import free_port

        self.asked: list[dict] = []
        asked = self.asked

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                asked.append(body)
                status, payload = respond(self.path, body)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def words(text: str) -> int:
    """The oracle endpoint's token count (an API counts with its own tokenizer; this one counts
    words)."""
    return len(text.split())


def with_usage(body: dict, answer: dict) -> dict:
    """The answer with an API's `usage`: the request's and the answer's words."""
    prompt = sum(words(m["content"]) for m in body["messages"])
    completion = words(answer["choices"][0]["message"]["content"])
    return {
        **answer,
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        },
    }


class OracleEndpoint(JsonEndpoint):
    """An OpenAI-compatible chat endpoint answering as the oracle scorer, with `usage` counted in
    words."""

    def __init__(self):
        # a chat-only API, as OpenAI's
        super().__init__(
            lambda path, body: (
                (200, with_usage(body, oracle_answer(body["messages"])))
                if path.endswith("/chat/completions")
                else (404, {"error": {"message": f"{path} not found"}})
            )
        )


# the pass and splits of the weights and explanation-file tests: seconds on the test corpus
SMALL_PASS = {
    "n_tokens": 4096,
    "context_size": 64,
    "window": 16,
    "n_top": 10,
    "n_sample": 40,
    "n_random": 64,
    "min_examples": 5,
    "n_train": 10,
    "n_test_per_decile": 1,
    "n_test_non_activating": 10,
}
