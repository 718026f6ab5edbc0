"""The Implicit U-Net (spec ``implicit_unet.md``) and the U-Net with the same encoder (its baseline).

Frames: a patch is a ``(B, 1, P, P, P)`` tensor in (D, H, W) order; query points are **patch voxel coordinates**
``(B, N, 3)`` in the same (d, h, w) order, voxel centres at integers ``0 .. P - 1`` (continuous values allowed).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from implicitseg.config import ImplicitUnetModelConfig
from implicitseg.config.implicit_unet import DECODERS, GATHER_MODES
from implicitseg.models.decoders import DeepSdfDecoder
from implicitseg.models.encoders import StridedConvEncoder, conv_norm_act



def positional_encoding(points_normalised: torch.Tensor, n_frequencies: int) -> torch.Tensor:
    """``sin`` and ``cos`` of ``2^k π x`` for k = 0 .. ``n_frequencies`` - 1 of each coordinate in [-1, 1]:
    (..., 3) → (..., 6 · n_frequencies), all sines first."""
    scales = math.pi * 2.0 ** torch.arange(int(n_frequencies), device=points_normalised.device,
                                           dtype=points_normalised.dtype)
    angles = (points_normalised[..., None] * scales).flatten(-2)
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)


def gather_stage_features(stages: list[torch.Tensor], points_patch_voxel: torch.Tensor, mode: str) -> torch.Tensor:
    """The features of every stage at each point, concatenated: (B, N, sum C_s).

    Stage ``s`` (grid ``P / 2^s``) is read at ``p / 2^s``: ``nearest`` takes the cell ``floor(p / 2^s)`` (the spec's
    lookup), ``trilinear`` interpolates between the cells' centres (cell j of a stride-2 stage is centred on input
    voxel ``2^s j``). Points outside the patch read its border.
    """
    if mode not in GATHER_MODES:
        raise ValueError(f"gather must be one of {GATHER_MODES}, got {mode!r}")
    batch, count, _ = points_patch_voxel.shape
    gathered = []
    for index, stage in enumerate(stages):
        sizes = torch.tensor(stage.shape[2:], device=points_patch_voxel.device)
        position = points_patch_voxel / 2.0 ** index
        if mode == "nearest":
            cell = torch.minimum(torch.clamp(torch.floor(position), min=0).long(), sizes - 1)
            flat = (cell[..., 0] * sizes[1] + cell[..., 1]) * sizes[2] + cell[..., 2]  # (B, N)
            values = stage.flatten(2).gather(2, flat[:, None, :].expand(-1, stage.shape[1], -1))
        else:
            # grid_sample wants (x, y, z) = (w, h, d), normalised with align_corners=True
            normalised = 2.0 * position / (sizes - 1).clamp(min=1).to(position.dtype) - 1.0
            grid = normalised.flip(-1)[:, :, None, None, :].to(stage.dtype)  # (B, N, 1, 1, 3)
            values = F.grid_sample(stage, grid, mode="bilinear", padding_mode="border",
                                   align_corners=True).reshape(batch, stage.shape[1], count)
        gathered.append(values.transpose(1, 2))
    return torch.cat(gathered, dim=-1)


class ImplicitUnet(nn.Module):
    """Encoder → features gathered at query points from every stage + positional encoding of the point's patch
    coordinates (normalised to [-1, 1]) → DeepSDF decoder → class logits.

    ``forward(image (B, 1, P, P, P), points_patch_voxel (B, N, 3))`` → logits (B, N, C); :meth:`encode` and
    :meth:`decode` split it so that one encoding serves many point batches.
    """

    def __init__(self, config: ImplicitUnetModelConfig, n_classes: int) -> None:
        super().__init__()
        if config.gather not in GATHER_MODES:
            raise ValueError(f"model.gather must be one of {GATHER_MODES}, got {config.gather!r}")
        self.encoder = StridedConvEncoder(tuple(config.stage_channels), tuple(config.stage_convs), config.norm)
        self.gather = config.gather
        self.n_frequencies = int(config.n_frequencies)
        in_features = sum(self.encoder.stage_channels) + 6 * self.n_frequencies
        self.decoder = DeepSdfDecoder(in_features, int(n_classes), hidden=config.hidden,
                                      n_hidden_layers=config.n_hidden_layers, skip_layer=config.skip_layer,
                                      dropout=config.dropout)
        self.n_classes = int(n_classes)

    def encode(self, image: torch.Tensor) -> list[torch.Tensor]:
        """(B, 1, P, P, P) → the encoder's stage outputs."""
        return self.encoder(image)

    def decode(self, stages: list[torch.Tensor], points_patch_voxel: torch.Tensor) -> torch.Tensor:
        """Class logits (B, N, C) at ``points_patch_voxel`` (B, N, 3) of the patch whose encoding is ``stages``."""
        patch_sides = torch.tensor(stages[0].shape[2:], device=points_patch_voxel.device,
                                   dtype=points_patch_voxel.dtype)
        normalised = 2.0 * points_patch_voxel / (patch_sides - 1).clamp(min=1) - 1.0
        features = torch.cat([gather_stage_features(stages, points_patch_voxel, self.gather),
                              positional_encoding(normalised, self.n_frequencies)], dim=-1)
        return self.decoder(features)

    def forward(self, image: torch.Tensor, points_patch_voxel: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(image), points_patch_voxel)


class ConvDecoderUnet(nn.Module):
    """The same encoder with a U-Net's convolutional decoder (nnU-Net style): per stage from the deepest, a
    2×2×2 transposed convolution up, concatenation of the encoder's skip, two :func:`conv_norm_act`; a 1×1×1
    convolution to class logits. ``forward(image (B, 1, P, P, P))`` → logits (B, C, P, P, P)."""

    def __init__(self, config: ImplicitUnetModelConfig, n_classes: int) -> None:
        super().__init__()
        self.encoder = StridedConvEncoder(tuple(config.stage_channels), tuple(config.stage_convs), config.norm)
        channels = self.encoder.stage_channels
        self.up = nn.ModuleList(nn.ConvTranspose3d(channels[s + 1], channels[s], 2, stride=2)
                                for s in range(len(channels) - 1))
        self.merge = nn.ModuleList(nn.Sequential(conv_norm_act(2 * channels[s], channels[s], config.norm),
                                                 conv_norm_act(channels[s], channels[s], config.norm))
                                   for s in range(len(channels) - 1))
        self.output_layer = nn.Conv3d(channels[0], int(n_classes), 1)
        self.n_classes = int(n_classes)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        stages = self.encoder(image)
        features = stages[-1]
        for s in reversed(range(len(stages) - 1)):
            features = self.merge[s](torch.cat([self.up[s](features), stages[s]], dim=1))
        return self.output_layer(features)


def build_patch_network(config: ImplicitUnetModelConfig, n_classes: int) -> ImplicitUnet | ConvDecoderUnet:
    """The network ``config.decoder`` names, with ``n_classes`` outputs (at least 2: background and one label)."""
    if int(n_classes) < 2:
        raise ValueError(f"a segmentation network needs at least 2 classes, got {n_classes}")
    if config.decoder == "implicit":
        return ImplicitUnet(config, n_classes)
    if config.decoder == "convolutional":
        return ConvDecoderUnet(config, n_classes)
    raise ValueError(f"model.decoder must be one of {DECODERS}, got {config.decoder!r}")
