"""Methods side by side (reports/agreement.py): rank correlations of latent tasks' per-latent
scores, from committed runs of the known-answer suite (the oracle scorer on 19 planted latents,
sae_embedding in a second file of the same SAE)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sae_interp_tasks.reports import agreement
from sae_interp_tasks.reports.inputs import read_inputs

RUNS = Path(__file__).parents[1] / "benchmarks" / "results" / "known_answers"
ORACLE, EMBEDDING = RUNS / "tokens_oracle", RUNS / "tokens_embedding"


def test_spearman_on_known_orders():
    x = np.arange(10.0)
    assert agreement.spearman(x, x**3) == pytest.approx(1.0)
    assert agreement.spearman(x, -x) == pytest.approx(-1.0)
    assert np.isnan(agreement.spearman(x, np.ones(10)))  # a constant side ranks nothing


def test_every_pair_of_one_sae_s_latent_tasks_across_its_files():
    pairs = agreement.method_pairs(read_inputs([str(ORACLE), str(EMBEDDING)]), resamples=200)
    names = {(p.a.split()[0], p.b.split()[0]) for p in pairs}
    # five tasks of one SAE from two files: every pair once, over its 19 latents
    assert len(pairs) == 10 and all(p.n == 19 for p in pairs)
    assert ("sae_detection", "sae_embedding") in names
    for p in pairs:
        assert -1.0 <= p.low <= p.high <= 1.0 and not p.unchecked
    by = {(p.a.split()[0], p.b.split()[0]): p for p in pairs}
    # the oracle's detection and surprisal both read the planted answers: they rank alike
    assert by[("sae_detection", "sae_surprisal")].rho > 0.9


@pytest.mark.slow  # matplotlib pages
def test_the_leaderboard_shows_methods_side_by_side(tmp_path):
    def cli(*args):
        return subprocess.run(
            [sys.executable, "-m", "sae_interp_tasks.cli", "leaderboard", *args],
            capture_output=True,
            text=True,
        )

    md = cli(str(ORACLE), str(EMBEDDING))
    assert md.returncode == 0, md.stderr
    assert "## Methods side by side" in md.stdout and "| sae_detection balanced_acc |" in md.stdout
    page = cli(
        str(ORACLE),
        str(EMBEDDING),
        "--format",
        "html",
        "--scatter",
        "sae_detection,sae_embedding",
        "--plots",
        str(tmp_path / "plots"),
    )
    assert page.returncode == 0, page.stderr
    assert "<h2>Methods side by side</h2>" in page.stdout
    for name in ("methods_0.png", "methods_scatter.png"):
        assert (tmp_path / "plots" / name).read_bytes()[:4] == b"\x89PNG"
    bad = cli(str(ORACLE), "--scatter", "sae_detection,sae_nothing")
    assert bad.returncode == 2 and "no SAE has per-latent scores of both" in bad.stderr
