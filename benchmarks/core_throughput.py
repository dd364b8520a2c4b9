"""sae_core throughput on the embedded default, every row on the same tokens in one run.

Rows: the plain method (three full hooked TransformerLens forwards per chunk: clean, spliced,
zero-ablated; what sae_core did before); this package's first SAE at a hook (the SAE-independent
reference, i.e. one clean Hugging Face forward that also reads the hooked activation and the
zero-ablated loss from one position, then the spliced forward from the hook on); a second SAE at the
same hook (cached reference: encode and spliced forward only); sae_lens.evals.run_evals on the same
SAE and tokens; and one clean full forward of the subject model (the floor: any method must run the
model at least once), through Hugging Face and through TransformerLens.

    python benchmarks/core_throughput.py --chunks 4
"""

from __future__ import annotations

import argparse
import time

import _common


def timed(fn, repeats: int = 1) -> float:
    fn()  # warm-up (allocations, lazy imports)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=4, help="chunks of 8 x 256 tokens")
    args = parser.parse_args()

    import torch

    from sae_interp_tasks.stages import core, core_plain
    from sae_interp_tasks.stages.corpus import CorpusSpec, token_contexts
    from sae_interp_tasks.stages.hf_forward import HFReader
    from sae_interp_tasks.stages.saes import SAESource, load_sae
    from sae_interp_tasks.stages.subject import load_subject

    sae, info = load_sae(SAESource())
    model, hf = load_subject(info.model_name, keep_hf=True)
    hook = info.hook_name
    contexts = list(
        token_contexts(CorpusSpec(), model.tokenizer, args.chunks * 8 * 256, 256, True, 1234)
    )
    chunks = [torch.stack(contexts[i * 8 : (i + 1) * 8]) for i in range(args.chunks)]
    n_tokens = sum(c.numel() for c in chunks)
    special = core.special_ids(model.tokenizer)
    reader = HFReader.check(hf, model, hook, chunks[0][:1, :16])
    assert reader is not None, "the demo's Hugging Face forward should match TransformerLens"
    zero = core.zero_ablation_logits(model, hook)
    references = [core.chunk_reference(model, hook, c, special, reader, zero) for c in chunks]

    rows = {}
    with torch.no_grad():
        rows["plain: three full hooked forwards per chunk (before)"] = timed(
            lambda: [
                core_plain.three_forward_chunk_stats(model, sae, hook, c, special) for c in chunks
            ]
        )
        rows["first SAE at a hook: reference + SAE part"] = timed(
            lambda: [
                core.chunk_stats(
                    model,
                    sae,
                    hook,
                    c,
                    core.chunk_reference(
                        model, hook, c, special, reader, core.zero_ablation_logits(model, hook)
                    ),
                    special,
                )
                for c in chunks
            ]
        )
        rows["second SAE at the same hook: SAE part (cached reference)"] = timed(
            lambda: [
                core.chunk_stats(model, sae, hook, c, r, special)
                for c, r in zip(chunks, references, strict=True)
            ]
        )
        rows["sae_lens.evals.run_evals, same SAE and tokens"] = timed(
            lambda: run_evals(model, sae, torch.cat(chunks))
        )
        rows["floor: one clean forward (Hugging Face)"] = timed(
            lambda: [hf(input_ids=c).logits for c in chunks]
        )
        rows["one clean forward (TransformerLens)"] = timed(lambda: [model(c) for c in chunks])

    base = rows["plain: three full hooked forwards per chunk (before)"]
    table = []
    print(
        f"sae_core throughput, {n_tokens} tokens ({args.chunks} chunks of 8 x 256), "
        f"{_common.machine()}"
    )
    print("| method | seconds | tokens/s | speedup vs before |\n|---|---:|---:|---:|")
    for name, seconds in rows.items():
        table.append(
            {
                "method": name,
                "seconds": seconds,
                "tokens_per_s": n_tokens / seconds,
                "speedup": base / seconds,
            }
        )
        print(f"| {name} | {seconds:.1f} | {n_tokens / seconds:,.0f} | {base / seconds:.2f}x |")
    _common.save(
        "core_throughput", {"n_tokens": n_tokens, "machine": _common.machine(), "rows": table}
    )


def run_evals(model, sae, tokens):
    """sae_lens's run_evals over exactly `tokens` (reconstruction and sparsity metrics, its
    defaults)."""
    import datasets
    from sae_lens import ActivationsStore
    from sae_lens.evals import EvalConfig
    from sae_lens.evals import run_evals as sae_lens_run_evals
    from sae_lens.training.activation_scaler import ActivationScaler

    dataset = datasets.Dataset.from_dict({"tokens": tokens.tolist()})
    store = ActivationsStore.from_sae(
        model,
        sae,
        dataset=dataset,
        context_size=tokens.shape[1],
        streaming=False,
        store_batch_size_prompts=8,
        total_tokens=tokens.numel(),
        device="cpu",
    )
    n_batches = len(tokens) // 8
    config = EvalConfig(
        batch_size_prompts=8,
        n_eval_reconstruction_batches=n_batches,
        n_eval_sparsity_variance_batches=n_batches,
        compute_kl=False,
        compute_ce_loss=True,
    )
    return sae_lens_run_evals(sae, store, model, ActivationScaler(), config)


if __name__ == "__main__":
    main()
