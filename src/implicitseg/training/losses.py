"""Training losses."""

from __future__ import annotations

import torch


def clamped_l1_loss(predicted_unit: torch.Tensor, target_unit: torch.Tensor, clamp_unit: float, *,
                    keep_gradient_above_clamp: bool = True) -> torch.Tensor:
    """NUDF loss: L1 between prediction and target, both clamped to at most ``clamp_unit``, summed over points and
    averaged over the batch.

    ``keep_gradient_above_clamp`` (fix): where the target is below the clamp but the prediction above it, the
    reference loss is flat (clamped prediction), so a network that once predicts above the clamp everywhere gets
    no gradient and never recovers (seen here: training "dies" at a constant loss). With the fix, such points
    cost ``prediction - target`` and pull the prediction down; everywhere else the loss is the reference's.

    ``predicted_unit``, ``target_unit``: (B, N) distances in unit lengths. Returns a scalar.
    """
    if predicted_unit.shape != target_unit.shape or predicted_unit.dim() != 2:
        raise ValueError(f"prediction and target must both be (B, N), got {tuple(predicted_unit.shape)} and "
                         f"{tuple(target_unit.shape)}")
    if not clamp_unit > 0:
        raise ValueError(f"clamp_unit must be > 0 (unit lengths), got {clamp_unit!r}")
    target_clamped = torch.clamp(target_unit, max=clamp_unit)
    difference = torch.clamp(predicted_unit, max=clamp_unit) - target_clamped
    if keep_gradient_above_clamp:
        difference = torch.where(target_unit < clamp_unit, predicted_unit - target_clamped, difference)
    return difference.abs().sum(dim=1).mean()
