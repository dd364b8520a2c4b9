"""`sae-interp leaderboard` and `sae-interp compare` on results of the real `lm_eval`, in
subprocesses.

The subject is a tiny Llama made a bigram model of the test corpus (both layers write nothing to
the residual stream; the unembedding is solved so that the embedding of a token predicts the
corpus's next-token distribution): its clean CE loss (~1.2) is far below zero ablation (ln V ~
10.8), so CE loss recovered measures something. The conftest's random tiny model has clean CE ~
zero-ablation CE, which makes CE loss recovered noise (the ratio's denominator is ~0.02).

The SAE plants one latent on every token of the corpus (conftest's build_planted_sae), so it
reconstructs every token exactly (CE loss recovered 1, L0 1) and every latent is explained by its
token; the damaged copy adds noise to W_dec (CE loss recovered ~0.82); the control is
`control=random`. Five lm_eval runs (in one process, see `runs`): planted, damaged, control, an
identical rerun of planted (same cache and seed), and sae_core with another n_tokens.
"""

from __future__ import annotations

import base64
import csv
import gzip
import io
import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import D_MODEL, REPO, build_planted_sae, corpus_lines, subprocess_env
from helpers import WITHOUT_BUILTIN_TASKS, error_lines, result_files, sae_interp

TASKS = "sae_core,sae_embedding"
META = {
    "n_tokens": 2048,
    "context_size": 64,
    "chunk_contexts": 4,
    "window": 16,
    "n_top": 10,
    "n_sample": 40,
    "n_random": 64,
    "n_latents": 4,
    "min_examples": 5,
    "n_train": 10,
    "n_test_per_decile": 1,
    "n_test_non_activating": 10,
    "explainer": "tokens",
}
N_CHUNKS = META["n_tokens"] // (META["context_size"] * META["chunk_contexts"])
N_RANDOM_LATENTS = 4


# ------------------------------------------------------------------------------------ the subject
# and SAEs
def build_bigram_model(tokenizer, lines: list[str], out: Path) -> list[int]:
    """A 2-layer Llama whose output is a bigram model of `lines`; returns the corpus's token ids."""
    from transformers import LlamaConfig, LlamaForCausalLM

    eos = tokenizer.eos_token_id
    seqs = [[eos, *ids, eos] for ids in tokenizer(lines, add_special_tokens=False)["input_ids"]]
    vocab = sorted({t for s in seqs for t in s} | {tokenizer.bos_token_id})
    index = {t: i for i, t in enumerate(vocab)}
    counts = np.full((len(vocab), len(vocab)), 0.01)
    for s in seqs:
        for a, b in zip(s, s[1:], strict=False):
            counts[index[a], index[b]] += 1
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=D_MODEL,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=eos,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    config.architectures = ["LlamaForCausalLM"]
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        for layer in model.model.layers:  # the residual stream stays the token embedding
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        emb = model.model.embed_tokens.weight[vocab].double()
        # the final RMSNorm
        normed = emb / emb.pow(2).mean(1, keepdim=True).add(config.rms_norm_eps).sqrt()
        target = torch.full((len(vocab), len(tokenizer)), -12.0, dtype=torch.float64)
        target[:, vocab] = torch.tensor(np.log(counts / counts.sum(1, keepdims=True)))
        # exact: |vocab| < d_model
        model.lm_head.weight.copy_((torch.linalg.pinv(normed) @ target).T.float())
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return vocab


@pytest.fixture(scope="module")
def bigram(tmp_path_factory, tokenizer):
    """(model dir, embedding matrix, corpus token ids); the corpus is conftest's
    corpus_lines(3000)."""
    out = tmp_path_factory.mktemp("bigram-subject")
    vocab = build_bigram_model(tokenizer, corpus_lines(3000), out)
    from transformers import AutoModelForCausalLM

    emb = AutoModelForCausalLM.from_pretrained(out).model.embed_tokens.weight.detach().float()
    return out, emb, vocab


@pytest.fixture(scope="module")
def vocab_sae(bigram, tokenizer, tmp_path_factory) -> Path:
    """Latent i fires exactly on the i-th corpus token (BOS/EOS aside); 4 random sparse latents
    after them."""
    model_dir, emb, vocab = bigram
    tokens = [t for t in vocab if t not in (tokenizer.bos_token_id, tokenizer.eos_token_id)]
    planted = dict(enumerate(tokens))
    return build_planted_sae(
        emb,
        planted,
        len(planted) + N_RANDOM_LATENTS,
        model_dir,
        tmp_path_factory.mktemp("vocab_sae"),
    )


@pytest.fixture(scope="module")
def damaged_sae(vocab_sae, tmp_path_factory) -> Path:
    """The same SAE with Gaussian noise of each row's norm added to W_dec (encoder untouched)."""
    from sae_interp_tasks.stages.saes import SAESource, load_sae

    sae, _ = load_sae(SAESource(path=str(vocab_sae)))
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        noise = torch.randn(sae.W_dec.shape, generator=gen) / math.sqrt(sae.W_dec.shape[1])
        sae.W_dec.add_(sae.W_dec.norm(dim=1, keepdim=True) * noise)
    out = tmp_path_factory.mktemp("damaged_sae")
    sae.save_model(out)
    return out


# ------------------------------------------------------------------------------------ lm_eval runs
# The lm_eval console script's entry point, once per argv, in one process: its ~15 s of imports
# are paid once for the five runs instead of five times.
DRIVER = (
    WITHOUT_BUILTIN_TASKS
    + """
for argv in json.loads(sys.argv[1]):
    sys.argv = ["lm_eval", *argv]
    cli_evaluate()
"""
)


def lm_eval_argv(model_args: str, meta: dict, out: Path, tasks: str = TASKS) -> list[str]:
    return [
        "--model",
        "sae",
        "--model_args",
        f"{model_args},device=cpu,batch_size=8",
        "--tasks",
        tasks,
        "--metadata",
        json.dumps(meta),
        "--output_path",
        str(out),
        "--log_samples",
    ]


@pytest.fixture(scope="module")
def runs(vocab_sae, damaged_sae, corpus_file, sae_cache, tmp_path_factory) -> dict[str, Path]:
    """name -> the --output_path folder of: planted, damaged, control (control=random, k=1), rerun
    (planted again: same SAE, settings, seed and cache), fewer_tokens (sae_core alone with half the
    tokens)."""
    meta = {"corpus": str(corpus_file), **META}
    plan = {
        "planted": (f"path={vocab_sae}", meta, TASKS),
        "damaged": (f"path={damaged_sae}", meta, TASKS),
        # as sparse as the SAE
        "control": (
            f"path={vocab_sae},control=random,control_k=1",
            meta,
            TASKS,
        ),
        "rerun": (f"path={vocab_sae}", meta, TASKS),
        "fewer_tokens": (
            f"path={vocab_sae}",
            {**meta, "n_tokens": META["n_tokens"] // 2},
            "sae_core",
        ),
    }
    outs = {name: tmp_path_factory.mktemp(f"{name}_run") for name in plan}
    argvs = [lm_eval_argv(args, m, outs[name], tasks) for name, (args, m, tasks) in plan.items()]
    proc = subprocess.run(
        [sys.executable, "-c", DRIVER, json.dumps(argvs)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env={**subprocess_env(sae_cache), "DISABLE_MULTIPROC": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name, out in outs.items():
        assert len(result_files(out)) == 1, f"{name}: no results file under {out}"
    return outs


@pytest.fixture(scope="module")
def planted_run(runs) -> Path:
    return runs["planted"]


@pytest.fixture(scope="module")
def damaged_run(runs) -> Path:
    return runs["damaged"]


@pytest.fixture(scope="module")
def control_run(runs) -> Path:
    return runs["control"]


@pytest.fixture(scope="module")
def rerun(runs) -> Path:
    return runs["rerun"]


@pytest.fixture(scope="module")
def fewer_tokens_run(runs) -> Path:
    return runs["fewer_tokens"]


def results_of(folder: Path) -> dict:
    (path,) = result_files(folder)
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def board_runs(planted_run, damaged_run, control_run):
    return [planted_run, damaged_run, control_run]


# ------------------------------------------------------------------------------------ the runs
# themselves
def test_results_record_the_sae(planted_run, control_run, vocab_sae, bigram):
    config = results_of(planted_run)["config"]
    assert config["sae"] == str(vocab_sae)
    assert re.fullmatch(r"[0-9a-f]{16}", config["sae_fingerprint"])
    assert config["sae_d_in"] == D_MODEL and config["sae_d_sae"] > N_RANDOM_LATENTS
    assert (
        config["sae_architecture"] == "standard"
        and config["sae_hook_name"] == "blocks.0.hook_resid_pre"
    )
    assert config["subject_model"] == str(bigram[0])
    assert config["sae_control"] is None
    control = results_of(control_run)["config"]
    assert control["sae"] == f"{vocab_sae}+control=random" and control["sae_control"] == "random"
    assert control["sae_fingerprint"] != config["sae_fingerprint"]


def test_the_instrument_sees_the_damage(planted_run, damaged_run, control_run):
    got = {
        name: results_of(run)["results"]["sae_core"]
        for name, run in (
            ("planted", planted_run),
            ("damaged", damaged_run),
            ("control", control_run),
        )
    }
    assert got["planted"]["ce_loss_recovered,none"] == pytest.approx(1.0, abs=1e-3)
    assert got["planted"]["explained_variance,none"] == pytest.approx(1.0, abs=1e-3)
    assert got["planted"]["l0,none"] == pytest.approx(1.0)
    assert got["damaged"]["ce_loss_recovered,none"] < 0.9
    assert got["control"]["ce_loss_recovered,none"] < got["damaged"]["ce_loss_recovered,none"]


def test_core_samples_carry_the_chunk_statistics(planted_run):
    """The per-chunk JSON holds the sums the pooled metrics are made of; recomputing gives the
    task's numbers."""
    from sae_interp_tasks.aggregations import Pooled
    from sae_interp_tasks.reports import results_io

    (run,) = results_io.read_runs([planted_run])
    core = run.tasks["sae_core"]
    stats = core.samples.stats
    assert stats is not None and stats.n_docs == N_CHUNKS
    assert stats.arrays["x_sum"].shape == (N_CHUNKS, D_MODEL)
    ones = np.ones((1, N_CHUNKS))
    for metric in (
        "explained_variance",
        "ce_loss_recovered",
    ):  # the expressions the results file recorded
        recomputed = Pooled(core.report.pooled[metric]).resampled(stats.arrays, ones)[0]
        assert recomputed == pytest.approx(core.metrics[metric].value, rel=1e-9)
    assert np.nanmean(core.samples.values["l0"]) == pytest.approx(core.metrics["l0"].value)


# ------------------------------------------------------------------------------------ leaderboard
def markdown_rows(text: str) -> list[dict]:
    lines = [line for line in text.splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    return [
        dict(zip(header, (c.strip() for c in line.strip("|").split("|")), strict=True))
        for line in lines[2:]
    ]


def first_number(text: str) -> float:
    return float(re.match(r"[≤]?(-?[\d.]+)", text).group(1))


def test_leaderboard_markdown(board_runs, vocab_sae, damaged_sae, sae_cache):
    proc = sae_interp("leaderboard", *board_runs, cache=sae_cache)
    assert proc.returncode == 0, proc.stderr
    assert "groups" not in proc.stdout  # one group: every row under the same settings
    rows = markdown_rows(proc.stdout)
    assert [r["SAE"] for r in rows] == [
        str(vocab_sae),
        str(damaged_sae),
        f"{vocab_sae}+control=random",
    ]
    planted, damaged, control = rows
    assert first_number(planted["CE loss recovered"]) == pytest.approx(1.0, abs=1e-3)
    assert first_number(damaged["CE loss recovered"]) < 0.9
    assert first_number(planted["L0"]) == pytest.approx(1.0)
    # an interval beside each mean; the chance column beside the score it calibrates
    assert re.fullmatch(r"[\d.]+ \[[\d.-]+, [\d.-]+\]", planted["sae_embedding auroc"])
    headers = list(planted)
    assert headers.index("chance (auroc_shuffled)") == headers.index("sae_embedding auroc") + 1
    skipped = results_of(board_runs[0])["results"]["sae_embedding"]["skipped_dead,none"]
    assert planted["sae_embedding latents scored (skipped)"] == f"4 ({skipped:.0f})"
    assert int(planted["width"]) == int(control["width"]) > N_RANDOM_LATENTS
    assert "mean ± 1.96·stderr" in proc.stdout


def test_leaderboard_csv_and_json_agree_with_the_results(board_runs, sae_cache, tmp_path):
    out_csv, out_json = tmp_path / "board.csv", tmp_path / "board.json"
    for fmt, out in (("csv", out_csv), ("json", out_json)):
        proc = sae_interp(
            "leaderboard", *board_runs, "--format", fmt, "--output", out, cache=sae_cache
        )
        assert proc.returncode == 0 and proc.stdout == "", proc.stderr
    rows = list(csv.DictReader(io.StringIO(out_csv.read_text())))
    data = json.loads(out_json.read_text())
    assert len(rows) == 3 and len(data["groups"]) == 1 and len(data["groups"][0]["rows"]) == 3
    for run, row, entry in zip(board_runs, rows, data["groups"][0]["rows"], strict=True):
        results = results_of(run)
        assert row["sae"] == entry["sae"] == results["config"]["sae"]
        assert int(row["d_sae"]) == entry["d_sae"] == results["config"]["sae_d_sae"]
        for task, metric in (
            ("sae_core", "l0"),
            ("sae_core", "ce_loss_recovered"),
            ("sae_embedding", "auroc"),
            ("sae_embedding", "auroc_shuffled"),
        ):
            value = results["results"][task][f"{metric},none"]
            assert float(row[f"{task}/{metric}"]) == pytest.approx(value)
            got = entry["tasks"][task]["metrics"][metric]
            assert got["value"] == pytest.approx(value)
            assert got["lo"] <= value <= got["hi"]
        stderr = results["results"]["sae_core"]["l0_stderr,none"]
        l0 = entry["tasks"]["sae_core"]["metrics"]["l0"]
        assert l0["interval"] == "z" and l0["hi"] - l0["lo"] == pytest.approx(
            2 * 1.959964 * stderr, rel=1e-5
        )
        assert entry["tasks"]["sae_core"]["metrics"]["ce_loss_recovered"]["interval"] == "bootstrap"
        assert row["sae_embedding/latents_scored"] == "4"
        assert (
            float(row["sae_embedding/skipped"])
            == results["results"]["sae_embedding"]["skipped_dead,none"]
        )


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_leaderboard_plots(board_runs, sae_cache, tmp_path):
    folder = tmp_path / "plots"
    proc = sae_interp("leaderboard", *board_runs, "--plots", folder, cache=sae_cache)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in folder.iterdir()) == ["group1_bars.png", "group1_vs_l0.png"]
    for path in folder.iterdir():
        width, height = png_size(path.read_bytes())
        assert width > 600 and height > 250
        pixels = __import__("matplotlib.image", fromlist=["imread"]).imread(path)
        assert pixels[..., :3].std() > 0.05  # something is drawn


def test_rows_under_other_settings_are_grouped_apart(board_runs, fewer_tokens_run, sae_cache):
    proc = sae_interp("leaderboard", *board_runs, fewer_tokens_run, cache=sae_cache)
    assert proc.returncode == 0, proc.stderr
    assert "The rows fall in 2 groups" in proc.stdout
    groups = proc.stdout.split("## Group ")[1:]
    assert len(groups) == 2
    assert "sae_core: n_tokens=2048" in groups[0] and "sae_core: n_tokens=1024" in groups[1]
    assert len(markdown_rows(groups[0])) == 3 and len(markdown_rows(groups[1])) == 1


# ------------------------------------------------------------------------------------ leaderboard:
# HTML
def _chromium() -> tuple[str, str] | None:
    browser = next(
        filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None
    )
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium through selenium; installs Debian's chromium where missing and we are
    root."""
    pytest.importorskip("selenium", reason="selenium is not installed (pip install -e '.[test]')")
    found = _chromium()
    if found is None and os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(
            ["apt-get", "install", "-y", "-q", "chromium", "chromium-driver"],
            capture_output=True,
            timeout=900,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        )
        found = _chromium()
    if found is None:
        pytest.skip(
            "no chromium + chromedriver, and they cannot be installed here "
            "(apt-get install -y chromium chromium-driver needs root and apt)"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = found[0]
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    try:
        driver = webdriver.Chrome(service=Service(found[1]), options=options)
    except Exception as err:  # a browser that will not start is a reason to skip, not a failure
        pytest.skip(f"chromium did not start: {str(err).splitlines()[0]}")
    yield driver
    driver.quit()


def test_html_page_renders_and_sorts(board_runs, sae_cache, tmp_path, browser):
    from selenium.webdriver.common.by import By

    page = tmp_path / "board.html"
    proc = sae_interp(
        "leaderboard", *board_runs, "--format", "html", "--output", page, cache=sae_cache
    )
    assert proc.returncode == 0, proc.stderr
    text = page.read_text()
    # self-contained: nothing fetched at view time
    assert not re.search(r"(src|href)=['\"]https?:", text)
    embedded = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", text)
    assert len(embedded) == 2 and all(
        png_size(base64.b64decode(data))[0] > 600 for data in embedded
    )
    browser.get(page.as_uri())
    assert browser.title == "SAE leaderboard"
    images = browser.find_elements(By.CSS_SELECTOR, "img.plot")
    assert len(images) == 2
    for img in images:
        assert (
            browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img)
            > 0
        )
    table = browser.find_element(By.ID, "board1")

    def column(key: str) -> list[str]:
        headers = [
            th.get_attribute("data-key") for th in table.find_elements(By.CSS_SELECTOR, "thead th")
        ]
        i = headers.index(key)
        return [
            tr.find_elements(By.TAG_NAME, "td")[i].get_attribute("data-value")
            for tr in table.find_elements(By.CSS_SELECTOR, "tbody tr")
        ]

    assert len(column("sae")) == 3
    header = table.find_element(By.CSS_SELECTOR, "th[data-key='sae_core/ce_loss_recovered']")
    header.click()
    ascending = [float(v) for v in column("sae_core/ce_loss_recovered")]
    assert ascending == sorted(ascending) and ascending[0] < ascending[-1]
    header.click()
    descending = [float(v) for v in column("sae_core/ce_loss_recovered")]
    assert descending == sorted(ascending, reverse=True)
    # the intact SAE recovers most
    assert column("sae")[0] == results_of(board_runs[0])["config"]["sae"]


def test_the_page_fits_a_laptop_screen_and_says_each_failed_check_once(
    sae_cache, tmp_path, browser
):
    """Five latent tasks of the known-answer SAE, one group scored with the oracle and one with the
    bundled scorer (which fails its checks): at 1400 px the group tables need no sideways scroll
    (chance levels sit under the scores), a reader can hide a column, and each failed check is one
    footnote per task that names the rows it marks."""
    from selenium.webdriver.common.by import By

    runs = REPO / "benchmarks" / "results" / "known_answers"
    page = tmp_path / "board.html"
    proc = sae_interp(
        "leaderboard",
        runs / "tokens_oracle",
        runs / "tokens_embedding",
        runs / "tokens_bundled",
        "--format",
        "html",
        "--output",
        page,
        cache=sae_cache,
    )
    assert proc.returncode == 0, proc.stderr
    browser.set_window_size(1400, 900)
    browser.get(page.as_uri())
    (tmp_path / "board.png").write_bytes(browser.get_screenshot_as_png())
    assert (tmp_path / "board.png").read_bytes()[:4] == b"\x89PNG"
    tables = browser.find_elements(By.CSS_SELECTOR, "table.board[id^=board]")
    assert len(tables) >= 2
    viewport = browser.execute_script("return document.documentElement.clientWidth")
    for table in tables:
        width = browser.execute_script("return arguments[0].getBoundingClientRect().right", table)
        assert width <= viewport, f"{table.get_attribute('id')} is {width} px wide in {viewport}"
    assert "chance" in tables[0].text  # under the scores, not in columns of their own
    notes = [p.text for p in browser.find_elements(By.CSS_SELECTOR, "p.failed")]
    tasks = [n.split(":")[0] for n in notes]
    assert notes and len(tasks) == len(set(tasks))  # one footnote per task
    # hide the second column of the first table
    table = tables[0]
    first = table.find_elements(By.CSS_SELECTOR, "thead th")[1]
    section = table.find_element(By.XPATH, "./ancestor::section")
    section.find_element(By.CSS_SELECTOR, "details.columns summary").click()
    section.find_elements(By.CSS_SELECTOR, "details.columns input")[1].click()
    assert not first.is_displayed()


# ------------------------------------------------------------------------------------ compare
def test_compare_fails_the_damaged_candidate(planted_run, damaged_run, sae_cache, tmp_path):
    summary = tmp_path / "summary.md"
    proc = sae_interp("compare", planted_run, damaged_run, "--markdown", summary, cache=sae_cache)
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout == ""
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("FAIL:") and "sae_core/ce_loss_recovered" in line
    text = summary.read_text()
    assert "sae-interp compare: FAIL" in text
    rows = {r["metric"]: r for r in markdown_rows(text)}
    assert set(rows) == {"sae_core/ce_loss_recovered", "sae_embedding/auroc"}
    core = rows["sae_core/ce_loss_recovered"]
    assert core["test"].startswith("paired by chunk") and core["verdict"] == "**worse**"
    # the encoder is untouched, so the latents and their scores are the same, but they are two SAEs'
    # latents
    emb = rows["sae_embedding/auroc"]
    assert emb["test"].startswith("unpaired: different SAEs") and emb["verdict"] == "ok"


def test_compare_passes_an_identical_rerun(planted_run, rerun, sae_cache):
    proc = sae_interp("compare", planted_run, rerun, cache=sae_cache)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip().startswith("PASS:")
    rows = {r["metric"]: r for r in markdown_rows(proc.stdout)}
    assert rows["sae_embedding/auroc"]["test"].startswith(
        "paired by latent (same SAE weights), 4 matched docs"
    )
    for row in rows.values():
        assert row["difference [95% CI]"] == "+0 [+0, +0]", row


def test_core_chunks_pair_only_where_their_tokens_agree(planted_run, rerun, sae_cache, tmp_path):
    # the same settings can read other text (corpus: sae is each SAE's own dataset): a chunk whose
    # tokens differ
    other_text = shutil.copytree(rerun, tmp_path / "other_text")
    (path,) = other_text.rglob("samples_sae_core_*.jsonl")
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    response = json.loads(rows[0]["resps"][0][0])
    assert re.fullmatch(r"[0-9a-f]{16}", response["tokens_sha256"])
    response["tokens_sha256"] = "0" * 16
    rows[0]["resps"] = [[json.dumps(response)]]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    proc = sae_interp(
        "compare",
        planted_run,
        other_text,
        "--metrics",
        "sae_core/ce_loss_recovered,l0",
        cache=sae_cache,
    )
    assert proc.returncode == 0, proc.stderr
    tests = {r["metric"]: r["test"] for r in markdown_rows(proc.stdout)}
    assert all(
        t.startswith("unpaired: the chunks differ in tokens_sha256") for t in tests.values()
    ), tests


def test_gzipped_samples_read_as_the_plain_ones(planted_run, rerun, sae_cache, tmp_path):
    packed = shutil.copytree(rerun, tmp_path / "packed")
    for path in packed.rglob("samples_*.jsonl"):
        path.with_name(path.name + ".gz").write_bytes(gzip.compress(path.read_bytes()))
        path.unlink()
    plain = sae_interp("compare", planted_run, rerun, cache=sae_cache)
    gz = sae_interp("compare", planted_run, packed, cache=sae_cache)
    assert gz.returncode == 0, gz.stderr
    assert gz.stdout == plain.stdout.replace(str(rerun), str(packed))


def test_compare_refuses_other_settings(planted_run, fewer_tokens_run, sae_cache, tmp_path):
    summary = tmp_path / "summary.md"
    proc = sae_interp(
        "compare",
        planted_run,
        fewer_tokens_run,
        "--metrics",
        "sae_core/ce_loss_recovered",
        "--markdown",
        summary,
        cache=sae_cache,
    )
    assert proc.returncode == 2 and proc.stdout == ""
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(
        "error: sae_core was scored under different instrument settings: n_tokens (2048 vs 1024)"
    )
    assert not summary.exists()
    # no --metrics: every task
    proc = sae_interp("compare", planted_run, fewer_tokens_run, cache=sae_cache)
    assert proc.returncode == 2
    assert error_lines(proc.stderr) == [
        "error: the two sides scored different tasks (sae_embedding only in the baseline); run the "
        "same --tasks "
        "on both, or gate on some with --metrics"
    ]


# ------------------------------------------------------------------------------------ bad input
def copy_run(run: Path, dest: Path) -> Path:
    shutil.copytree(run, dest)
    return dest


def test_bad_input_is_one_line_and_writes_nothing(planted_run, damaged_run, sae_cache, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    corrupt = copy_run(planted_run, tmp_path / "corrupt")
    (path,) = result_files(corrupt)
    path.write_text(path.read_text()[:500])
    no_samples = copy_run(planted_run, tmp_path / "no_samples")
    (lost,) = no_samples.rglob("samples_sae_embedding_*.jsonl")
    lost.unlink()
    # every samples file gone: the results' task_hashes still say the run logged them
    none_left = copy_run(planted_run, tmp_path / "none_left")
    for lost in none_left.rglob("samples_*.jsonl"):
        lost.unlink()
    foreign = copy_run(planted_run, tmp_path / "foreign")
    (path,) = result_files(foreign)
    data = json.loads(path.read_text())  # a real results file whose only task is another harness's
    data["results"] = {"arc_easy": {"alias": "arc_easy", "acc,none": 0.5, "acc_stderr,none": 0.1}}
    path.write_text(json.dumps(data))
    cases = [
        (empty, "holds no results_*.json"),
        (corrupt, "is not valid JSON"),
        (no_samples, "samples_sae_embedding_*.jsonl is missing"),
        (none_left, "samples_sae_core_*.jsonl is missing beside it (the run logged samples)"),
        (foreign, "holds no sae_interp_tasks results (tasks: arc_easy)"),
    ]
    for bad, said in cases:
        out, plots = tmp_path / f"{bad.name}.html", tmp_path / f"{bad.name}_plots"
        proc = sae_interp(
            "leaderboard",
            damaged_run,
            bad,
            "--format",
            "html",
            "--output",
            out,
            "--plots",
            plots,
            cache=sae_cache,
        )
        assert proc.returncode == 2, (bad, proc.stderr)
        assert proc.stdout == "" and "Traceback" not in proc.stderr
        (line,) = proc.stderr.strip().splitlines()
        assert line.startswith("error:") and said in line, line
        assert not out.exists() and not plots.exists()
    proc = sae_interp("compare", planted_run, no_samples, cache=sae_cache)
    assert proc.returncode == 2
    (line,) = error_lines(proc.stderr)
    assert "samples_sae_embedding_*.jsonl is missing beside it" in line
    # an output that cannot be written: one line, exit 2 (not 1, which CI reads as "worse"), no
    # plot left behind
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    plots = tmp_path / "unwritten_plots"
    for args in (
        ("leaderboard", planted_run, "--plots", plots, "--output", blocker / "board.md"),
        ("compare", planted_run, planted_run, "--markdown", blocker / "summary.md"),
    ):
        proc = sae_interp(*args, cache=sae_cache)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        (line,) = proc.stderr.strip().splitlines()
        assert line.startswith(f"error: cannot write {blocker}") and "choose another" in line, line
    assert not plots.exists()


# ------------------------------------------------------------------------------------ the README's
# CI job
def test_the_readme_ci_job_runs_commands_that_exist():
    """Every lm_eval and sae-interp command of README's GitHub Actions job parses with the real
    argument parsers, with its environment filled in, and its --metadata names only keys the tasks
    read."""
    import shlex

    import yaml
    from lm_eval._cli import HarnessCLI

    from sae_interp_tasks import cli, registry
    from sae_interp_tasks import tasks as _  # noqa: F401  (declares the task kinds)

    readme = (REPO / "README.md").read_text()
    (block,) = re.findall(r"```yaml\n(name: sae-gate\n.*?)```", readme, re.S)
    job = yaml.safe_load(block)["jobs"]["gate"]
    env = {k: str(v) for k, v in job["env"].items()}
    commands = []
    for step in job["steps"]:
        script = step.get("run", "").replace("\\\n", " ")
        commands += [
            line.strip()
            for line in script.splitlines()
            if line.strip().startswith(("lm_eval ", "sae-interp "))
        ]
    assert sum(c.startswith("lm_eval") for c in commands) == 2 and any(
        " compare " in c for c in commands
    )
    for command in commands:
        with pytest.MonkeyPatch.context() as mp:
            for key, value in env.items():
                mp.setenv(key, value)
            argv = [os.path.expandvars(word) for word in shlex.split(command.split(">>")[0])]
        if argv[0] == "sae-interp":
            cli.parser().parse_args(argv[1:])
        else:
            args = HarnessCLI()._parser.parse_args(["run", *argv[1:]])
            assert args.model == "sae" and args.log_samples and args.seed
            registry.check_keys(
                json.loads(args.metadata) if isinstance(args.metadata, str) else args.metadata
            )


# ------------------------------------------------------------------------------------ SAEBench
# files
# scripts/setup.sh puts them there
SAEBENCH_SCHEMAS = Path(sys.prefix) / "peers" / "sae-bench" / "sae_bench" / "evals"


@pytest.fixture(scope="module")
def exported(planted_run, sae_cache, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("saebench")
    proc = sae_interp(
        "export", str(planted_run), "--format", "saebench", "--output", str(out), cache=sae_cache
    )
    assert proc.returncode == 0, proc.stderr
    return out


def test_sae_core_exports_onto_saebench_core_and_validates_against_its_schema(
    exported, planted_run, sae_cache
):
    """The core file validates against the schema the sae-bench package ships, unrelaxed: every
    metric of SAEBench's core eval and every per-latent row; every number is ours, none is
    invented."""
    import jsonschema

    (path,) = (exported / "core").glob("*_eval_results.json")
    data = json.loads(path.read_text())
    schema = json.loads((SAEBENCH_SCHEMAS / "core" / "eval_output_schema_core.json").read_text())
    assert data["eval_result_unstructured"]["left_out"] == {}
    jsonschema.validate(data, schema)
    details = data["eval_result_details"]
    assert [row["index"] for row in details] == list(range(data["sae_cfg_dict"]["d_sae"]))
    assert all(0 <= row["feature_density"] <= 1 for row in details)
    assert all(-1 <= row["max_decoder_cosine_sim"] <= 1 for row in details)
    ours = {
        k: v["value"]
        for k, v in json.loads(
            sae_interp(
                "leaderboard",
                str(exported.parent / exported.name),
                "--format",
                "json",
                cache=sae_cache,
            ).stdout
        )["groups"][0]["rows"][0]["tasks"]["sae_core"]["metrics"].items()
    }
    metrics = data["eval_result_metrics"]
    assert metrics["reconstruction_quality"]["explained_variance"] == pytest.approx(
        ours["explained_variance"]
    )
    assert metrics["sparsity"]["l0"] == pytest.approx(ours["l0"])
    assert metrics["model_performance_preservation"]["ce_loss_score"] == pytest.approx(
        ours["ce_loss_recovered"]
    )
    behaviour = metrics["model_behavior_preservation"]
    results = json.loads(result_files(planted_run)[0].read_text())["results"]["sae_core"]
    assert behaviour["kl_div_score"] == pytest.approx(results["kl_div_score,none"])
    assert 0 <= behaviour["kl_div_with_sae"] < behaviour["kl_div_with_ablation"]
    assert metrics["misc_metrics"]["average_max_decoder_cosine_sim"] == pytest.approx(
        sum(row["max_decoder_cosine_sim"] for row in details) / len(details), abs=1e-5
    )
    assert (
        0 < metrics["reconstruction_quality"]["cossim"] <= 1
        and metrics["token_stats"]["total_tokens_eval_reconstruction"] > 0
    )
    assert data["sae_bench_commit_hash"].startswith("not SAEBench") and data["sae_lens_id"] is None


def test_our_other_tasks_export_under_their_own_eval_types(exported):
    (path,) = (exported / "sae_embedding").glob("*_eval_results.json")
    data = json.loads(path.read_text())
    assert data["eval_type_id"] == "sae_embedding" and set(data["eval_result_metrics"]) == {
        "sae_embedding"
    }
    assert "auroc" in data["eval_result_metrics"]["sae_embedding"] and data["eval_result_details"]
    assert data["eval_result_unstructured"]["chance"] == {"auroc": "auroc_shuffled"}
    assert all(
        isinstance(v, (int, float)) or v is None
        for v in data["eval_result_metrics"]["sae_embedding"].values()
    )


def absorption_file(path: Path) -> None:
    """An absorption result file as SAEBench's own output classes write it."""
    sys.path.insert(0, str(SAEBENCH_SCHEMAS.parent.parent))
    try:
        from sae_bench.evals.absorption import eval_config
        from sae_bench.evals.absorption import eval_output as eo
    finally:
        sys.path.pop(0)
    path.parent.mkdir(parents=True)
    eo.AbsorptionEvalOutput(
        eval_config=eval_config.AbsorptionEvalConfig(model_name="gemma-2-2b"),
        eval_id="their-absorption",
        datetime_epoch_millis=1,
        eval_result_metrics=eo.AbsorptionMetricCategories(
            mean=eo.AbsorptionMeanMetrics(
                mean_absorption_fraction_score=0.125,
                mean_full_absorption_score=0.05,
                mean_num_split_features=1.5,
                std_dev_absorption_fraction_score=0.1,
                std_dev_full_absorption_score=0.04,
                std_dev_num_split_features=0.5,
            )
        ),
        eval_result_details=[],
        sae_bench_commit_hash="abc",
        sae_lens_id="layer_12/width_16k",
        sae_lens_release_id="gemma-scope-2b-pt-res",
        sae_lens_version="6.0",
        sae_cfg_dict={"d_sae": 16384, "d_in": 2304, "hook_name": "blocks.12.hook_resid_post"},
    ).to_json_file(str(path))


def test_saebench_files_join_the_leaderboard_as_their_own_rows(
    exported, planted_run, sae_cache, tmp_path
):
    """A published-style SAEBench core file beside our results: its own row, marked, in its own
    group; an absorption file written by SAEBench's own output classes a row of sae_absorption with
    SAEBench's numbers under our names; a file of an eval type nothing here computes (SCR) a task of
    its own with SAEBench's numbers; a file with no number is skipped with a note; a truncated file
    is one line and exit 2."""
    core = next((exported / "core").glob("*_eval_results.json"))
    published = json.loads(core.read_text())
    published.update(
        sae_lens_release_id="gpt2-small-res-jb",
        sae_lens_id="blocks.8.hook_resid_pre",
        eval_config={"model_name": "gpt2", "dataset": "Skylion007/openwebtext"},
    )
    (tmp_path / "published_eval_results.json").write_text(json.dumps(published))
    absorption_file(tmp_path / "absorption" / "absorption_eval_results.json")
    scr = json.loads((tmp_path / "absorption" / "absorption_eval_results.json").read_text())
    scr.update(eval_type_id="scr", eval_result_metrics={"scr_metrics": {"scr_top_5_metric": 0.2}})
    (tmp_path / "scr_eval_results.json").write_text(json.dumps(scr))
    (tmp_path / "empty_eval_results.json").write_text(
        json.dumps({"eval_type_id": "unlearning", "eval_result_metrics": {"unlearning": {}}})
    )
    board = sae_interp(
        "leaderboard", str(planted_run), str(tmp_path), "--format", "json", cache=sae_cache
    )
    assert board.returncode == 0, board.stderr
    assert "'unlearning' holds no number to read; skipped" in board.stderr
    groups = json.loads(board.stdout)["groups"]
    saebench_rows = [r for g in groups for r in g["rows"] if r["sae"].endswith("(SAEBench)")]
    assert sorted(r["sae"] for r in saebench_rows) == [
        "gemma-scope-2b-pt-res/layer_12/width_16k (SAEBench)",
        "gpt2-small-res-jb/blocks.8.hook_resid_pre (SAEBench)",
    ]
    absorbed = next(r for r in saebench_rows if r["sae"].startswith("gemma"))
    cells = absorbed["tasks"]["sae_absorption"]["metrics"]
    assert cells["absorption_fraction"]["value"] == pytest.approx(0.125)
    assert cells["num_split_features"]["value"] == pytest.approx(1.5)
    scr_cells = absorbed["tasks"]["saebench_scr"]["metrics"]
    assert scr_cells["scr_top_5_metric"]["value"] == pytest.approx(0.2)
    saebench_rows = [r for r in saebench_rows if r["sae"].startswith("gpt2")]
    assert len(groups) == 2  # SAEBench's files form a group of their own
    assert saebench_rows[0]["tasks"]["sae_core"]["metrics"]["explained_variance"][
        "value"
    ] == pytest.approx(
        published["eval_result_metrics"]["reconstruction_quality"]["explained_variance"]
    )
    (tmp_path / "cut_eval_results.json").write_text(core.read_text()[:200])
    bad = sae_interp("leaderboard", str(tmp_path), cache=sae_cache)
    (line,) = error_lines(bad.stderr)
    assert bad.returncode == 2 and "cut_eval_results.json is not valid JSON" in line


def test_compare_reads_saebench_files_but_gates_nothing_without_per_doc_scores(
    exported, sae_cache, tmp_path
):
    core = next((exported / "core").glob("*_eval_results.json"))
    gate = sae_interp("compare", str(core), str(core), cache=sae_cache)
    assert gate.returncode == 2, gate.stdout + gate.stderr
    assert (
        "a SAEBench result file carries no per-doc scores" in gate.stdout
        and gate.stderr.startswith("NOTHING GATED")
    )


READER_MODULES = ("torch", "lm_eval", "transformers", "transformer_lens", "sae_lens", "sklearn")
READ_AND_REPORT = """
import json, sys
from sae_interp_tasks.cli import main
codes = []
for argv in json.loads(sys.argv[1]):
    try:
        codes.append(main(argv))
    except SystemExit as stop:
        codes.append(stop.code)
loaded = [m for m in json.loads(sys.argv[2]) if m in sys.modules]
print(json.dumps({"codes": codes, "loaded": loaded}))
"""


def test_the_readers_load_neither_torch_nor_lm_eval(exported, planted_run, sae_cache, tmp_path):
    """`leaderboard` (every format) and `compare`, over our results, an older file that recorded no
    report (read through the snapshot of the built-in kinds) and SAEBench files, run to the end in a
    process that never imports torch, lm_eval or the model libraries."""
    older = tmp_path / "older"
    shutil.copytree(planted_run, older)
    for path in older.rglob("results_*.json"):
        data = json.loads(path.read_text())
        for config in data["configs"].values():
            config.get("metadata", {}).pop("report", None)
        path.write_text(json.dumps(data))
    core = str(next((exported / "core").glob("*_eval_results.json")))
    out = tmp_path / "board"
    commands = [
        ["leaderboard", str(planted_run), str(older), core, "-o", str(out / "b.md")],
        ["leaderboard", str(older), core, "--format", "html", "-o", str(out / "b.html")],
        ["leaderboard", str(older), "--format", "json", "-o", str(out / "b.json")],
        ["compare", str(planted_run), str(older), "--markdown", str(out / "gate.md")],
        ["compare", core, core],
    ]
    proc = subprocess.run(
        [sys.executable, "-c", READ_AND_REPORT, json.dumps(commands), json.dumps(READER_MODULES)],
        capture_output=True,
        text=True,
        env=subprocess_env(sae_cache),
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["loaded"] == [], f"the readers imported {got['loaded']}"
    assert got["codes"][:4] == [0, 0, 0, 0], proc.stderr[-3000:]
    assert got["codes"][4] == 2  # SAEBench files carry no per-doc scores: nothing to gate
    board = json.loads((out / "b.json").read_text())
    assert board["groups"][0]["rows"][0]["tasks"]  # the older file's tasks were read, not dropped
    assert "sae_core" in (out / "b.md").read_text()


def test_check_notes_print_their_interval_at_the_confidence_asked(sae_cache, tmp_path):
    """A failed scorer check's footnote gives the check's interval at --confidence, not always
    95%."""
    from sae_interp_tasks.stats import z_for

    runs = REPO / "benchmarks" / "results" / "runs" / "group_demo"
    widths = {}
    for level in (0.95, 0.8):
        out = tmp_path / f"board{level}.md"
        proc = sae_interp(
            "leaderboard", runs, "--confidence", str(level), "-o", out, cache=sae_cache
        )
        assert proc.returncode == 0, proc.stderr
        check = r"scorer_check_balanced_acc ([\d.]+) \[([\d.]+), ([\d.]+)\]"
        note = re.search(r"failed its known-answer check \(" + check, out.read_text())
        assert note, out.read_text()[-2000:]
        value, lo, hi = map(float, note.groups())
        widths[level] = hi - lo
    assert widths[0.8] / widths[0.95] == pytest.approx(z_for(0.8) / z_for(0.95), abs=0.02)
