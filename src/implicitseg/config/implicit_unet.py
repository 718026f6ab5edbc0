"""The Implicit U-Net's config (spec ``implicit_unet.md``): working grid and patches, network, point samples,
training, sparse inference."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from implicitseg.config.base import MethodConfig
from implicitseg.config.schema import choice
from implicitseg.config.sections import IntensityConfig, LabelsConfig, OptimisationConfig

NORMS = ("instance", "batch")
"""``model.norm``: the encoder's normalisation."""
DECODERS = ("implicit", "convolutional")
"""``model.decoder``: the implicit decoder, or the same encoder's U-Net decoder."""
GATHER_MODES = ("nearest", "trilinear")
"""``model.gather``: how stage features are read at a point."""


@dataclass(kw_only=True)
class VolumeGridConfig:
    """Whole images as patch methods see them: resampled along their own axes to isotropic ``spacing_mm`` voxels
    (the working grid); training and sliding-window inference take cubes of ``patch_voxels`` per side, a
    ``positive_fraction`` of training patches centred on a labelled voxel (Implicit U-Net spec, "Training")."""

    spacing_mm: float = 1.0
    patch_voxels: int = 96
    positive_fraction: float = 1.0 / 3.0


@dataclass(kw_only=True)
class ImplicitUnetModelConfig:
    """Implicit U-Net (spec "Network"): an nnU-Net-style encoder of stride-2 stages (``stage_channels``; stage s
    holds ``stage_convs[s]`` conv-norm-LeakyReLU layers), and either the implicit decoder (``decoder:
    implicit``: features gathered from every stage at a point, ``gather`` ``nearest`` or ``trilinear``, plus a
    positional encoding of ``n_frequencies`` octaves, into a DeepSDF MLP) or a U-Net's convolutional decoder
    (``decoder: convolutional``: the same encoder's baseline)."""

    stage_channels: tuple[int, ...] = (32, 64, 128, 256)
    stage_convs: tuple[int, ...] = (2, 2, 4, 4)
    norm: str = choice("instance", NORMS)
    decoder: str = choice("implicit", DECODERS)
    gather: str = choice("nearest", GATHER_MODES)
    n_frequencies: int = 10
    hidden: int = 512
    n_hidden_layers: int = 8
    skip_layer: int = 4
    dropout: float = 0.2


@dataclass(kw_only=True)
class PointSamplingConfig:
    """Points per training patch for the implicit decoder (spec "Training"): ``boundary_fraction`` of them at
    label-boundary voxels displaced by N(0, ``boundary_sigma_voxels``), the rest uniform in the patch."""

    points_per_patch: int = 30_000
    boundary_fraction: float = 0.5
    boundary_sigma_voxels: float = 5.0


@dataclass(kw_only=True)
class PatchTrainConfig(OptimisationConfig):
    """Optimisation of patch-based segmentation (AdamW, Dice + cross-entropy). An epoch draws
    ``patches_per_case`` patches from each training case; validation uses fixed patches."""

    batch_size: int = 2
    weight_decay: float = 1e-2
    patches_per_case: int = 4


@dataclass(kw_only=True)
class SparseInferenceConfig:
    """Coarse-to-fine inference (spec "Inference"): the implicit decoder first labels every ``coarse_stride``-th
    voxel of the output grid, then every voxel within ``band_voxels`` of a change of label; a sliding window of
    patches with ``overlap`` and Gaussian weighting covers the image; ``smoothing_voxels`` is the side of the final
    average filter of the class probabilities (1: none). ``dense: true`` evaluates every voxel (for checks)."""

    coarse_stride: int = 4
    band_voxels: int = 4
    overlap: float = 0.3
    smoothing_voxels: int = 3
    batch_points: int = 65_536
    dense: bool = False


@dataclass(kw_only=True)
class ImplicitUnetConfig(MethodConfig):
    """Implicit U-Net on whole images (or, with ``model.decoder: convolutional``, the U-Net with the same encoder);
    ``--res`` sets the patch side in voxels."""

    DATA_SECTIONS: ClassVar[tuple[str, ...]] = ("grid", "intensity", "labels", "sampling")
    NETWORK_SECTIONS: ClassVar[tuple[str, ...]] = ("model",)
    PREDICT_SECTIONS: ClassVar[tuple[str, ...]] = ("inference",)

    method: str = "implicit-unet"
    preset: str = "iunet"
    grid: VolumeGridConfig = field(default_factory=VolumeGridConfig)
    intensity: IntensityConfig = field(default_factory=lambda: IntensityConfig(window=(-160.0, 240.0), scale=100.0))
    labels: LabelsConfig = field(default_factory=LabelsConfig)
    model: ImplicitUnetModelConfig = field(default_factory=ImplicitUnetModelConfig)
    sampling: PointSamplingConfig = field(default_factory=PointSamplingConfig)
    train: PatchTrainConfig = field(default_factory=PatchTrainConfig)
    inference: SparseInferenceConfig = field(default_factory=SparseInferenceConfig)

    def input_res(self) -> int:
        return int(self.grid.patch_voxels)

    def set_input_size(self, res: int | None = None, roi_mm: float | None = None) -> None:
        super().set_input_size(None, roi_mm)
        if res is not None:
            self.grid.patch_voxels = int(res)
