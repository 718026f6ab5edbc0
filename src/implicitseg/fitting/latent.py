"""Fitting a subject's latent code to its image alone (NISF spec, "Inference"): the auto-decoder's inference."""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch.nn import functional as F

from implicitseg.config import NisfFitConfig
from implicitseg.models.nisf import NisfNetwork

LATENT_INIT_STD = 1e-4
"""New codes start from N(0, 1e-4²), as the training codes do."""


def image_fitting_loss(network: NisfNetwork, latent: torch.Tensor, coordinates: torch.Tensor,
                       intensity: torch.Tensor, latent_l2: float) -> torch.Tensor:
    """Image BCE of the intensity head at ``coordinates`` (B, N, D) against ``intensity`` (B, N) in [0, 1], plus
    ``latent_l2`` × mean(latent²)."""
    _, intensity_logits = network(coordinates, latent)
    return F.binary_cross_entropy_with_logits(intensity_logits, intensity) + latent_l2 * latent.pow(2).mean()


def fit_latent(network: NisfNetwork, coordinates: torch.Tensor, intensity: torch.Tensor, config: NisfFitConfig, *,
               steps: int, latent_l2: float = 1e-4, generator: torch.Generator | None = None,
               every: int = 0, on_step: Callable[[int, NisfNetwork, torch.Tensor], None] | None = None
               ) -> tuple[NisfNetwork, torch.Tensor]:
    """Fit a new code (1, latent_dim) to a subject's voxels: ``coordinates`` (M, D) and ``intensity`` (M,) on the
    network's device. Each of ``steps`` Adam steps uses ``config.points_per_step`` random voxels (0: all).
    With ``config.fit_weights`` a copy of the network is fitted too (the authors' code); the given one is never
    changed. ``on_step(step, network, latent)`` is called after every ``every``-th step (and at step 0).
    Returns the (possibly fitted copy of the) network and the code."""
    device = coordinates.device
    fitted = copy.deepcopy(network) if config.fit_weights else network
    latent = (torch.randn(1, network.latent_dim, generator=generator) * LATENT_INIT_STD).to(device).requires_grad_()
    parameters = [latent] + (list(fitted.parameters()) if config.fit_weights else [])
    optimizer = torch.optim.Adam(parameters, lr=float(config.learning_rate))
    count = len(coordinates)
    with torch.enable_grad():
        for step in range(int(steps) + 1):
            if on_step is not None and every > 0 and step % every == 0:
                on_step(step, fitted, latent.detach())
            if step == steps:
                break
            if 0 < config.points_per_step < count:
                chosen = torch.randint(count, (int(config.points_per_step),), generator=generator).to(device)
                batch_coordinates, batch_intensity = coordinates[chosen], intensity[chosen]
            else:
                batch_coordinates, batch_intensity = coordinates, intensity
            loss = image_fitting_loss(fitted, latent, batch_coordinates[None], batch_intensity[None], latent_l2)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return fitted, latent.detach()
