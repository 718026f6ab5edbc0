"""The 3D U-Net baseline (NUDF paper's comparison): MONAI U-Net on the NUDF ROI, Dice + cross-entropy on the closed
labelmap; its surface is the foreground probability upsampled to the original image grid and isosurfaced."""

from __future__ import annotations

import time
from functools import partial

import numpy as np
import torch

from implicitseg.config import AugmentConfig, RoiConfig, UnetConfig, UnetModelConfig, VoxelTrainConfig
from implicitseg.data.datasets import LabelledVolumeDataset
from implicitseg.data.prepare_labels import prepare_roi_label_case, prepare_unet_dataset
from implicitseg.geometry.frames import Roi
from implicitseg.inference.roi import foreground_probability
from implicitseg.methods.base import Method, RoiPrediction, copy_preset, preset_chooser
from implicitseg.training.module import SegmentationLightningModule
from implicitseg.training.run import TrainingRecipe


def _preset(name: str, res: int, **train: object) -> UnetConfig:
    return UnetConfig(preset=name, roi=RoiConfig(size_mm=70.0, res=res), train=VoxelTrainConfig(**train))


PRESETS: dict[str, UnetConfig] = {
    # Four levels of 32-64-128-128 channels: the NUDF 64 encoder's widths (stem 32, levels 64, 128, 128).
    "unet64": _preset("unet64", 64),
    "unet128": _preset("unet128", 128),
    "unet256": _preset("unet256", 256),
    # The CPU demo's counterpart of nudf-demo: 32³ input, the nudf-demo encoder's widths (16, 32, 64, 64).
    "unet-demo": UnetConfig(preset="unet-demo", roi=RoiConfig(size_mm=70.0, res=32),
                            model=UnetModelConfig(channels=(16, 32, 64, 64)),
                            train=VoxelTrainConfig(early_stopping_patience=1000,
                                                   augment=AugmentConfig(translate_voxels=5.0))),
}


preset_config = partial(copy_preset, PRESETS)
"""``preset_config(name)``: a fresh copy of preset ``name``."""
preset_for_res = preset_chooser(PRESETS, "unet", "U-Net")
"""``preset_for_res(res)``: the preset for an input resolution (64 when none is given)."""


def predict_roi(model: torch.nn.Module, config: UnetConfig, roi: Roi, roi_image_zyx: np.ndarray, *,
                device: torch.device, seed: int = 0) -> RoiPrediction:
    """Foreground probability on the ROI grid (res³, (Z, Y, X)); the pipeline upsamples and meshes it."""
    start = time.perf_counter()
    probability_zyx = foreground_probability(model.eval(), roi_image_zyx, device)
    return RoiPrediction(timings={"network_s": time.perf_counter() - start},
                         counts={"n_foreground_roi_voxels": int((probability_zyx > config.mesh_level).sum())},
                         probability_zyx=probability_zyx, probability_level=config.mesh_level)


RECIPE = TrainingRecipe(method="unet", module_class=SegmentationLightningModule,
                        dataset=LabelledVolumeDataset.from_config)

METHOD = Method(
    name="unet",
    description="3D U-Net baseline (MONAI) on the NUDF ROI; labelmap + marching-cubes mesh on the image grid",
    config_class=UnetConfig,
    presets=PRESETS,
    preset_for_res=preset_for_res,
    prepare=partial(prepare_unet_dataset, prepare_one=prepare_roi_label_case),
    recipe=RECIPE,
    predict_roi=predict_roi,
    needs_label=True,
)
