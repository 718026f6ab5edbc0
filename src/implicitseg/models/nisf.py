"""The NISF network (spec ``nisf.md``, "Model"): an auto-decoder MLP with real Gabor wavelet (WIRE) activations,
conditioned on a per-subject latent code, with a segmentation head and an image-intensity head.

Inputs: canonical coordinates ``(B, N, D)`` (D = 3, or 4 with time; see
:func:`~implicitseg.geometry.frames.nisf_coordinates`) and latent codes ``(B, latent_dim)``; outputs: class
logits ``(B, N, C)`` and intensity logits ``(B, N)`` (sigmoid → [0, 1]).
"""

from __future__ import annotations

import torch
from torch import nn


class GaborLayer(nn.Module):
    """Real Gabor wavelet (WIRE, Saragadam et al. 2023): ``cos(ω0 (W_f x + b_f)) · exp(-(s0 (W_s x + b_s))²)``,
    two linear maps of the same input."""

    def __init__(self, in_features: int, out_features: int, omega0: float = 10.0, s0: float = 10.0) -> None:
        super().__init__()
        self.frequency = nn.Linear(in_features, out_features)
        self.scale = nn.Linear(in_features, out_features)
        self.omega0 = float(omega0)
        self.s0 = float(s0)

    def forward(self, values: torch.Tensor) -> torch.Tensor:
        return torch.cos(self.omega0 * self.frequency(values)) * torch.exp(-(self.s0 * self.scale(values)) ** 2)


class NisfNetwork(nn.Module):
    """``[coordinates, latent]`` → Gabor layer → ``n_layers`` residual Gabor layers (``x ← layer(x) + x``; the
    first adds the latent code itself, so ``hidden == latent_dim``) → segmentation and intensity heads."""

    def __init__(self, coordinate_dim: int, n_classes: int, *, latent_dim: int = 128, hidden: int = 128,
                 n_layers: int = 8, omega0: float = 10.0, s0: float = 10.0) -> None:
        super().__init__()
        if hidden != latent_dim:
            raise ValueError(f"NISF adds the latent code to the first residual: hidden ({hidden}) must equal "
                             f"latent_dim ({latent_dim})")
        if n_layers < 1 or n_classes < 2 or coordinate_dim not in (3, 4):
            raise ValueError(f"NISF needs n_layers >= 1, n_classes >= 2 and 3 or 4 coordinates; got {n_layers}, "
                             f"{n_classes}, {coordinate_dim}")
        self.input_layer = GaborLayer(coordinate_dim + latent_dim, hidden, omega0, s0)
        self.residual_layers = nn.ModuleList(GaborLayer(hidden, hidden, omega0, s0) for _ in range(n_layers))
        self.segmentation_head = nn.Linear(hidden, n_classes)
        self.image_head = nn.Linear(hidden, 1)
        self.coordinate_dim = int(coordinate_dim)
        self.latent_dim = int(latent_dim)

    def forward(self, coordinates: torch.Tensor, latent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``coordinates`` (B, N, D), ``latent`` (B, latent_dim) → (class logits (B, N, C), intensity logits (B, N))."""
        expanded = latent[:, None, :].expand(-1, coordinates.shape[1], -1)
        features = self.input_layer(torch.cat([coordinates, expanded], dim=-1))
        for index, layer in enumerate(self.residual_layers):
            features = layer(features) + (expanded if index == 0 else features)
        return self.segmentation_head(features), self.image_head(features).squeeze(-1)


class NisfModel(nn.Module):
    """What a NISF run trains and saves: the network, the latent table of the training subjects (initialised
    N(0, 1e-4²)) and ``inference_steps``, the fitting step count chosen on the validation subjects (-1 until one
    was chosen; 0 is a valid choice: the population's mean code fitted no further)."""

    def __init__(self, network: NisfNetwork, n_subjects: int) -> None:
        super().__init__()
        if n_subjects < 1:
            raise ValueError(f"a NISF prior needs at least one training subject, got {n_subjects}")
        self.network = network
        self.latents = nn.Embedding(int(n_subjects), network.latent_dim)
        nn.init.normal_(self.latents.weight, std=1e-4)
        self.register_buffer("inference_steps", torch.full((), -1, dtype=torch.long))
