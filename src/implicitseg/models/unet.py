"""The 3D U-Net of the baselines and the ROI detector: MONAI's ``UNet`` (residual units), two output classes."""

from __future__ import annotations

from monai.networks.nets import UNet
from torch import nn

from implicitseg.config import UnetModelConfig
from implicitseg.errors import InputError

N_CLASSES = 2
"""Background and foreground (the label > 0)."""


def build_unet(config: UnetModelConfig) -> nn.Module:
    """MONAI ``UNet(spatial_dims=3, in_channels=1, out_channels=2)`` as ``config`` describes; input (B, 1, D, H, W)
    with D, H, W divisible by the product of ``strides``, output logits (B, 2, D, H, W)."""
    if len(config.strides) != len(config.channels) - 1:
        raise InputError(f"U-Net config: {len(config.channels)} channel entries need {len(config.channels) - 1} "
                         f"strides, got {len(config.strides)}")
    return UNet(spatial_dims=3, in_channels=1, out_channels=N_CLASSES, channels=tuple(config.channels),
                strides=tuple(config.strides), num_res_units=config.num_res_units, norm=config.norm,
                dropout=config.dropout)


def input_multiple(config: UnetModelConfig) -> int:
    """Input sides must be multiples of this (the product of the strides)."""
    multiple = 1
    for stride in config.strides:
        multiple *= int(stride)
    return multiple
