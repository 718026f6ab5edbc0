"""The NUDF network: IF-Net style encoder + point-wise MLP regressing unsigned distances (NUDF spec, "Network")."""

from __future__ import annotations

import torch
from torch import nn

from implicitseg.config import NudfConfig
from implicitseg.models.decoders import PointMlp
from implicitseg.models.encoders import IfNetEncoder, gather_feature_levels


class NudfModel(nn.Module):
    """Unsigned distance field of one surface, conditioned on a ROI image.

    Images are ``(B, 1, D, H, W)`` float32 in ``(Z, Y, X)`` order; points are unit coordinates ``(x, y, z)``;
    distances are in unit lengths (× ``roi.size_mm / 2`` for mm).
    """

    def __init__(self, config: NudfConfig) -> None:
        super().__init__()
        self.encoder = IfNetEncoder(config.encoder)
        self.displacement_unit = float(config.encoder.displacement_unit)
        self.decoder = PointMlp(self.encoder.feature_dim * 7, tuple(config.decoder.hidden), config.decoder.output)
        # channels-last 3D convolutions are faster on CPU (oneDNN) and GPU, and the gathering reads channels-last
        # grids without a copy (BENCHMARKS.md, "NUDF 64³ training step")
        self.encoder.to(memory_format=torch.channels_last_3d)

    @property
    def feature_dim(self) -> int:
        """Channels summed over all feature grids (per point and neighbour)."""
        return self.encoder.feature_dim

    def encode(self, image: torch.Tensor) -> list[torch.Tensor]:
        """``image``: (B, 1, D, H, W) → feature grids ``[image, stem, level_1, …]``, each (B, C_i, D_i, H_i, W_i).

        Run once per image; :meth:`decode` reuses the grids for any number of point batches.
        """
        return self.encoder(image.contiguous(memory_format=torch.channels_last_3d))

    def decode(self, features: list[torch.Tensor], points_unit: torch.Tensor) -> torch.Tensor:
        """``features`` from :meth:`encode`; ``points_unit``: (B, N, 3) unit (x, y, z) → distances (B, N), unit."""
        return self.decoder.forward_levels(gather_feature_levels(features, points_unit, self.displacement_unit))

    def forward(self, image: torch.Tensor, points_unit: torch.Tensor) -> torch.Tensor:
        """``image`` (B, 1, D, H, W), ``points_unit`` (B, N, 3) → distances (B, N), unit lengths."""
        return self.decode(self.encode(image), points_unit)


def build_model(config: NudfConfig) -> NudfModel:
    """The NUDF network described by ``config.encoder`` and ``config.decoder``."""
    return NudfModel(config)
