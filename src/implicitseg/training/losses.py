"""Training losses."""

from __future__ import annotations

import torch


def clamped_l1_loss(predicted_unit: torch.Tensor, target_unit: torch.Tensor, clamp_unit: float) -> torch.Tensor:
    """NUDF loss: L1 between prediction and target, both clamped to at most ``clamp_unit``, summed over points and
    averaged over the batch.

    ``predicted_unit``, ``target_unit``: (B, N) distances in unit lengths. Returns a scalar.
    """
    if predicted_unit.shape != target_unit.shape or predicted_unit.dim() != 2:
        raise ValueError(f"prediction and target must both be (B, N), got {tuple(predicted_unit.shape)} and "
                         f"{tuple(target_unit.shape)}")
    if not clamp_unit > 0:
        raise ValueError(f"clamp_unit must be > 0 (unit lengths), got {clamp_unit!r}")
    difference = torch.clamp(predicted_unit, max=clamp_unit) - torch.clamp(target_unit, max=clamp_unit)
    return difference.abs().sum(dim=1).mean()
