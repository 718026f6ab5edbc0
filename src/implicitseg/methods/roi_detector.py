"""The ROI detector (NUDF spec, "Region of interest"): a coarse 3D U-Net on the whole image, whose largest
foreground component's centre of mass centres the ROI of another method's prediction (``predict --roi-run``)."""

from __future__ import annotations

from functools import partial

from implicitseg.config import AugmentConfig, DetectorGridConfig, RoiDetectorConfig, UnetModelConfig, VoxelTrainConfig
from implicitseg.data.datasets import LabelledVolumeDataset
from implicitseg.data.prepare_labels import prepare_detector_case, prepare_unet_dataset
from implicitseg.methods.base import Method, copy_preset, preset_chooser
from implicitseg.training.module import DetectorLightningModule
from implicitseg.training.run import TrainingRecipe

PRESETS: dict[str, RoiDetectorConfig] = {
    "roi64": RoiDetectorConfig(preset="roi64", grid=DetectorGridConfig(res=64),
                               train=VoxelTrainConfig(augment=AugmentConfig(translate_voxels=6.0))),
    # 32³: about 4 mm voxels on a 130 mm image; the CPU demo's detector.
    "roi32": RoiDetectorConfig(preset="roi32", grid=DetectorGridConfig(res=32),
                               model=UnetModelConfig(channels=(16, 32, 64, 64)),
                               train=VoxelTrainConfig(early_stopping_patience=1000,
                                                      augment=AugmentConfig(translate_voxels=3.0))),
}


preset_config = partial(copy_preset, PRESETS)
"""``preset_config(name)``: a fresh copy of preset ``name``."""
preset_for_res = preset_chooser(PRESETS, "roi", "ROI detector")
"""``preset_for_res(res)``: the preset for an input resolution (64 when none is given)."""


RECIPE = TrainingRecipe(method="roi", module_class=DetectorLightningModule, dataset=LabelledVolumeDataset.from_config)

METHOD = Method(
    name="roi",
    description="ROI detector: coarse whole-image 3D U-Net; its foreground's centre centres `predict --roi-run`",
    config_class=RoiDetectorConfig,
    presets=PRESETS,
    preset_for_res=preset_for_res,
    prepare=partial(prepare_unet_dataset, prepare_one=prepare_detector_case),
    recipe=RECIPE,
    needs_label=True,
)
