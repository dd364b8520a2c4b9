"""Detection scoring cost on the embedded default: with logprobs vs with list parsing only.

For the same latents, explanations and test windows: scorer prompt tokens per latent (chat
template applied, as the model sees them) and wall time per latent, in this one run, each
mode with an empty LLM cache. Also reports how many batches could be parsed. Modes: the hf
scorer's default (answers constrained to a 0/1 list, P(1) read at each digit), and free
generation read with logprobs or by list parsing alone (what an endpoint scorer does).

    python benchmarks/detection_scoring.py --latents 4
    python benchmarks/detection_scoring.py --latents 4 --device cuda   # the in-process scorer on a
    GPU
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import _common


def main() -> None:
    from sae_interp_tasks.clients import make_client
    from sae_interp_tasks.records import Explanation
    from sae_interp_tasks.scorers import classifier
    from sae_interp_tasks.scorers.detection import Detection
    from sae_interp_tasks.stages.activations import PassConfig, run_activation_pass
    from sae_interp_tasks.stages.corpus import CorpusSpec
    from sae_interp_tasks.stages.examples import ExampleConfig, split_examples
    from sae_interp_tasks.stages.explainers import token_explanation

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latents", type=int, default=4)
    parser.add_argument("--n-tokens", type=int, default=65536)
    parser.add_argument(
        "--device", default="cpu", help="cpu (default) or cuda: the model, the SAE and the scorer"
    )
    parser.add_argument(
        "--save-as", default="detection_scoring", help="results/<name>.json (default: %(default)s)"
    )
    args = parser.parse_args()

    model, sae, info = _common.demo(args.device)
    candidates = torch.randperm(info.d_sae, generator=torch.Generator().manual_seed(0))[
        : 4 * args.latents
    ]
    state = run_activation_pass(
        model,
        sae,
        info,
        CorpusSpec(),
        PassConfig(n_tokens=args.n_tokens),
        0,
        latents=candidates,
        progress=False,
    )
    ex_cfg = ExampleConfig()
    records = [state.record(int(lat)) for lat in candidates]
    live = [r for r in records if len(r.activating) >= ex_cfg.min_examples][: args.latents]
    splits = [split_examples(r, ex_cfg, seed=0) for r in live]
    decode = model.tokenizer.decode
    explanations = {
        s.latent: Explanation(s.latent, token_explanation(s.train, decode, 0.3), "tokens")
        for s in splits
    }

    rows = {}
    modes = (
        ("constrained list, P(1) per digit", True, True),
        ("free answer, logprobs", False, True),
        ("free answer, list parsing", False, False),
    )
    for mode, constrained, use_logprobs in modes:
        cfg = dataclasses.replace(
            classifier.ScorerConfig(),
            use_logprobs=use_logprobs,
            constrained=constrained,
            shuffled_control=False,
        )
        with tempfile.TemporaryDirectory() as cache:
            client = make_client(cfg.client_config(args.device), cache_dir=Path(cache))
            tokens = 0
            scorer = Detection()
            for split in splits:
                shown = scorer.shown(split, __import__("random").Random(0), 0.3)
                for i in range(0, len(shown), cfg.windows_per_prompt):
                    prompt = scorer.prompt(
                        explanations[split.latent].text,
                        shown[i : i + cfg.windows_per_prompt],
                        decode,
                        cfg,
                    )
                    text = model.tokenizer.apply_chat_template(
                        [{"role": r, "content": c} for r, c in prompt.messages],
                        tokenize=False,
                        add_generation_prompt=True,
                    )
                    tokens += len(model.tokenizer(text, add_special_tokens=False).input_ids)
            start = time.perf_counter()
            scored = scorer.score(
                splits, explanations, cfg, client, decode, seed=0, stream="detection"
            )
            _common.sync(args.device)
            seconds = time.perf_counter() - start
        batches = sum(s.detail["batches"] for s in scored.values())
        failures = sum(s.detail["parse_failures"] for s in scored.values())
        with_prob = sum(j.probability is not None for s in scored.values() for j in s.judgements)
        rows[mode] = {
            "prompt_tokens_per_latent": tokens / len(splits),
            "seconds_per_latent": seconds / len(splits),
            "batches": batches,
            "parse_failures": failures,
            "windows_with_probability": with_prob,
            "mean_balanced_acc": float(
                torch.tensor([s.metrics["balanced_acc"] for s in scored.values()]).nanmean()
            ),
            "mean_auroc": float(
                torch.tensor([s.metrics["auroc"] for s in scored.values()]).nanmean()
            ),
        }
    print(
        f"detection scoring, embedded default (SmolLM2-135M-Instruct scorer), {len(splits)} "
        "latents, token-list "
        f"explanations, device {args.device}; {_common.machine()}\n"
    )
    print(
        "| mode | prompt tokens / latent | seconds / latent | parse failures / batches | windows "
        "with P(yes) "
        "| balanced acc | AUROC |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for mode, r in rows.items():
        print(
            f"| {mode} | {r['prompt_tokens_per_latent']:.0f} | {r['seconds_per_latent']:.1f} | "
            f"{r['parse_failures']}/{r['batches']} | {r['windows_with_probability']} | "
            f"{r['mean_balanced_acc']:.3f} | "
            f"{r['mean_auroc']:.3f} |"
        )
    _common.save(
        args.save_as,
        {"latents": len(splits), "device": args.device, "rows": rows, "machine": _common.machine()},
    )


if __name__ == "__main__":
    main()
