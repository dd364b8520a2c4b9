"""Feature absorption (stages/absorption_data.py, stages/absorption.py, tasks/absorption.py): the
words and prompts, the same per-word absorption, split latents and per-letter aggregates as
SAEBench's own absorption code (the peer install), the planted absorber read as absorbed, bad
input, and the task end to end through lm_eval with its SAEBench export."""

from __future__ import annotations

import copy
import json
import types

import numpy as np
import pytest
import torch

from conftest import HOOK, sae_metadata
from helpers import (
    SAEBENCH_PEER,
    SAEBENCH_RUN,
    result_files,
    run_lm_eval,
    sae_interp,
    saebench,
    saebench_row,
    samples,
)
from sae_interp_tasks.errors import SaeInterpError
from sae_interp_tasks.stages import absorption
from sae_interp_tasks.stages import absorption_data as ad
from sae_interp_tasks.stages.absorption_data import AbsorptionConfig
from sae_interp_tasks.stages.activations import hook_activations
from sae_interp_tasks.validity.planted_absorber import ABSORBER, MAIN, plant_absorber

SMALL = {"absorption_letters": "abc", "absorption_words_per_letter": 30}


def peer():
    return saebench(
        "evals.absorption.feature_absorption_calculator",
        "evals.absorption.k_sparse_probing",
        "evals.absorption.main",
    )


def test_settings_words_and_prompts(tokenizer):
    with pytest.raises(SaeInterpError, match="give distinct lowercase letters a-z"):
        AbsorptionConfig(absorption_letters="aB")
    with pytest.raises(SaeInterpError, match="must hold \\{word\\} exactly once"):
        AbsorptionConfig(absorption_template="first letter:")
    with pytest.raises(SaeInterpError, match="more than the 3 letters .*lower it"):
        AbsorptionConfig(absorption_letters="abc")
    cfg = AbsorptionConfig(**SMALL, absorption_min_letters=1)
    vocab = ad.alpha_words(tokenizer)
    assert len(vocab) > 10_000 and " elephant" in vocab or "elephant" in vocab
    assert all(w.strip().isalpha() and w.strip().isascii() for w in vocab)
    # a letter with too few words is skipped and counted, never scored
    train, test, skipped = ad.split_words(["apple", "axe", "ant", "arm", "art", "bee"], cfg, 0)
    assert len(train) + len(test) == 5 and all(w.startswith("a") for w in train + test)
    assert set(skipped) == {"b", "c"} and "only 1 single-token words start with 'b'" in skipped["b"]
    again = ad.split_words(vocab, cfg, 0)
    assert again == ad.split_words(vocab, cfg, 0)  # seeded
    assert len(again[1]) == 3 * 6 and len(again[0]) == 3 * 24
    # the position read is the word's own token, whatever the template's tail
    text, prefix = ad.prompt(" dog", [" apple", "cat"], cfg.absorption_template)
    assert (
        text.endswith("\n dog has the first letter:")
        and "\n apple has the first letter: A\n" in text
    )
    ids, pos = ad.tokenize_prompt(tokenizer, " dog", text, prefix, bos=True)
    assert ids[0] == tokenizer.bos_token_id and tokenizer.decode([ids[pos]]) == " dog"
    assert ad.tokenize_prompt(tokenizer, " dogs and", text, prefix, bos=False) is None


def stub_model(acts_by_word: dict, template: str):
    """A stand-in for SAEBench's HookedTransformer that returns our activation of each prompt's word
    at the position SAEBench reads."""
    tail = template.partition("{word}")[2]

    def run_with_cache(prompts, names_filter):
        rows = [acts_by_word[p.rsplit("\n", 1)[1][: -len(tail)]] for p in prompts]
        x = torch.zeros(len(rows), 8, len(rows[0]))
        x[:, -6] = torch.tensor(np.array(rows))
        return None, {names_filter[0]: x}

    return types.SimpleNamespace(
        run_with_cache=run_with_cache, to_tokens=lambda _: torch.zeros(1, 8)
    )


def test_word_absorption_equals_saebench_calculator(loaded_planted):
    """SAEBench's FeatureAbsorptionCalculator on the same activations, SAE, probe direction and
    split latents: the same absorption fraction and full-absorption verdict for every word, and
    SAEBench's per-letter aggregation of those rows gives our letter's numbers."""
    calc, _, main = peer()
    sae = loaded_planted[0]
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(40)]
    acts = rng.normal(size=(40, sae.cfg.d_in)).astype(np.float32) * 3
    direction = rng.normal(size=sae.cfg.d_in)
    direction /= np.linalg.norm(direction)
    acts[:20] += 4 * direction.astype(np.float32)  # half the words carry the probe's direction
    template = AbsorptionConfig().absorption_template
    codes = absorption.encode_sparse(sae, acts)
    cos = absorption.decoder_cos(sae, direction)
    calculator = calc.FeatureAbsorptionCalculator(
        model=stub_model(dict(zip(words, acts, strict=True)), template),
        icl_word_list=words,
        max_icl_examples=3,
        base_template=template,
        word_token_pos=-6,
    )
    for main_latents in ([0], [2, 5], list(range(8))):
        theirs = calculator.calculate_absorption(
            sae,
            words,
            torch.tensor(direction, dtype=torch.float32),
            main_latents,
            layer=0,
            show_progress=False,
        )
        ours = [
            absorption.word_absorption(
                acts[i], codes[i].toarray().ravel(), direction, cos, main_latents
            )
            for i in range(40)
        ]
        for mine, their in zip(ours, theirs.word_results, strict=True):
            assert mine["absorption_fraction"] == pytest.approx(their.absorption_fraction, abs=1e-5)
            assert mine["full_absorption"] == their.is_full_absorption
            assert mine["top_latents"][0] == their.top_projection_feature_scores[0].feature_id
        assert any(r["absorption_fraction"] > 0 for r in ours)
        import pandas as pd

        rows = pd.DataFrame(
            [
                {
                    "letter": "a",
                    "absorption_fraction": r.absorption_fraction,
                    "is_full_absorption": r.is_full_absorption,
                    "num_probe_true_positives": 40,
                    "split_feats": main_latents,
                }
                for r in theirs.word_results
            ]
        )
        agg = main._aggregate_results_df(rows).iloc[0]
        mean = sum(r["absorption_fraction"] for r in ours) / 40
        assert agg["mean_absorption_fraction"] == pytest.approx(mean, abs=1e-6)
        assert agg["full_absorption_rate"] == pytest.approx(
            sum(r["full_absorption"] for r in ours) / 40
        )


def test_split_latents_equal_saebench_feature_splits():
    _, k_sparse_probing, _ = peer()
    import pandas as pd

    rng = np.random.default_rng(1)
    letters = k_sparse_probing.LETTERS
    for _ in range(20):
        f1s = {c: np.cumsum(rng.choice([0.0, 0.01, 0.05, -0.02], size=10)) + 0.5 for c in letters}
        feats = {c: rng.permutation(100)[:10] for c in letters}
        df = pd.DataFrame(
            [
                {
                    "letter": c,
                    **{f"f1_sparse_sae_{k}": f1s[c][k - 1] for k in range(1, 11)},
                    **{f"sparse_sae_k_{k}_feats": feats[c][:k] for k in range(1, 11)},
                }
                for c in letters
            ]
        )
        k_sparse_probing.add_feature_splits_to_metrics_df(
            df, max_k_value=10, f1_jump_threshold=0.03
        )
        for c, theirs in zip(letters, df["split_feats"], strict=True):
            ours = absorption.split_latents(
                [(feats[c][:k].tolist(), f1s[c][k - 1]) for k in range(1, 11)], 0.03
            )
            assert ours == list(theirs)


def test_selection_probe_equals_saebench_train_sparse_multi_probe():
    """SAEBench's L1 multi-probe trainer and ours from the same start on the same sparse codes (one
    batch an epoch, so no shuffling between them): the same weights, hence the same latents."""
    _, k_sparse_probing, _ = peer()
    from scipy import sparse

    rng = np.random.default_rng(2)
    labels = np.repeat(np.arange(4), 30)
    dense = rng.exponential(size=(120, 50)) * (rng.random((120, 50)) < 0.1)
    dense[np.arange(120), labels] += 2.0  # latent c carries letter c
    torch.manual_seed(0)
    start = k_sparse_probing.LinearProbe(50, 4)
    init = (start.weights.detach().clone(), start.biases.detach().clone())
    torch.manual_seed(0)
    with torch.enable_grad():
        theirs = k_sparse_probing.train_sparse_multi_probe(
            torch.tensor(dense, dtype=torch.float32),
            torch.nn.functional.one_hot(torch.tensor(labels)),
            device=torch.device("cpu"),
            show_progress=False,
        )
    spec = {**absorption.SELECTION, "l1": 0.01}
    ours = absorption.train_probes(sparse.csr_matrix(dense), labels, spec, 0, init=init)
    np.testing.assert_allclose(ours.weight, theirs.weights.detach().numpy(), atol=1e-5)
    np.testing.assert_allclose(ours.bias, theirs.biases.detach().numpy(), atol=1e-5)
    assert (ours.weight[np.arange(4), np.arange(4)] > 0).all()  # each letter's latent is drawn up


@pytest.fixture(scope="module")
def tiny_words(tiny_model):
    cfg = AbsorptionConfig(**SMALL, absorption_min_letters=1)
    return ad.read_word_activations(
        lambda t: hook_activations(tiny_model, HOOK, t), tiny_model.tokenizer, cfg, 0, True
    )


@pytest.fixture(scope="module")
def quiet_sae(tiny_model_dir):
    """A StandardSAE of 512 latents at the tiny model's hook, every latent silent (random unit
    decoder rows, zero encoder, negative bias): the planted latents are the only ones that fire,
    and at this width SAEBench's 50-step selection probe moves a latent that carries the letter
    further than its random start (1/sqrt(512))."""
    from sae_lens import StandardSAE, StandardSAEConfig
    from sae_lens.saes.sae import SAEMetadata

    cfg = StandardSAEConfig(d_in=128, d_sae=512, apply_b_dec_to_input=True)
    cfg.metadata = SAEMetadata(**sae_metadata(tiny_model_dir, HOOK))
    sae = StandardSAE(cfg)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        dec = torch.randn(512, 128, generator=gen)
        sae.W_dec.copy_(dec / dec.norm(dim=-1, keepdim=True))
        sae.W_enc.zero_()
        sae.b_enc.fill_(-1.0)
        sae.b_dec.zero_()
    return sae


def test_planted_absorber_reads_as_absorbed(quiet_sae, tiny_words):
    """The carved word is fully absorbed by the absorber with the letter latent among the split
    latents; in the uncarved twin the same word is not absorbed at all."""
    cfg = AbsorptionConfig(**SMALL, absorption_min_letters=1, absorption_min_probe_f1=0.0)
    assert len(tiny_words.words) == 90 and tiny_words.train.sum() == 72
    letter = 0
    read = {}
    for carve in (True, False):
        sae = copy.deepcopy(quiet_sae)
        planted = plant_absorber(sae, tiny_words, letter, 0, carve=carve)
        codes = absorption.encode_sparse(sae, tiny_words.acts)
        result = absorption.score_letters(tiny_words, codes, sae, cfg, 0)[letter]
        assert MAIN in result["split_latents"], result
        (row,) = [r for r in result["absorbed_words"] if r["word"] == planted["word"]]
        read[carve] = (row, result["absorption_fraction"])
    carved, plain = read[True], read[False]
    assert carved[0]["absorption_fraction"] == 1.0 and carved[0]["full_absorption"]
    assert ABSORBER in carved[0]["top_latents"]
    assert plain[0]["absorption_fraction"] == 0.0 and not plain[0]["full_absorption"]
    assert carved[1] > plain[1]


@pytest.mark.slow  # lm_eval end to end
def test_absorption_end_to_end(quiet_sae, tiny_words, sae_cache, tmp_path):
    sae = copy.deepcopy(quiet_sae)
    planted = plant_absorber(sae, tiny_words, 0, 0)
    sae.save_model(tmp_path / "sae")
    meta = {**SMALL, "absorption_min_probe_f1": 0.0, "absorption_min_letters": 3}
    args = [
        "--model", "sae", "--model_args", f"path={tmp_path / 'sae'},device=cpu",
        "--tasks", "sae_absorption", "--metadata", json.dumps(meta), "--seed", "0",
        "--log_samples", "--output_path", str(tmp_path / "run"),
    ]  # fmt: skip
    proc = run_lm_eval(args, sae_cache)
    assert proc.returncode == 0, proc.stderr[-3000:]
    task = json.loads(result_files(tmp_path / "run")[0].read_text())["results"]["sae_absorption"]
    rows = {
        r["response"]["first_letter"]: r["response"]
        for r in samples(tmp_path / "run", "sae_absorption", key="letter")
    }
    assert set(rows) == {"a", "b", "c"}
    (carved,) = [w for w in rows["a"]["absorbed_words"] if w["word"] == planted["word"]]
    assert carved["absorption_fraction"] == 1.0 and carved["full_absorption"]
    scored = [r for r in rows.values() if "skip" not in r]
    assert task["absorption_fraction,none"] == pytest.approx(
        np.mean([r["absorption_fraction"] for r in scored])
    )
    assert task["letters_check_passed,none"] == (1.0 if len(scored) >= 3 else 0.0)
    # a rerun reads the word activations back: the same numbers
    again = run_lm_eval([*args[:-1], str(tmp_path / "again")], sae_cache)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "absorption: prompts" not in again.stderr
    second = json.loads(result_files(tmp_path / "again")[0].read_text())["results"]
    assert second["sae_absorption"] == task
    check_saebench_files(tmp_path, task, scored)


def check_saebench_files(tmp_path, task: dict, scored: list) -> None:
    """Our run in SAEBench's absorption_first_letter layout validates against the schema sae-bench
    ships, unrelaxed; a file SAEBench's own output classes write reads as a row beside ours."""
    peer()
    import jsonschema

    out = tmp_path / "saebench"
    proc = sae_interp("export", str(tmp_path / "run"), "--format", "saebench", "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    (path,) = (out / "absorption_first_letter").glob("*_eval_results.json")
    data = json.loads(path.read_text())
    schema = (
        SAEBENCH_PEER / "sae_bench/evals/absorption/eval_output_schema_absorption_first_letter.json"
    )
    jsonschema.validate(data, json.loads(schema.read_text()))
    mean = data["eval_result_metrics"]["mean"]
    assert mean["mean_absorption_fraction_score"] == pytest.approx(task["absorption_fraction,none"])
    assert len(data["eval_result_details"]) == len(scored)
    if len(scored) > 1:
        assert mean["std_dev_absorption_fraction_score"] == pytest.approx(
            np.std([r["absorption_fraction"] for r in scored], ddof=1)
        )

    eval_config, eo = saebench("evals.absorption.eval_config", "evals.absorption.eval_output")
    metrics = dict.fromkeys(eo.AbsorptionMeanMetrics.__dataclass_fields__, 0.1)
    theirs = eo.AbsorptionEvalOutput(
        eval_type_id=eo.EVAL_TYPE_ID_ABSORPTION,
        eval_config=eval_config.AbsorptionEvalConfig(model_name="gemma-2-2b"),
        eval_result_metrics=eo.AbsorptionMetricCategories(
            mean=eo.AbsorptionMeanMetrics(**{**metrics, "mean_absorption_fraction_score": 0.27})
        ),
        sae_lens_id="layer_12",
        sae_cfg_dict={"d_sae": 16384, "d_in": 2304, "hook_name": "blocks.12.hook_resid_post"},
        **SAEBENCH_RUN,
    )
    theirs.to_json_file(str(tmp_path / "theirs_eval_results.json"))
    row = saebench_row(tmp_path / "run", tmp_path / "theirs_eval_results.json")
    cell = row["tasks"]["sae_absorption"]["metrics"]["absorption_fraction"]
    assert cell["value"] == pytest.approx(0.27)
