"""Point-wise MLP decoders: gathered features at each query point → one value per point."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

OUTPUT_ACTIVATIONS = ("softplus", "relu", "none")
SOFTPLUS_BETA = 100.0
"""``softplus`` output is ``log(1 + exp(β·x)) / β``: a smooth ReLU that is ≈ 0.007 at x = 0. With β = 1 a fresh
network would predict ≈ 0.69 units everywhere, above the loss's clamp (0.1 units), where the clamped L1 loss
has no gradient, and it would never learn."""


class PointMlp(nn.Module):
    """``in_features`` → ``hidden[0]`` → … → ``hidden[-1]`` → 1 with ReLU between layers and an optional output
    activation (``softplus`` (see :data:`SOFTPLUS_BETA`) or ``relu`` keep the output ≥ 0; ``none`` is the
    reference code's choice).

    ``forward(features (B, N, in_features))`` → (B, N).
    """

    def __init__(self, in_features: int, hidden: tuple[int, ...] | list[int], output: str = "softplus") -> None:
        super().__init__()
        if int(in_features) < 1:
            raise ValueError(f"decoder input size must be >= 1, got {in_features!r}")
        if len(hidden) < 1 or any(int(h) < 1 for h in hidden):
            raise ValueError(f"decoder.hidden must be a non-empty list of positive ints, got {hidden!r}")
        if output not in OUTPUT_ACTIVATIONS:
            raise ValueError(f"decoder.output must be one of {OUTPUT_ACTIVATIONS}, got {output!r}")
        sizes = [int(in_features), *(int(h) for h in hidden)]
        self.hidden_layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.output_layer = nn.Linear(sizes[-1], 1)
        self.output = output

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """``features``: (B, N, in_features) → (B, N)."""
        values = features
        for layer in self.hidden_layers:
            values = F.relu(layer(values))
        values = self.output_layer(values).squeeze(-1)
        if self.output == "softplus":
            return F.softplus(values, beta=SOFTPLUS_BETA)
        if self.output == "relu":
            return F.relu(values)
        return values
