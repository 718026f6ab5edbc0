"""models layer: the networks of every method, and what evaluating one needs (:func:`count_parameters`,
:mod:`~implicitseg.models.batching`)."""

from __future__ import annotations

from torch import nn


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters of ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
