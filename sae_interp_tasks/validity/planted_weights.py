"""Known answers for the weights tasks: SAEs whose dictionaries carry a planted answer.

- `plant_lens`: latents whose decoder rows are set to one token's unembedding direction (read
  back through the final norm's gain, as the logit lens reads it), so the logit lens of each must
  put that token first and `explainer: logits` must name it. Only decoder rows change: the
  latents fire where they fired before, so they are selected as before.
- `permuted_copy`: the SAE's latents in another order, every decoder row slightly noised, so
  `sae_similarity` must match each latent to its own copy.

    python -m sae_interp_tasks.validity.planted_weights lens OUT [--latents 32]
    python -m sae_interp_tasks.validity.planted_weights copy OUT [--noise 0.2] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import torch

from sae_interp_tasks.validity.known_answers import TOKENS

PLANTED_FILE = "planted_tokens.json"


@torch.no_grad()
def plant_lens(sae, model, planted: dict[int, int]) -> None:
    """Set each latent's decoder row (in `planted`: latent -> token id) to the direction whose
    logit lens is that token's unembedding column, keeping the row's norm."""
    gain = getattr(getattr(model, "ln_final", None), "w", None)
    for latent, token in planted.items():
        direction = model.W_U[:, token].detach().float()
        if gain is not None:
            direction = direction / gain.float()
        row = sae.W_dec[latent]
        sae.W_dec[latent] = (direction / direction.norm() * row.norm()).to(row.dtype)


@torch.no_grad()
def permuted_copy(sae, noise: float, seed: int = 0) -> torch.Tensor:
    """Permute the SAE's latents in place (decoder rows, encoder columns, encoder bias) and add
    Gaussian noise of `noise` x each decoder row's norm (spread over its d_in dimensions) to every
    decoder row. Returns the permutation: row i of the copy is latent perm[i] of the original."""
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(sae.cfg.d_sae, generator=gen)
    dec = sae.W_dec.detach()[perm].clone()
    scale = noise * dec.norm(dim=-1, keepdim=True) / dec.shape[1] ** 0.5
    sae.W_dec.copy_(dec + scale * torch.randn(dec.shape, generator=gen))
    sae.W_enc.copy_(sae.W_enc.detach()[:, perm].clone())
    sae.b_enc.copy_(sae.b_enc.detach()[perm].clone())
    return perm


def _lens(source: str | None, out: Path, n_latents: int, seed: int) -> None:
    from sae_interp_tasks.stages.saes import SAESource, load_sae
    from sae_interp_tasks.stages.selection import candidate_order
    from sae_interp_tasks.stages.subject import load_subject

    sae, info = load_sae(SAESource(path=source))
    model = load_subject(info.model_name)
    ids = [model.tokenizer.encode(t, add_special_tokens=False) for t in TOKENS]
    tokens = [i[0] for i in ids if len(i) == 1]
    # the first latents of the selection's seeded order, so the slots of a run with this seed
    # fill with planted latents
    order = candidate_order(info.d_sae, None, seed)[:n_latents]
    planted = {lat: tokens[i % len(tokens)] for i, lat in enumerate(order)}
    plant_lens(sae, model, planted)
    sae.save_model(out)
    texts = {lat: model.tokenizer.decode([tok]) for lat, tok in planted.items()}
    (out / PLANTED_FILE).write_text(json.dumps({str(k): v for k, v in texts.items()}, indent=1))


def _copy(source: str | None, out: Path, noise: float, seed: int) -> None:
    from sae_interp_tasks.stages.saes import SAESource, load_sae

    sae, _ = load_sae(SAESource(path=source))
    perm = permuted_copy(sae, noise, seed)
    sae.save_model(out)
    own = torch.argsort(perm).tolist()  # original latent i sits at row own[i] of the copy
    (out / "own_partner.json").write_text(json.dumps(own))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("what", choices=("lens", "copy"))
    ap.add_argument("out", type=Path)
    ap.add_argument("--sae", help="the SAE folder to start from (default: the demo SAE)")
    ap.add_argument("--latents", type=int, default=32, help="lens: latents planted")
    ap.add_argument("--noise", type=float, default=0.2, help="copy: noise x each row's norm")
    ap.add_argument(
        "--seed",
        type=int,
        default=1234,
        help="lens: the run's --seed, whose latent order the planted latents lead (lm-eval's "
        "default 1234); copy: the permutation's and the noise's seed",
    )
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    if args.what == "lens":
        _lens(args.sae, args.out, args.latents, args.seed)
    else:
        _copy(args.sae, args.out, args.noise, args.seed)


if __name__ == "__main__":
    main()
