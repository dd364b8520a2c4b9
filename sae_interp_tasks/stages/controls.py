"""The shuffled control: each latent scored with another latent's explanation, which gives every
scorer its chance level (a derangement of the run's latents, seeded)."""

from __future__ import annotations

import random


def derangement(latents: list[int], rng: random.Random) -> dict[int, int]:
    """Each latent -> another latent (whose explanation it borrows for the shuffled control)."""
    if len(latents) < 2:
        return {}
    order = list(latents)
    rng.shuffle(order)
    return {order[i]: order[(i + 1) % len(order)] for i in range(len(order))}


def shuffled_donors(
    latents: list[int], seed: int, enabled: bool = True, stream: str = "shuffle"
) -> dict[int, int]:
    """The shuffled control's pairing: latent -> the latent whose explanation it is scored with,
    drawn among all of the run's latents (so every process of a run draws the same); {} when
    disabled."""
    return derangement(list(latents), random.Random(f"{seed}:{stream}")) if enabled else {}
