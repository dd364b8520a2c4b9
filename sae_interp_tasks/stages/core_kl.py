"""sae_core's KL divergences without a [positions, vocab] tensor kept: what a clean forward leaves
for them (`clean_kl_terms`), and the KL of a spliced forward from those terms (`spliced_kl`)."""

from __future__ import annotations

from collections.abc import Callable

import torch


@torch.no_grad()
def clean_kl_terms(
    logits: torch.Tensor,
    model,
    zero_logits: torch.Tensor | None = None,
    zeroed: torch.Tensor | None = None,
) -> tuple[torch.Tensor, ...]:
    """Per position of the clean logits [B, T, vocab]: sum p log p, the expected unembedding row
    p @ W_U^T, p @ b_U, and the KL divergence to the zero-ablated distribution (the one row
    `zero_logits` [vocab], or `zeroed` [B, T, vocab]). For any later forward whose unembedding
    input is h, KL(p || q) = sum p log p - (h . p W_U^T + p . b_U - logsumexp(h W_U + b_U)):
    exact, with nothing of vocabulary size kept. One context at a time."""
    w_u, b_u = model.unembed.W_U.float(), model.unembed.b_U.float()
    out: list[list[torch.Tensor]] = [[], [], [], []]
    for b in range(logits.shape[0]):
        # the sums over the vocabulary in float64: the same to the last digit however many threads
        # reduce them (a run split over processes must equal one process's)
        logp = torch.log_softmax(logits[b].double(), -1)
        p = logp.exp()
        neg_entropy = (p * logp).sum(-1)
        if zeroed is not None:
            kl_zero = neg_entropy - (p * torch.log_softmax(zeroed[b].double(), -1)).sum(-1)
        else:
            kl_zero = neg_entropy - p @ torch.log_softmax(zero_logits.double(), -1)
        row = p.float() @ w_u.T
        for i, value in enumerate((neg_entropy, row, p @ b_u.double(), kl_zero)):
            out[i].append(value.cpu())
    return tuple(torch.stack(values) for values in out)


def _with_unembed_input(model, forward: Callable[[], torch.Tensor]):
    """(logits, the unembedding's input) of one forward."""
    seen = {}
    handle = model.unembed.register_forward_pre_hook(lambda mod, args: seen.update(h=args[0]))
    try:
        logits = forward()
    finally:
        handle.remove()
    return logits, seen["h"]


def spliced_kl(reference, logits: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """KL(clean || this forward) per position [B, T], from the reference's terms (clean_kl_terms)
    and this forward's logits and unembedding input."""
    dev = logits.device
    cross = (reference.expected_row.to(dev).double() * h.double()).sum(-1)
    cross = cross + reference.expected_bias.to(dev).double()
    log_z = torch.logsumexp(logits.double(), -1)
    return (reference.neg_entropy.to(dev).double() - cross + log_z).float()
