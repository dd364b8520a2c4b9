"""Known answers: an SAE whose latents are probes for planted meanings (validity.known_answers),
scored through lm_eval, recovers them; the oracle scorer (validity.oracle) scores them perfectly
and its shuffled controls stay at chance; and every scorer takes its known-answer check, which the
oracle passes and a scorer that says yes to everything fails, marked by the leaderboard and never
gated on by compare."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from helpers import SMALL_PASS, result_files, run_lm_eval, samples
from sae_interp_tasks.validity import known_answers as ka
from sae_interp_tasks.validity import scorer_check


def test_an_explanation_names_a_meaning_by_its_words_not_by_parts_of_words():
    return_latent = ka.token_meaning(" return")
    assert ka.names_meaning('the token " return"', return_latent)
    assert ka.names_meaning("return statements in functions", return_latent)
    assert not ka.names_meaning("the word returned", return_latent)
    assert ka.names_meaning('the tokens "0", "2", "7"', ka.DIGITS) and ka.names_meaning(
        "numbers", ka.DIGITS
    )
    assert ka.names_meaning("Python keywords", ka.KEYWORDS) and not ka.names_meaning(
        'the word "this"', ka.KEYWORDS
    )
    assert ka.names_meaning('the tokens "(", ")"', ka.BRACKETS)


def test_pieces_are_labelled_by_their_meaning():
    pieces = [
        "def",
        " f",
        "(",
        "x",
        "):",
        "\n",
        "    ",
        "return",
        " 42",
        " if",
        " x",
        " else",
        " None",
    ]
    labels = ka.label_pieces(pieces, (ka.token_meaning(" if"), ka.DIGITS, ka.KEYWORDS, ka.BRACKETS))
    assert labels[:, 0].tolist() == [p == " if" for p in pieces]
    assert labels[:, 1].tolist() == [p == " 42" for p in pieces]
    assert [p for p, k in zip(pieces, labels[:, 2], strict=True) if k] == [
        "def",
        "return",
        " if",
        " else",
        " None",
    ]
    # "):" holds a colon too
    assert [p for p, b in zip(pieces, labels[:, 3], strict=True) if b] == ["("]


@pytest.fixture(scope="module")
def known_sae(tmp_path_factory, sae_cache):
    """The small suite (three tokens and digits) for the bundled model, probes trained on 32k
    tokens."""
    out = tmp_path_factory.mktemp("known_answers")
    probes = ka.build(out, ka.SMALL, n_tokens=32_768)
    return out, probes


SUITE = {
    "explainer": "tokens",
    "n_tokens": 65_536,
    "scorer": "oracle",
    "surprisal_scorer": "oracle",
    # the suite has 4 latents: the intruder's control needs intruder_windows other latents
    "intruder_windows": 3,
}


@pytest.mark.slow
def test_the_known_answer_suite_recovers_every_planted_meaning(known_sae, sae_cache, tmp_path):
    folder, probes = known_sae
    assert all(p.precision >= 0.9 and p.recall >= 0.9 for p in probes), [
        (p.precision, p.recall) for p in probes
    ]
    answers = ka.load_answers(folder)
    assert (
        len(answers) == 4
        and json.loads((folder / "cfg.json").read_text())["metadata"]["hook_name"] == ka.HOOK_NAME
    )
    meta = {**SUITE, "scorer_model": str(folder), "surprisal_model": str(folder)}
    tasks = "sae_embedding,sae_detection,sae_fuzzing,sae_simulation,sae_surprisal,sae_intruder"
    proc = run_lm_eval(
        [
            "--model",
            "sae",
            "--model_args",
            f"path={folder},device=cpu",
            "--tasks",
            tasks,
            "--metadata",
            json.dumps(meta),
            "--log_samples",
            "--output_path",
            str(tmp_path),
        ],
        sae_cache,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (path,) = result_files(tmp_path)
    got = json.loads(path.read_text())["results"]
    # the token-list explainer names every planted meaning; the SAE brought its own n_latents (all 4
    # latents)
    rows = samples(tmp_path, "sae_embedding")
    assert sorted(r["response"]["latent"] for r in rows) == [0, 1, 2, 3]
    assert all(
        ka.names_meaning(r["response"]["explanation"], answers[r["response"]["latent"]])
        for r in rows
    )
    assert got["sae_embedding"]["auroc,none"] >= 0.75
    for task, metric, best in (
        ("sae_detection", "balanced_acc", 0.95),
        ("sae_fuzzing", "balanced_acc", 0.95),
        ("sae_surprisal", "auroc", 0.95),
        ("sae_simulation", "correlation", 0.9),
        ("sae_intruder", "accuracy", 0.95),
    ):
        assert got[task][f"{metric},none"] >= best, (task, got[task])
        chance = {"correlation": 0.0, "accuracy": 1 / 3}.get(metric, 0.5)
        assert abs(got[task][f"{metric}_shuffled,none"] - chance) <= 0.15, (task, got[task])
        assert got[task]["scorer_check_passed,none"] == 1.0, (task, got[task])
    assert got["sae_intruder"]["accuracy_chance,none"] == pytest.approx(1 / 3)
    assert "failed its known-answer check" not in proc.stderr


# ------------------------------------------------------------------------------------ the scorer
# check
def windows_with_words(tokenizer) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    vocab = [
        tokenizer.encode(w, add_special_tokens=False)[0]
        for w in (" apple", " river", " stone", " cloud", " table", " green", " seven", " house")
    ]
    return [rng.choice(vocab, size=16) for _ in range(60)]


def test_the_check_set_is_frequent_words_in_and_out_of_windows(tokenizer):
    windows = windows_with_words(tokenizer)
    splits, explanations = scorer_check.build_check_set(
        windows, tokenizer.decode, scorer_check.CheckConfig(), seed=3
    )
    assert len(splits) == 4 and len({e.text for e in explanations.values()}) == 4
    for split in splits:
        word = explanations[split.latent].text.split('"')[1]
        assert len(split.test_activating) == len(split.test_non_activating) == 5
        for ex in split.test_activating:  # marked exactly where the word is
            assert [tokenizer.decode([t]).strip() == word for t in ex.tokens.tolist()] == (
                ex.acts > 0
            ).tolist()
        assert all(
            word not in tokenizer.decode(ex.tokens.tolist()) for ex in split.test_non_activating
        )
    again = scorer_check.build_check_set(
        windows, tokenizer.decode, scorer_check.CheckConfig(), seed=3
    )
    assert [e.text for e in again[1].values()] == [e.text for e in explanations.values()]  # seeded


def test_a_scorer_that_says_yes_to_everything_fails_and_a_right_one_passes():
    from sae_interp_tasks.records import WindowJudgement

    truth = [True] * 20 + [False] * 20
    yes = [WindowJudgement(label=t, prediction=True) for t in truth]
    right = [WindowJudgement(label=t, prediction=t) for t in truth]
    failed = scorer_check.balanced_accuracy(yes, "scorer_check_balanced_acc")
    passed = scorer_check.balanced_accuracy(right, "scorer_check_balanced_acc")
    assert (
        failed.value == 0.5 and not failed.passed and failed.metrics()["scorer_check_passed"] == 0.0
    )
    assert passed.value == 1.0 and passed.passed and passed.lo > 0.5
    assert scorer_check.auroc(truth, [0.5] * 40, "x").passed is False
    assert scorer_check.auroc(truth, [float(t) for t in truth], "x").passed is True
    assert (
        scorer_check.mean_gain([0.2, 0.3, 0.25, 0.31], "g").passed
        and not scorer_check.mean_gain([0.1, -0.1], "g").passed
    )


@pytest.mark.slow
def test_a_failed_check_is_marked_in_the_leaderboard_and_never_gated(
    planted_sae, tiny_model_dir, corpus_file, sae_cache, tmp_path
):
    """The tiny model as scorer fails its check: the run warns in one line, the results record it,
    every leaderboard format marks the task's numbers, and compare reports them not gated and exits
    2."""
    meta = {
        **SMALL_PASS,
        "corpus": str(corpus_file),
        "latents": [0, 1],
        "explainer": "tokens",
        "scorer_model": str(tiny_model_dir),
        "scorer_max_tokens": 8,
        "scorer_check_windows": 3,
    }
    proc = run_lm_eval(
        [
            "--model",
            "sae",
            "--model_args",
            f"path={planted_sae.path},device=cpu",
            "--tasks",
            "sae_detection",
            "--metadata",
            json.dumps(meta),
            "--log_samples",
            "--output_path",
            str(tmp_path / "run"),
        ],
        sae_cache,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (warning,) = [ln for ln in proc.stderr.splitlines() if "failed its known-answer check" in ln]
    assert "sae_detection: the scorer hf:" in warning and "use a capable scorer" in warning
    got = json.loads(result_files(tmp_path / "run")[0].read_text())["results"]["sae_detection"]
    assert got["scorer_check_passed,none"] == 0.0 and "scorer_check_balanced_acc_stderr,none" in got

    def cli(*args):
        return subprocess.run(
            [sys.executable, "-m", "sae_interp_tasks.cli", *args], capture_output=True, text=True
        )

    board = cli("leaderboard", str(tmp_path / "run"))
    assert (
        board.returncode == 0
        and "†" in board.stdout
        and "failed its known-answer check" in board.stdout
    )
    data = json.loads(cli("leaderboard", str(tmp_path / "run"), "--format", "json").stdout)
    cell = data["groups"][0]["rows"][0]["tasks"]["sae_detection"]["metrics"]["balanced_acc"]
    assert cell["scorer_check"] == "failed" and cell["scorer_check_detail"].startswith(
        "scorer_check_balanced_acc"
    )
    assert (
        "sae_detection/balanced_acc_scorer_check"
        in cli("leaderboard", str(tmp_path / "run"), "--format", "csv").stdout.splitlines()[0]
    )
    gate = cli("compare", str(tmp_path / "run"), str(tmp_path / "run"))
    assert gate.returncode == 2, gate.stdout + gate.stderr
    assert "not gated: the baseline's scorer failed its known-answer check" in gate.stdout
    assert (
        gate.stderr.startswith("NOTHING GATED") and "failed its known-answer check" in gate.stderr
    )
