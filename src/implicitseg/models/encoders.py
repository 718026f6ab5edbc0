"""IF-Net style 3D convolutional encoder and trilinear feature gathering at query points.

Frames: images are ``(B, 1, D, H, W)`` = ``(Z, Y, X)`` ROI tensors and query points are unit coordinates in
``(x, y, z)`` order (``geometry/frames.py``), so points go into ``grid_sample`` as they are.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from implicitseg.config import EncoderConfig


def _check_encoder_config(config: EncoderConfig) -> None:
    if int(config.stem_channels) < 1:
        raise ValueError(f"encoder.stem_channels must be >= 1, got {config.stem_channels!r}")
    if len(config.level_channels) < 1 or any(int(c) < 1 for c in config.level_channels):
        raise ValueError(f"encoder.level_channels must be a non-empty list of positive ints, "
                         f"got {config.level_channels!r}")
    if int(config.first_pool) < 1:
        raise ValueError(f"encoder.first_pool must be >= 1, got {config.first_pool!r}")
    if not 0.0 <= float(config.dropout) < 1.0:
        raise ValueError(f"encoder.dropout must be in [0, 1), got {config.dropout!r}")
    if not float(config.displacement_unit) > 0.0:
        raise ValueError(f"encoder.displacement_unit must be > 0 (unit lengths), got {config.displacement_unit!r}")


class IfNetEncoder(nn.Module):
    """Stem conv (1→stem, full resolution) → ReLU → BatchNorm, then per level MaxPool → conv → ReLU → conv →
    ReLU → BatchNorm (→ Dropout3d). The first level pools by ``first_pool``, later levels by 2.

    ``forward(image (B, 1, D, H, W))`` returns the feature grids ``[image, stem, level_1, ..., level_L]``,
    each ``(B, C_i, D_i, H_i, W_i)``; ``sum(C_i) == feature_dim``.
    """

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        _check_encoder_config(config)
        stem = int(config.stem_channels)
        self.stem = nn.Sequential(nn.Conv3d(1, stem, 3, padding=1), nn.ReLU(inplace=True), nn.BatchNorm3d(stem))
        levels = []
        previous = stem
        for index, channels in enumerate(int(c) for c in config.level_channels):
            pool = int(config.first_pool) if index == 0 else 2
            layers: list[nn.Module] = [
                nn.MaxPool3d(pool),
                nn.Conv3d(previous, channels, 3, padding=1),
                nn.ReLU(inplace=True),
                nn.Conv3d(channels, channels, 3, padding=1),
                nn.ReLU(inplace=True),
                nn.BatchNorm3d(channels),
            ]
            if config.dropout > 0:
                layers.append(nn.Dropout3d(float(config.dropout)))
            levels.append(nn.Sequential(*layers))
            previous = channels
        self.levels = nn.ModuleList(levels)
        self.feature_dim = 1 + stem + sum(int(c) for c in config.level_channels)
        """Channels summed over all feature grids (input image included)."""

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        """``image``: (B, 1, D, H, W) float32, (Z, Y, X). Returns the list of feature grids (see class doc)."""
        if image.dim() != 5 or image.shape[1] != 1:
            raise ValueError(f"encoder expects an image of shape (B, 1, D, H, W), got {tuple(image.shape)}")
        grids = [image]
        features = self.stem(image)
        grids.append(features)
        for level in self.levels:
            features = level(features)
            grids.append(features)
        return grids


def neighbour_offsets_unit(displacement_unit: float, *, device: torch.device | None = None,
                           dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(7, 3) offsets in unit lengths, (x, y, z): the point itself, then ∓/± ``displacement_unit`` along x, y, z."""
    offsets = torch.zeros(7, 3, device=device, dtype=dtype)
    for axis in range(3):
        offsets[1 + 2 * axis, axis] = -displacement_unit
        offsets[2 + 2 * axis, axis] = displacement_unit
    return offsets


def gather_features(grids: list[torch.Tensor], points_unit: torch.Tensor, displacement_unit: float) -> torch.Tensor:
    """Read every grid trilinearly at each point and its 6 axis neighbours.

    ``grids``: feature grids ``(B, C_i, D_i, H_i, W_i)``, each spanning the unit cube with ``align_corners=True``.
    ``points_unit``: (B, N, 3), unit coordinates (x, y, z). Outside the cube features read as zero.
    Returns (B, N, 7 · sum(C_i)); the feature of channel ``c`` at neighbour ``k`` is at index ``7 · c + k``.
    """
    if points_unit.dim() != 3 or points_unit.shape[-1] != 3:
        raise ValueError(f"points_unit must have shape (B, N, 3), got {tuple(points_unit.shape)}")
    batch, count, _ = points_unit.shape
    offsets = neighbour_offsets_unit(displacement_unit, device=points_unit.device, dtype=points_unit.dtype)
    # (B, 1, 7, N, 3): grid_sample output is then (B, C, 1, 7, N).
    sample_grid = (points_unit[:, None, None, :, :] + offsets[None, None, :, None, :])
    sampled = [
        F.grid_sample(grid, sample_grid.to(grid.dtype), mode="bilinear", padding_mode="zeros", align_corners=True)
        for grid in grids
    ]
    features = torch.cat(sampled, dim=1)  # (B, C_total, 1, 7, N)
    return features.reshape(batch, -1, count).transpose(1, 2)


NORMS = {"instance": nn.InstanceNorm3d, "batch": nn.BatchNorm3d}


def conv_norm_act(channels_in: int, channels_out: int, norm: str, stride: int = 1) -> nn.Sequential:
    """3×3×3 convolution (padding 1) → normalisation (``instance`` with affine parameters, or ``batch``) →
    LeakyReLU(0.01): the nnU-Net building block."""
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {sorted(NORMS)}, got {norm!r}")
    norm_layer = NORMS[norm](channels_out, affine=True)
    return nn.Sequential(nn.Conv3d(channels_in, channels_out, 3, stride=stride, padding=1), norm_layer,
                         nn.LeakyReLU(0.01, inplace=True))


class StridedConvEncoder(nn.Module):
    """nnU-Net-style encoder (Implicit U-Net spec, "Network"): stage 0 at full resolution, each later stage halves
    the grid with a stride-2 convolution (no pooling); stage ``s`` is ``stage_convs[s]`` :func:`conv_norm_act`
    layers of ``stage_channels[s]`` channels.

    ``forward(image (B, 1, D, H, W))`` → the stage outputs ``[(B, C_s, D / 2^s, H / 2^s, W / 2^s)]``; D, H, W must
    be multiples of ``2^(stages - 1)`` (:attr:`input_multiple`).
    """

    def __init__(self, stage_channels: tuple[int, ...], stage_convs: tuple[int, ...], norm: str = "instance") -> None:
        super().__init__()
        if len(stage_channels) < 1 or len(stage_channels) != len(stage_convs):
            raise ValueError(f"encoder: one conv count per stage, got channels {stage_channels} and convs "
                             f"{stage_convs}")
        if any(int(c) < 1 for c in stage_channels) or any(int(n) < 1 for n in stage_convs):
            raise ValueError(f"encoder channels and conv counts must be >= 1, got {stage_channels}, {stage_convs}")
        stages = []
        previous = 1
        for index, (channels, n_convs) in enumerate(zip(stage_channels, stage_convs)):
            layers = [conv_norm_act(previous, int(channels), norm, stride=1 if index == 0 else 2)]
            layers += [conv_norm_act(int(channels), int(channels), norm) for _ in range(int(n_convs) - 1)]
            stages.append(nn.Sequential(*layers))
            previous = int(channels)
        self.stages = nn.ModuleList(stages)
        self.stage_channels = tuple(int(c) for c in stage_channels)
        self.input_multiple = 2 ** (len(stage_channels) - 1)

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        if image.dim() != 5 or image.shape[1] != 1:
            raise ValueError(f"encoder expects an image of shape (B, 1, D, H, W), got {tuple(image.shape)}")
        if any(side % self.input_multiple for side in image.shape[2:]):
            raise ValueError(f"encoder input sides {tuple(image.shape[2:])} must be multiples of {self.input_multiple}")
        outputs = []
        features = image
        for stage in self.stages:
            features = stage(features)
            outputs.append(features)
        return outputs
