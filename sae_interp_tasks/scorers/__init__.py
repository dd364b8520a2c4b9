"""Scorers: how well an explanation predicts a latent's behaviour on held-out windows."""
