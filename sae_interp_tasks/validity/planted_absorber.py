"""A known answer for sae_absorption: an SAE with one token of a letter carved out of its letter
latent into a second latent (the absorber), built on the very word activations a run reads.

Two latents of the SAE are overwritten (the rest keep their weights):

- the letter latent (0): reads the letter's ground-truth probe direction p (the probe the task
  trains, on the same words), on the centred activation, inhibited along the carved word's own
  direction e, so it fires on the letter's words but not on the carved one; its decoder row is p
  and its activation is large, so it carries the probe projection of every word it fires on;
- the absorber (1): fires on the carved word alone (its centred activation along e is above every
  other word's), with the carved word's whole probe projection, its decoder row p.

Read by the task, the carved word must be fully absorbed (fraction 1, the absorber on top) and the
letter latent must be a split latent; `carve=False` builds the same SAE with the absorber silent
and the letter latent uninhibited, where the word is not absorbed.

    python -m sae_interp_tasks.validity.planted_absorber OUT [--letter s] [--seed 1234]
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
import torch

from sae_interp_tasks.stages import absorption
from sae_interp_tasks.stages.absorption_data import LETTERS, AbsorptionConfig, WordActivations

PLANTED_FILE = "planted_absorber.json"
MAIN, ABSORBER = 0, 1
SCALE = 10.0  # the letter latent's activation, in multiples of the probe projection


def choose_word(data: WordActivations, letter: int, seed: int):
    """(the carved word's row, p, the centre, the probe): the letter's test true positive whose own
    centred direction sets it furthest apart from every other word. The probe is the task's own
    (the same training on the same words with the same seed)."""
    y = (data.labels == letter).astype(int)
    truth = absorption.train_probes(
        data.acts[data.train], data.labels[data.train], absorption.GROUND_TRUTH, seed
    )
    p = truth.direction(letter)
    centre = data.acts.mean(0)
    centred = data.acts - centre
    scores = truth.scores(data.acts, letter)
    candidates = np.flatnonzero((y == 1) & ~data.train & (scores > 0) & (data.acts @ p > 0))
    if not len(candidates):
        raise ValueError(f"no test word of {LETTERS[letter]!r} is a probe true positive")
    best, best_gap = -1, -np.inf
    for i in candidates:
        e = centred[i] / np.linalg.norm(centred[i])
        along = centred @ e
        gap = (along[i] - np.delete(along, i).max()) / along[i]
        if gap > best_gap:
            best, best_gap = int(i), gap
    if best_gap <= 0.05:
        raise ValueError(f"no word of {LETTERS[letter]!r} stands apart from the others")
    row = truth.letters.index(letter)
    return best, p, centre, {"weight": truth.weight[row], "bias": float(truth.bias[row])}


@torch.no_grad()
def plant_absorber(sae, data: WordActivations, letter: int, seed: int, carve: bool = True) -> dict:
    """Overwrite latents MAIN and ABSORBER in place; returns what was planted."""
    w, p, centre, probe = choose_word(data, letter, seed)
    centred = data.acts - centre
    e = centred[w] / np.linalg.norm(centred[w])
    along = centred @ e
    threshold = (along[w] + np.delete(along, w).max()) / 2
    boundary = -probe["bias"] / np.linalg.norm(probe["weight"])  # the probe's own, along p
    projection = float(data.acts[w] @ p)
    # letter latent: SCALE * (x.p - boundary - inhibition * (x - centre).e)
    inhibition = 2.0 * (projection - boundary) / along[w] if carve else 0.0
    direction = SCALE * (p - inhibition * e)
    offset = SCALE * (-boundary + inhibition * float(centre @ e))
    # absorber: the carved word's projection when the word is read, silent on every other word
    gain = projection / (along[w] - threshold) if carve else 0.0
    absorber = gain * e
    absorber_offset = -gain * (float(centre @ e) + threshold) if carve else -1.0
    dtype = sae.W_enc.dtype
    b_dec = sae.b_dec.detach().double().numpy() if sae.cfg.apply_b_dec_to_input else 0.0
    for latent, col, bias in ((MAIN, direction, offset), (ABSORBER, absorber, absorber_offset)):
        # the SAE reads (x - b_dec) @ W_enc + b_enc: fold b_dec into the bias
        sae.W_enc[:, latent] = torch.from_numpy(col).to(dtype)
        sae.b_enc[latent] = float(bias + np.dot(b_dec, col))
        sae.W_dec[latent] = torch.from_numpy(p * float(sae.W_dec[latent].norm())).to(dtype)
    return {"letter": LETTERS[letter], "word": data.words[w], "main": MAIN, "absorber": ABSORBER}


def default_run_words(source: str | None, seed: int):
    """(sae, info, model, the word activations) a run of sae_absorption with every default reads
    for this SAE: through the forward the backend would choose (HFReader.for_run) and from its
    cache, computed and cached there when absent."""
    from types import SimpleNamespace

    from sae_interp_tasks.stages.absorption_data import cached_word_activations
    from sae_interp_tasks.stages.activations import hook_activations
    from sae_interp_tasks.stages.hf_forward import HFReader
    from sae_interp_tasks.stages.saes import SAESource, load_sae
    from sae_interp_tasks.stages.subject import load_subject

    sae, info = load_sae(SAESource(path=source))
    model, hf_model = load_subject(info.model_name, keep_hf=True)
    reader = HFReader.for_run(hf_model, model, info.hook_name)
    run = SimpleNamespace(  # what the task's cache reads of a run
        model=model,
        info=info,
        tokenizer=model.tokenizer,
        forward_name="hf" if reader else "tl",
        read_activations=reader.activations
        if reader
        else lambda tokens: hook_activations(model, info.hook_name, tokens),
    )
    return sae, info, model, cached_word_activations(run, AbsorptionConfig(), seed)


def _build(source: str | None, out: Path, letter: str, seed: int, carve: bool) -> None:
    """Plant on the word activations a run with every default reads, so the run scores exactly the
    activations the SAE was built on."""
    sae, _, _, data = default_run_words(source, seed)
    planted = plant_absorber(sae, data, LETTERS.index(letter), seed, carve)
    sae.save_model(out)
    (out / PLANTED_FILE).write_text(json.dumps(planted, indent=1))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--sae", help="the SAE folder to start from (default: the demo SAE)")
    ap.add_argument("--letter", default="s", choices=list(LETTERS))
    ap.add_argument("--seed", type=int, default=1234, help="the run's --seed (lm-eval's default)")
    ap.add_argument("--no-carve", action="store_true", help="the uncarved twin (no absorption)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    _build(args.sae, args.out, args.letter, args.seed, not args.no_carve)


if __name__ == "__main__":
    main()
