"""The 3D U-Net baseline's and the ROI detector's configs (MONAI U-Net on a ROI, on a whole image)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from implicitseg.config.base import MethodConfig, RoiMethodConfig
from implicitseg.config.sections import IntensityConfig, UnetModelConfig, VoxelTrainConfig


@dataclass(kw_only=True)
class UnetConfig(RoiMethodConfig):
    """3D U-Net baseline on the same ROI as NUDF; its surface is the isosurface at ``mesh_level`` of the foreground
    probability, upsampled to the original image grid (NUDF paper's baseline)."""

    DATA_SECTIONS: ClassVar[tuple[str, ...]] = ("roi", "intensity")
    NETWORK_SECTIONS: ClassVar[tuple[str, ...]] = ("model",)
    PREDICT_SECTIONS: ClassVar[tuple[str, ...]] = ("mesh_level",)

    method: str = "unet"
    preset: str = "unet64"
    model: UnetModelConfig = field(default_factory=UnetModelConfig)
    train: VoxelTrainConfig = field(default_factory=VoxelTrainConfig)
    mesh_level: float = 0.5


@dataclass(kw_only=True)
class DetectorGridConfig:
    """The ROI detector's input: the image's world-axis bounding cube (side = its largest extent + ``margin_mm``)
    resampled to ``res``³ isotropic voxels."""

    res: int = 64
    margin_mm: float = 0.0


@dataclass(kw_only=True)
class RoiDetectorConfig(MethodConfig):
    """Coarse whole-image U-Net whose foreground's centre of mass is the ROI centre (NUDF spec, "Region of interest");
    ``--res`` sets its grid's voxels per side."""

    DATA_SECTIONS: ClassVar[tuple[str, ...]] = ("grid", "intensity")
    NETWORK_SECTIONS: ClassVar[tuple[str, ...]] = ("model",)
    PREDICT_SECTIONS: ClassVar[tuple[str, ...]] = ("threshold",)

    method: str = "roi"
    preset: str = "roi64"
    grid: DetectorGridConfig = field(default_factory=DetectorGridConfig)
    intensity: IntensityConfig = field(default_factory=IntensityConfig)
    model: UnetModelConfig = field(default_factory=lambda: UnetModelConfig(channels=(16, 32, 64, 64)))
    train: VoxelTrainConfig = field(default_factory=VoxelTrainConfig)
    threshold: float = 0.5

    def input_res(self) -> int:
        return int(self.grid.res)

    def set_input_size(self, res: int | None = None, roi_mm: float | None = None) -> None:
        super().set_input_size(None, roi_mm)
        if res is not None:
            self.grid.res = int(res)
