"""Point-wise MLP decoders: gathered features at each query point → one value per point."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from implicitseg.config.nudf import OUTPUT_ACTIVATIONS

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
        return self._from_first_layer(self.hidden_layers[0](features))

    def forward_levels(self, levels: list[torch.Tensor]) -> torch.Tensor:
        """The same as :meth:`forward` on gathered features given per grid, ``[(B, N, K, C_i)]`` (``K`` neighbours),
        whose concatenation ``forward`` reads channel-major (index ``K · c + k``, ``c`` counted over all grids). The
        first layer is applied per grid with its weight columns re-ordered, so the (B, N, K · sum(C_i)) input
        is never built. Returns (B, N)."""
        first = self.hidden_layers[0]
        width = first.weight.shape[0]
        start = 0
        values = None
        for level in levels:
            neighbours, channels = level.shape[-2:]
            block = first.weight[:, start:start + neighbours * channels]  # columns K · c + k
            block = block.reshape(width, channels, neighbours).transpose(1, 2).reshape(width, -1)  # k · C + c
            part = F.linear(level.flatten(-2), block, first.bias if values is None else None)
            values = part if values is None else values + part
            start += neighbours * channels
        if start != first.weight.shape[1]:
            raise ValueError(f"decoder expects {first.weight.shape[1]} features per point, got {start}")
        return self._from_first_layer(values)

    def _from_first_layer(self, values: torch.Tensor) -> torch.Tensor:
        """The layers after the first: ``values`` (B, N, hidden[0]) before its ReLU → (B, N)."""
        values = F.relu(values)
        for layer in self.hidden_layers[1:]:
            values = F.relu(layer(values))
        values = self.output_layer(values).squeeze(-1)
        if self.output == "softplus":
            return F.softplus(values, beta=SOFTPLUS_BETA)
        if self.output == "relu":
            return F.relu(values)
        return values


class DeepSdfDecoder(nn.Module):
    """DeepSDF-style MLP (Park et al. 2019): ``n_hidden_layers`` fully connected layers of ``hidden`` units with
    weight normalisation, ReLU and dropout; the decoder input is concatenated again to the input of layer
    ``skip_layer`` (1-based); a linear output of ``out_features`` values (e.g. class logits).

    ``forward(features (..., in_features))`` → (..., out_features).
    """

    def __init__(self, in_features: int, out_features: int, *, hidden: int = 512, n_hidden_layers: int = 8,
                 skip_layer: int = 4, dropout: float = 0.2) -> None:
        super().__init__()
        if min(int(in_features), int(out_features), int(hidden), int(n_hidden_layers)) < 1:
            raise ValueError(f"decoder sizes must be >= 1, got in {in_features}, out {out_features}, hidden {hidden}, "
                             f"layers {n_hidden_layers}")
        if not 1 <= int(skip_layer) <= int(n_hidden_layers):
            raise ValueError(f"decoder skip_layer must be in 1..{n_hidden_layers}, got {skip_layer}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"decoder dropout must be in [0, 1), got {dropout}")
        self.skip_index = int(skip_layer) - 1
        layers = []
        for index in range(int(n_hidden_layers)):
            width_in = int(in_features) if index == 0 else int(hidden)
            if index == self.skip_index and index > 0:
                width_in += int(in_features)
            layers.append(nn.utils.parametrizations.weight_norm(nn.Linear(width_in, int(hidden))))
        self.hidden_layers = nn.ModuleList(layers)
        self.dropout = nn.Dropout(float(dropout))
        self.output_layer = nn.Linear(int(hidden), int(out_features))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        values = features
        for index, layer in enumerate(self.hidden_layers):
            if index == self.skip_index and index > 0:
                values = torch.cat([values, features], dim=-1)
            values = self.dropout(F.relu(layer(values)))
        return self.output_layer(values)
