#!/usr/bin/env python
"""Train the demo SAE shipped in sae_interp_tasks/data/demo_sae/.

A sae_lens "standard" SAE (ReLU encoder, L1 penalty weighted by decoder norms) with d_sae = 4 x 576
on `blocks.14.hook_resid_post` of the bundled SmolLM2-135M-Instruct, trained on CPU on the
Python-stdlib corpus:

1. collect the hook's activations for `--n-tokens` + `--n-heldout` tokens (256-token contexts,
   BOS first; the BOS position is dropped: its norm is ~100x the others); the held-out tokens are
   the contexts that come after the training ones in the same (seeded) corpus order;
2. train sae_lens's `StandardTrainingSAE` with its `training_forward_pass` in a plain Adam loop,
   following sae_lens's trainer: activations scaled to mean norm sqrt(d_in), L1 warm-up,
   grad-norm clipping at 1, linear LR decay at the end; b_dec starts at the activation mean;
3. convert to an inference `StandardSAE`, fold the activation scaling and the decoder norms
   (decoder rows become unit vectors), set the metadata the plugin reads, `save_model`;
4. reload it with `SAE.load_from_disk` and score it on the held-out tokens (L0, explained
   variance about the mean, MSE, dead fraction).

Usage (from the repository root):
    HF_HUB_OFFLINE=1 .venv/bin/python scripts/train_demo_sae.py [--seed 0] [--n-tokens N] [--out
    DIR]
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run from a checkout without installing the package
    sys.path.insert(0, str(REPO))

from sae_interp_tasks.stages.corpus import CorpusSpec, token_contexts  # noqa: E402 (after the sys.path line)
from sae_interp_tasks.stages.subject import load_subject, stop_layer  # noqa: E402 (after the sys.path line)

log = logging.getLogger("train_demo_sae")

MODEL_NAME = "HuggingFaceTB/SmolLM2-135M-Instruct"
HOOK_NAME = "blocks.14.hook_resid_post"
CORPUS = "stdlib"
CONTEXT_SIZE = 256
D_SAE = 2304
MASSIVE_NORM_RATIO = (
    5.0  # a token whose activation norm is > 5x the median is a "massive activation"
)
DEFAULT_OUT = REPO / "sae_interp_tasks" / "data" / "demo_sae"


def _tqdm_kwargs() -> dict:
    # in a log file (nohup) redraw rarely instead of ten times a second
    return {} if sys.stderr.isatty() else {"mininterval": 30.0}


# ----------------------------------------------------------------------------- activations


@torch.no_grad()  # not inference_mode: the result is scaled in place later
def collect_activations(model, n_tokens: int, seed: int, model_batch: int = 16) -> torch.Tensor:
    """float32 [n_contexts, context_size - 1, d_model]: the hook's activations, BOS position
    dropped.

    Contexts come from `token_contexts` in the seeded corpus order; `n_tokens` counts the BOS too.
    """
    contexts = token_contexts(
        CorpusSpec(CORPUS),
        model.tokenizer,
        n_tokens,
        context_size=CONTEXT_SIZE,
        prepend_bos=True,
        seed=seed,
    )
    n_contexts = math.ceil(n_tokens / CONTEXT_SIZE)
    out = torch.empty(n_contexts, CONTEXT_SIZE - 1, model.cfg.d_model, dtype=torch.float32)
    stop = stop_layer(HOOK_NAME)
    row = 0
    batch: list[torch.Tensor] = []
    bar = tqdm(
        total=n_contexts * CONTEXT_SIZE,
        desc="activations",
        unit="tok",
        unit_scale=True,
        **_tqdm_kwargs(),
    )

    def flush() -> None:
        nonlocal row
        tokens = torch.stack(batch)
        _, cache = model.run_with_cache(tokens, names_filter=HOOK_NAME, stop_at_layer=stop)
        acts = cache[HOOK_NAME]
        out[row : row + len(batch)] = acts[:, 1:].float()  # drop BOS
        row += len(batch)
        bar.update(tokens.numel())
        batch.clear()

    for ctx in contexts:
        batch.append(ctx)
        if len(batch) == model_batch:
            flush()
    if batch:
        flush()
    bar.close()
    assert row == n_contexts, (row, n_contexts)
    return out


# ----------------------------------------------------------------------------- training


def make_training_sae(d_in: int, l1_coefficient: float, l1_warm_up_steps: int, seed: int):
    from sae_lens import StandardTrainingSAE, StandardTrainingSAEConfig

    torch.manual_seed(seed)
    cfg = StandardTrainingSAEConfig(
        d_in=d_in,
        d_sae=D_SAE,
        dtype="float32",
        device="cpu",
        apply_b_dec_to_input=True,
        normalize_activations="none",
        l1_coefficient=l1_coefficient,
        lp_norm=1.0,
        l1_warm_up_steps=l1_warm_up_steps,
        decoder_init_norm=0.1,
    )
    return StandardTrainingSAE(cfg)


def train_sae(
    acts: torch.Tensor,
    *,
    seed: int,
    l1_coefficient: float,
    lr: float,
    epochs: float,
    batch_size: int,
    l1_warm_up_frac: float = 0.05,
    lr_warm_up_steps: int = 100,
    lr_decay_frac: float = 0.2,
    checkpoint: Path | None = None,
    checkpoint_every: int = 100,
):
    """Train a StandardTrainingSAE on `acts` ([n, d_in], already scaled). Returns (sae, stats).

    With `checkpoint`, the training state is saved there every `checkpoint_every` steps and on
    SIGTERM/SIGINT, and a later call with the same arguments resumes from it (same result).
    """
    from sae_lens.saes.sae import TrainStepInput

    n, d_in = acts.shape
    steps_per_epoch = n // batch_size
    total_steps = max(1, int(steps_per_epoch * epochs))
    l1_warm_up_steps = int(l1_warm_up_frac * total_steps)
    sae = make_training_sae(d_in, l1_coefficient, l1_warm_up_steps, seed)
    with torch.no_grad():
        sae.b_dec.copy_(acts.mean(0))  # start the decoder bias at the mean activation
    optimizer = torch.optim.Adam(sae.parameters(), lr=lr, betas=(0.9, 0.999))
    decay_start = int(total_steps * (1 - lr_decay_frac))

    def lr_lambda(step: int) -> float:
        if step < lr_warm_up_steps:
            return (step + 1) / lr_warm_up_steps
        if step >= decay_start:
            return max(0.0, (total_steps - step) / max(1, total_steps - decay_start))
        return 1.0

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda)
    run_key = {
        "seed": seed,
        "l1": l1_coefficient,
        "lr": lr,
        "epochs": epochs,
        "batch_size": batch_size,
        "n": n,
        "d_in": d_in,
        "d_sae": D_SAE,
        "acts_sum": float(acts[:4096].double().sum()),
    }
    step = 0
    elapsed_before = 0.0  # training seconds spent by interrupted earlier runs
    t_start = time.time()
    if checkpoint is not None and checkpoint.exists():
        state = torch.load(checkpoint, weights_only=False)
        if state["run_key"] != run_key:
            raise SystemExit(
                f"checkpoint {checkpoint} belongs to another run ({state['run_key']}); delete it"
            )
        sae.load_state_dict(state["sae"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step = state["step"]
        elapsed_before = state.get("elapsed_s", 0.0)
        log.info("resumed from %s at step %d/%d", checkpoint, step, total_steps)

    def save_checkpoint() -> None:
        tmp = checkpoint.with_suffix(f".tmp{os.getpid()}")
        torch.save(
            {
                "run_key": run_key,
                "step": step,
                "sae": sae.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "elapsed_s": elapsed_before + time.time() - t_start,
            },
            tmp,
        )
        tmp.replace(checkpoint)

    stop_signal: list[int] = []
    previous_handlers = {}
    if checkpoint is not None:
        import signal

        for sig in (signal.SIGTERM, signal.SIGINT):
            previous_handlers[sig] = signal.signal(
                sig, lambda signum, frame: stop_signal.append(signum)
            )

    fired_recently = torch.zeros(D_SAE, dtype=torch.bool)
    sae.train()
    bar = tqdm(total=total_steps, initial=step, desc="train SAE", unit="step", **_tqdm_kwargs())
    stats: dict = {"step": step}
    window_mse = window_l0 = window_var = 0.0
    window_n = 0
    while step < total_steps:
        epoch, first = divmod(step, steps_per_epoch)
        # epoch e's order is the (e+1)-th permutation drawn from a generator seeded with `seed`;
        # regenerating it from scratch lets a resumed run see exactly the same batches
        gen = torch.Generator().manual_seed(seed)
        for _ in range(epoch + 1):
            order = torch.randperm(n, generator=gen)
        for start in range(first * batch_size, steps_per_epoch * batch_size, batch_size):
            if step >= total_steps:
                break
            x = acts[order[start : start + batch_size]]
            l1 = l1_coefficient * min(1.0, (step + 1) / max(1, l1_warm_up_steps))
            out = sae.training_forward_pass(
                TrainStepInput(
                    sae_in=x,
                    coefficients={"l1": l1},
                    dead_neuron_mask=None,
                    n_training_steps=step,
                    is_logging_step=False,
                )
            )
            optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(sae.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            with torch.no_grad():
                active = out.feature_acts > 0
                fired_recently |= active.any(0)
                window_mse += out.losses["mse_loss"].item()
                window_l0 += active.sum(-1).float().mean().item()
                window_var += (x - x.mean(0)).pow(2).sum(-1).mean().item()
                window_n += 1
            step += 1
            bar.update(1)
            if step % 200 == 0 or step == total_steps:
                stats = {
                    "step": step,
                    "l1": round(l1, 4),
                    "lr": scheduler.get_last_lr()[0],
                    "mse": window_mse / window_n,
                    "l0": window_l0 / window_n,
                    "ev": 1 - window_mse / window_var,
                    "dead_last_200_steps": fired_recently.logical_not().float().mean().item(),
                }
                bar.set_postfix(
                    l0=f"{stats['l0']:.1f}",
                    ev=f"{stats['ev']:.3f}",
                    dead=f"{stats['dead_last_200_steps']:.3f}",
                )
                log.info(
                    "step %d/%d %s",
                    step,
                    total_steps,
                    {k: (round(v, 4) if isinstance(v, float) else v) for k, v in stats.items()},
                )
                window_mse = window_l0 = window_var = 0.0
                window_n = 0
                fired_recently.zero_()
            if checkpoint is not None and (step % checkpoint_every == 0 or stop_signal):
                save_checkpoint()
                if stop_signal:
                    log.warning(
                        "signal %d: saved step %d to %s; run the same command to resume",
                        stop_signal[0],
                        step,
                        checkpoint,
                    )
                    raise SystemExit(128 + stop_signal[0])
    bar.close()
    if checkpoint is not None:
        import signal

        for sig, handler in previous_handlers.items():
            signal.signal(sig, handler)
        save_checkpoint()  # the finished state; main() deletes it once the SAE is saved
    sae.eval()
    stats["train_s"] = elapsed_before + time.time() - t_start  # all segments of a resumed run
    stats["resumed"] = elapsed_before > 0
    return sae, stats


DEMO_INSTRUMENT_DEFAULTS = {"n_latents": 8, "n_tokens": 32768}


def to_inference_sae(training_sae, scaling_factor: float, metadata: dict):
    """A sae_lens StandardSAE with the activation scaling and decoder norms folded in."""
    from sae_lens import StandardSAE, StandardSAEConfig
    from sae_lens.saes.sae import SAEMetadata

    cfg_dict = training_sae.cfg.get_inference_sae_cfg_dict()
    cfg = StandardSAEConfig.from_dict(cfg_dict)
    sae = StandardSAE(cfg)
    sae.load_state_dict(training_sae.state_dict())
    sae.fold_activation_norm_scaling_factor(scaling_factor)  # now reads raw activations
    sae.fold_W_dec_norm()  # unit-norm decoder rows; encoder absorbs the norms
    merged = sae.cfg.metadata.to_dict()
    merged.update(metadata)
    sae.cfg.metadata = SAEMetadata(**merged)
    sae.eval()
    return sae


# ----------------------------------------------------------------------------- evaluation


@torch.no_grad()
def evaluate(sae, acts: torch.Tensor, batch_size: int = 8192) -> dict:
    """L0, explained variance about the mean, MSE and dead fraction of `sae` on raw activations [n,
    d]."""
    n = acts.shape[0]
    mean = acts.mean(0, dtype=torch.float64).float()
    norms = acts.norm(dim=-1)
    # "massive activations": some contexts' first token after BOS has a norm of 2,000-18,000
    # (the median is ~150); a handful of them carry a large share of the variance about the mean
    massive = norms > MASSIVE_NORM_RATIO * norms.median()
    rest = acts[~massive]
    rest_mean = rest.mean(0, dtype=torch.float64).float()
    sse_rest = var_rest = sse_massive = 0.0
    sse = var = l0 = 0.0
    fired = torch.zeros(sae.cfg.d_sae, dtype=torch.bool)
    counts = torch.zeros(sae.cfg.d_sae, dtype=torch.float64)
    for start in range(0, n, batch_size):
        x = acts[start : start + batch_size]
        feats = sae.encode(x)
        recon = sae.decode(feats)
        active = feats > 0
        err = (recon - x).double().pow(2).sum(-1)
        keep = ~massive[start : start + batch_size]
        sse += err.sum().item()
        var += (x - mean).double().pow(2).sum().item()
        sse_rest += err[keep].sum().item()
        sse_massive += err[~keep].sum().item()
        var_rest += (x[keep] - rest_mean).double().pow(2).sum().item()
        l0 += active.sum().item()
        fired |= active.any(0)
        counts += active.sum(0).double()
    freq = counts / n
    return {
        "n_tokens": n,
        "l0": l0 / n,
        "explained_variance": 1 - sse / var,
        "n_massive_tokens": int(massive.sum()),
        "massive_share_of_variance": 1 - var_rest / var if var else 0.0,
        "explained_variance_without_massive": 1 - sse_rest / var_rest,
        "massive_share_of_sse": sse_massive / sse if sse else 0.0,
        "mse_per_element": sse / (n * acts.shape[1]),
        "mse_per_token": sse / n,
        "dead_fraction": 1 - fired.float().mean().item(),
        "dense_fraction_gt_10pct": (freq > 0.1).float().mean().item(),
        "median_firing_rate": freq[freq > 0].median().item() if fired.any() else 0.0,
    }


# ----------------------------------------------------------------------------- main


def folder_size(path: Path) -> dict:
    return {p.name: p.stat().st_size for p in sorted(path.iterdir()) if p.is_file()}


def write_readme(path: Path, command: str, args, results: dict) -> None:
    h, t = results["heldout"], results["train_sample"]
    sizes = results["files"]
    lines = [
        "# The demo SAE",
        "",
        "`sae_interp_tasks/data/demo_sae/` holds a sae_lens `standard` SAE (ReLU encoder, L1 "
        "penalty "
        f"weighted by decoder norms) with d_sae = {D_SAE} on `{HOOK_NAME}` of the bundled "
        f"`{MODEL_NAME}`, trained on CPU by `scripts/train_demo_sae.py` on the Python-stdlib "
        "corpus "
        f"({CONTEXT_SIZE}-token contexts, BOS first; the BOS position is excluded from training "
        "and scoring).",
        "Decoder rows are unit vectors; the activation scaling used in training is folded into the "
        "weights, "
        "so it reads raw float32 activations (`normalize_activations: none`).",
        "",
        "Command (from the repository root):",
        "",
        "```",
        command,
        "```",
        "",
        "| | |",
        "|---|---|",
        f"| seed | {args.seed} |",
        f"| training tokens (non-BOS activations) | {results['training_tokens']:,} |",
        f"| epochs over them / SAE steps | {args.epochs} / {results['train_stats'].get('step')} "
        f"(batch {args.batch_size}) |",
        f"| L1 coefficient / lr | {args.l1} / {args.lr} |",
        f"| held-out tokens (contexts after the training ones) | {h['n_tokens']:,} |",
        f"| L0 (held-out) | {h['l0']:.1f} |",
        f"| explained variance about the mean (held-out) | {h['explained_variance']:.4f} |",
        f"| the same without the {h['n_massive_tokens']} massive-activation tokens (norm > "
        f"{MASSIVE_NORM_RATIO:g}x median; {100 * h['massive_share_of_variance']:.0f}% of the "
        "variance) | "
        f"{h['explained_variance_without_massive']:.4f} |",
        f"| MSE per element / per token (held-out) | {h['mse_per_element']:.4f} / "
        f"{h['mse_per_token']:.2f} |",
        f"| dead fraction (never fires on held-out tokens) | {h['dead_fraction']:.4f} |",
        f"| latents firing on > 10% of held-out tokens | {h['dense_fraction_gt_10pct']:.4f} |",
        f"| L0 / explained variance on {t['n_tokens']:,} training tokens | {t['l0']:.1f} / "
        f"{t['explained_variance']:.4f} |",
        (
            f"| wall time | {results['wall_s'] / 60:.1f} min (activations "
            f"{results['collect_s'] / 60:.1f} min, "
            f"training {results['train_s'] / 60:.1f} min) on {torch.get_num_threads()} CPU threads "
            "|"
        )
        if not results["activations_from_cache"]
        else (
            f"| wall time | activations {results['collect_s'] / 60:.1f} min (an earlier run of "
            "this command, "
            f"saved with --acts-cache) + {results['wall_s'] / 60:.1f} min in this run (training "
            f"{results['train_s'] / 60:.1f} min) on {torch.get_num_threads()} CPU threads |"
        ),
        "| files | " + ", ".join(f"{k} {v:,} B" for k, v in sizes.items()) + " |",
        "",
        "Massive activations: in about 1 context in 20 the first token after BOS has an activation "
        "norm of "
        "2,000-18,000 at this layer (an attention sink like BOS; the median token norm is about "
        "150). "
        "BOS is left out of training and scoring but these tokens are not, so they stay in the "
        "training data; "
        "the SAE reconstructs them almost exactly with a few dedicated latents, and since they "
        "carry a large "
        "share of the variance about the mean they lift the plain explained variance. The row "
        "without them "
        "is the better guide to how well ordinary tokens are reconstructed.",
        "",
        f"Software: torch {torch.__version__}, sae-lens {results['sae_lens_version']}, "
        f"transformer-lens {results['transformer_lens_version']}; Python {sys.version.split()[0]} "
        "(the stdlib corpus depends on the Python version).",
        "",
    ]
    path.write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0, help="seeds torch and the corpus order")
    parser.add_argument(
        "--n-tokens",
        type=int,
        default=819_200,
        help="training tokens to collect (counting the dropped BOS positions)",
    )
    parser.add_argument(
        "--n-heldout", type=int, default=102_400, help="held-out tokens for scoring"
    )
    parser.add_argument("--epochs", type=float, default=4.0)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument(
        "--l1",
        type=float,
        default=2.0,
        help="L1 coefficient (on activations scaled to norm sqrt(d_in))",
    )
    parser.add_argument(
        "--model-batch", type=int, default=16, help="contexts per subject-model forward pass"
    )
    parser.add_argument(
        "--acts-cache",
        type=Path,
        default=None,
        help="optional .pt file: load the activations from it if present, else save them there",
    )
    parser.add_argument(
        "--checkpoint",
        type=Path,
        default=None,
        help="optional training checkpoint: saved every 100 steps and on SIGTERM, resumed from if "
        "present",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument(
        "--readme",
        type=Path,
        default=None,
        help="write the numbers here "
        "(default scripts/README_demo_sae.md when --out is the default)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    command = "HF_HUB_OFFLINE=1 .venv/bin/python scripts/train_demo_sae.py " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    t0 = time.time()
    torch.manual_seed(args.seed)

    n_train_ctx = math.ceil(args.n_tokens / CONTEXT_SIZE)
    n_held_ctx = math.ceil(args.n_heldout / CONTEXT_SIZE)
    from_cache = bool(args.acts_cache and args.acts_cache.exists())
    if from_cache:
        cached = torch.load(args.acts_cache)
        assert cached["seed"] == args.seed and cached["acts"].shape[0] >= n_train_ctx + n_held_ctx
        acts = cached["acts"][: n_train_ctx + n_held_ctx]
        collect_s = float(cached.get("collect_s", float("nan")))  # the collecting run's time
        print(
            f"loaded activations {tuple(acts.shape)} from {args.acts_cache} "
            f"(collected in {collect_s:.0f} s by an earlier run)"
        )
    else:
        model = load_subject(MODEL_NAME, device="cpu")
        # one corpus pass: the held-out contexts are the ones right after the training ones
        acts = collect_activations(
            model, (n_train_ctx + n_held_ctx) * CONTEXT_SIZE, args.seed, args.model_batch
        )
        del model
        collect_s = time.time() - t0
        if args.acts_cache:
            torch.save({"seed": args.seed, "acts": acts, "collect_s": collect_s}, args.acts_cache)
    d_in = acts.shape[-1]
    train_acts = acts[:n_train_ctx].reshape(-1, d_in)
    held_acts = acts[n_train_ctx:].reshape(-1, d_in)
    print(
        f"activations: {train_acts.shape[0]:,} training, {held_acts.shape[0]:,} held-out tokens "
        f"({collect_s:.0f} s)"
    )

    # sae_lens's "expected_average_only_in" scaling: mean norm -> sqrt(d_in) while training
    scaling_factor = math.sqrt(d_in) / train_acts.norm(dim=-1).mean().item()
    train_acts.mul_(scaling_factor)
    t1 = time.time()
    training_sae, train_stats = train_sae(
        train_acts,
        seed=args.seed,
        l1_coefficient=args.l1,
        lr=args.lr,
        epochs=args.epochs,
        batch_size=args.batch_size,
        checkpoint=args.checkpoint,
    )
    train_s = train_stats.get("train_s", time.time() - t1)
    train_acts.div_(scaling_factor)

    metadata = {
        "model_name": MODEL_NAME,
        "hook_name": HOOK_NAME,
        "hook_head_index": None,
        "prepend_bos": True,
        "context_size": CONTEXT_SIZE,
        "dataset_path": CORPUS,
        "model_from_pretrained_kwargs": {},
        "seqpos_slice": [1, None],  # BOS positions were left out of training
        "exclude_bos_from_training": True,
        "seed": args.seed,
        "training_tokens": int(train_acts.shape[0] * args.epochs),
        "unique_training_tokens": int(train_acts.shape[0]),
        "epochs": args.epochs,
        "activation_norm_scaling_factor_folded": scaling_factor,
        "lr": args.lr,
        "train_batch_size_tokens": args.batch_size,
        "trained_by": "scripts/train_demo_sae.py",
        # read by sae_interp_tasks (saes.INSTRUMENT_DEFAULTS_KEY): sizes that let the headline
        # tasks run in
        # minutes on a 2-core CPU; a user's --metadata overrides them
        "sae_interp_defaults": DEMO_INSTRUMENT_DEFAULTS,
    }
    sae = to_inference_sae(training_sae, scaling_factor, metadata)
    args.out.mkdir(parents=True, exist_ok=True)
    for stale in ("cfg.json", "sae_weights.safetensors", "sparsity.safetensors"):
        (args.out / stale).unlink(missing_ok=True)
    sae.save_model(args.out)
    if args.checkpoint is not None:
        args.checkpoint.unlink(missing_ok=True)

    from sae_lens import SAE

    reloaded = SAE.load_from_disk(str(args.out))
    assert type(reloaded).__name__ == "StandardSAE", type(reloaded)
    dec_norms = reloaded.W_dec.norm(dim=-1)
    assert torch.allclose(dec_norms, torch.ones_like(dec_norms), atol=1e-4), dec_norms
    heldout = evaluate(reloaded, held_acts)
    train_sample = evaluate(reloaded, train_acts[: held_acts.shape[0]])
    wall_s = time.time() - t0

    from importlib.metadata import version

    results = {
        "command": command,
        "training_tokens": int(train_acts.shape[0]),
        "heldout": heldout,
        "train_sample": train_sample,
        "train_stats": train_stats,
        "scaling_factor": scaling_factor,
        "collect_s": collect_s,
        "activations_from_cache": from_cache,
        "train_s": train_s,
        "wall_s": wall_s,
        "files": folder_size(args.out),
        "sae_lens_version": version("sae-lens"),
        "transformer_lens_version": version("transformer-lens"),
    }
    print(json.dumps(results, indent=2))
    readme = args.readme or (
        REPO / "scripts" / "README_demo_sae.md"
        if args.out.resolve() == DEFAULT_OUT.resolve()
        else None
    )
    if readme:
        write_readme(readme, command, args, results)
        print(f"wrote {readme}")
    return results


if __name__ == "__main__":
    main()
