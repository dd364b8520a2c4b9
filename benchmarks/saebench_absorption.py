"""Our feature absorption against SAEBench's own absorption code, on the demo SAE and the bundled
model.

The words and their activations are those sae_absorption reads with every default and the seed
(read from its cache, or computed there: `validity.planted_absorber.default_run_words`); then, per
letter:

- ours: `stages/absorption.score_letters`, as sae_absorption scores it;
- SAEBench: its ground-truth probe trainer (`train_linear_probe_for_task`, 50 Adam epochs), its
  k-sparse probes (`train_k_sparse_probes`, the L1 probe over the SAE codes, then scikit-learn),
  its metrics and feature-split rule (`eval_probe_and_sae_k_sparse_raw_scores`, `build_metrics_df`,
  `add_feature_splits_to_metrics_df`), on the same train and test activations; its
  `FeatureAbsorptionCalculator` on the same test words, with the prompts it builds itself (fresh
  in-context examples from the whole vocabulary), and its per-letter aggregation;
- hybrid: our per-word absorption on our activations with SAEBench's probe and split latents
  (what is left of the difference once the probes agree is the prompts').

Each letter's numbers with our standard error over its words; the means over the letters both
score with ours' standard error over letters. sae-bench 0.6.0 (the peer install, --no-deps).

    python benchmarks/saebench_absorption.py [--seed 1234]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import _common

PEER = Path(sys.prefix) / "peers" / "sae-bench"


def ours(data, codes, sae, cfg, seed: int):
    from sae_interp_tasks.stages import absorption

    return absorption.score_letters(data, codes, sae, cfg, seed)


def theirs(model, sae, data, layer: int):
    """SAEBench's pipeline on our activations: {letter index: result}."""
    import pandas as pd
    import torch
    from sae_bench.evals.absorption import k_sparse_probing as ks
    from sae_bench.evals.absorption import main, probing, vocab
    from sae_bench.evals.absorption.feature_absorption_calculator import (
        FeatureAbsorptionCalculator,
    )
    from sae_bench.evals.absorption.prompting import first_letter_formatter

    torch.manual_seed(42)  # SAEBench's default random_seed
    torch.set_grad_enabled(True)
    train, test = data.train, ~data.train
    frames = [pd.DataFrame({"answer_class": data.labels[m]}) for m in (train, test)]
    probe, _ = probing.train_linear_probe_for_task(
        frames[0], frames[1], torch.device("cpu"), data.acts[train], data.acts[test],
        batch_size=64, num_epochs=50, lr=1e-2,
    )  # fmt: skip
    labelled = [
        [(data.words[i], int(data.labels[i])) for i in np.flatnonzero(m)] for m in (train, test)
    ]
    k_probes = ks.train_k_sparse_probes(
        sae, labelled[0], torch.from_numpy(data.acts[train]), ks=list(range(1, 11)),
        precalc_sae_acts=True,
    )  # fmt: skip
    torch.set_grad_enabled(False)
    raw = ks.eval_probe_and_sae_k_sparse_raw_scores(
        sae, probe, k_probes, labelled[1], torch.from_numpy(data.acts[test])
    )
    meta = ks.sae_k_sparse_metadata(sae, probe, k_probes, sae_name="demo", layer=layer)
    metrics = ks.build_metrics_df(raw, meta, max_k_value=10)
    ks.add_feature_splits_to_metrics_df(metrics, max_k_value=10, f1_jump_threshold=0.03)
    calculator = FeatureAbsorptionCalculator(
        model=model, icl_word_list=vocab.get_alpha_tokens(model.tokenizer), max_icl_examples=10,
        base_template="{word} has the first letter:", answer_formatter=first_letter_formatter(),
        word_token_pos=-6, batch_size=10,
    )  # fmt: skip
    out = {}
    for letter in sorted(set(data.labels.tolist())):
        c = vocab.LETTERS[letter]
        row = metrics[metrics["letter"] == c].iloc[0]
        split = [int(f) for f in row["split_feats"]]
        positives = raw[(raw["answer_letter"] == c) & (raw[f"score_probe_{c}"] > 0)]["token"]
        result = {"probe_f1": float(row["f1_probe"]), "split": split, "words": list(positives)}
        if len(positives):
            got = calculator.calculate_absorption(
                sae, list(positives), probe.weights[letter], split, layer=layer,
                show_progress=False,
            )  # fmt: skip
            df = pd.DataFrame(
                [
                    {"letter": c, "absorption_fraction": w.absorption_fraction,
                     "is_full_absorption": w.is_full_absorption,
                     "num_probe_true_positives": len(positives), "split_feats": split}
                    for w in got.word_results
                ]
            )  # fmt: skip
            agg = main._aggregate_results_df(df).iloc[0]
            result |= {
                "absorption_fraction": float(agg["mean_absorption_fraction"]),
                "full_absorption_rate": float(agg["full_absorption_rate"]),
            }
        out[letter] = (result, probe.weights[letter].detach().numpy().astype(np.float64))
    return out


def hybrid(data, codes, sae, letter: int, direction, split, words) -> float:
    """Our per-word absorption with SAEBench's probe direction, split latents and true positives."""
    from sae_interp_tasks.stages import absorption

    unit = direction / np.linalg.norm(direction)
    cos = absorption.decoder_cos(sae, unit)
    index = {w: i for i, w in enumerate(data.words) if not data.train[i]}
    rows = [
        absorption.word_absorption(
            data.acts[index[w]], codes[index[w]].toarray().ravel(), unit, cos, split
        )
        for w in words
    ]
    return float(np.mean([r["absorption_fraction"] for r in rows])) if rows else math.nan


def _se(values) -> float:
    values = [v for v in values if math.isfinite(v)]
    return float(np.std(values, ddof=1) / np.sqrt(len(values))) if len(values) > 1 else math.nan


def main_() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=1234)
    args = ap.parse_args()
    if not (PEER / "sae_bench").is_dir():
        sys.exit("error: the sae-bench peer is not installed; run bash scripts/setup.sh")
    from sae_interp_tasks.stages import absorption
    from sae_interp_tasks.stages.absorption_data import LETTERS, AbsorptionConfig
    from sae_interp_tasks.validity.planted_absorber import default_run_words

    cfg = AbsorptionConfig()
    start = time.perf_counter()
    sae, info, model, data = default_run_words(None, args.seed)
    forward_s = time.perf_counter() - start
    start = time.perf_counter()
    codes = absorption.encode_sparse(sae, data.acts)
    mine = ours(data, codes, sae, cfg, args.seed)
    ours_s = time.perf_counter() - start
    sys.path.insert(0, str(PEER))
    start = time.perf_counter()
    their = theirs(model, sae, data, int(info.hook_name.split(".")[1]))
    theirs_s = time.perf_counter() - start
    rows = []
    for letter, r in mine.items():
        t, direction = their[letter]
        fractions = [w["absorption_fraction"] for w in r.get("absorbed_words", [])]
        rows.append(
            {
                "letter": LETTERS[letter],
                "probe_f1": [r["probe_f1"], t["probe_f1"]],
                "split": [r.get("split_latents"), t["split"]],
                "true_positives": [r.get("num_probe_true_positives", 0), len(t["words"])],
                "absorption_fraction": [
                    r.get("absorption_fraction", math.nan),
                    t.get("absorption_fraction", math.nan),
                ],
                "se": _se(fractions),
                "hybrid": hybrid(data, codes, sae, letter, direction, t["split"], t["words"]),
                "full_absorption_rate": [
                    r.get("full_absorption_rate", math.nan),
                    t.get("full_absorption_rate", math.nan),
                ],
            }
        )  # fmt: skip
    report(rows, forward_s, ours_s, theirs_s, len(data.words))


def report(rows, forward_s, ours_s, theirs_s, n_words) -> None:
    lines = [
        f"{'letter':>6} {'probe F1 ours/SB':>16} {'split ours':>12} {'split SB':>12} "
        f"{'TP ours/SB':>10} {'fraction ours (se)':>19} {'SB':>6} {'hybrid':>7} "
        f"{'full ours/SB':>13}"
    ]
    for r in rows:
        fo, ft = r["absorption_fraction"]
        lines.append(
            f"{r['letter']:>6} {r['probe_f1'][0]:7.2f}/{r['probe_f1'][1]:<8.2f} "
            f"{str(r['split'][0]):>12} {str(r['split'][1]):>12} "
            f"{r['true_positives'][0]:>4}/{r['true_positives'][1]:<5} "
            f"{fo:9.3f} ({r['se']:.3f}) {ft:6.3f} {r['hybrid']:7.3f} "
            f"{r['full_absorption_rate'][0]:6.3f}/{r['full_absorption_rate'][1]:.3f}"
        )
    summary = {}
    for name, pick in (
        ("fraction ours", lambda r: r["absorption_fraction"][0]),
        ("fraction SAEBench", lambda r: r["absorption_fraction"][1]),
        ("fraction hybrid", lambda r: r["hybrid"]),
        ("full rate ours", lambda r: r["full_absorption_rate"][0]),
        ("full rate SAEBench", lambda r: r["full_absorption_rate"][1]),
        ("split latents ours", lambda r: len(r["split"][0] or []) or math.nan),
        ("split latents SAEBench", lambda r: len(r["split"][1]) or math.nan),
    ):
        values = [pick(r) for r in rows]
        finite = [v for v in values if math.isfinite(v)]
        summary[name] = {"mean": float(np.mean(finite)), "se": _se(finite), "letters": len(finite)}
        lines.append(
            f"mean {name}: {np.mean(finite):.3f} (se {_se(finite):.3f}, {len(finite)} letters)"
        )
    same_split = sum(r["split"][0] == r["split"][1] for r in rows)
    lines.append(f"letters with the same split latents: {same_split}/{len(rows)}")
    lines.append(
        f"{n_words} words; model and words (cached or forward) {forward_s:.0f} s; ours "
        f"{ours_s:.1f} s; SAEBench's code {theirs_s:.1f} s; {_common.machine()}"
    )
    text = "\n".join(lines)
    print(text)
    (_common.RESULTS / "saebench_absorption.txt").write_text(text + "\n")
    _common.save("saebench_absorption", {"letters": rows, "summary": summary})


if __name__ == "__main__":
    main_()
