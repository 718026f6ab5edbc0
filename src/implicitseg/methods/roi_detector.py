"""The ROI detector (NUDF spec, "Region of interest"): a coarse 3D U-Net on the whole image, whose largest
foreground component's centre of mass centres the ROI of another method's prediction (``predict --roi-run``)."""

from __future__ import annotations

import copy
from functools import partial

from implicitseg.config import AugmentConfig, DetectorGridConfig, RoiDetectorConfig, UnetModelConfig, VoxelTrainConfig
from implicitseg.data.datasets import LabelledVolumeDataset
from implicitseg.data.prepare import prepare_dataset
from implicitseg.data.prepare_labels import LABEL_MANIFEST_ENTRIES, prepare_detector_case
from implicitseg.errors import InputError
from implicitseg.methods import Method
from implicitseg.training.module import DetectorLightningModule
from implicitseg.training.run import TrainingRecipe, load_model, train_run

PRESETS: dict[str, RoiDetectorConfig] = {
    "roi64": RoiDetectorConfig(preset="roi64", grid=DetectorGridConfig(res=64),
                               train=VoxelTrainConfig(augment=AugmentConfig(translate_voxels=6.0))),
    # 32³: about 4 mm voxels on a 130 mm image; the CPU demo's detector.
    "roi32": RoiDetectorConfig(preset="roi32", grid=DetectorGridConfig(res=32),
                               model=UnetModelConfig(channels=(16, 32, 64, 64)),
                               train=VoxelTrainConfig(early_stopping_patience=1000,
                                                      augment=AugmentConfig(translate_voxels=3.0))),
}


def preset_config(name: str) -> RoiDetectorConfig:
    """A fresh copy of preset ``name``."""
    return copy.deepcopy(PRESETS[name])


def preset_for_res(res: int | None) -> str:
    """The detector preset for a grid resolution (64 when none is given)."""
    name = f"roi{res or 64}"
    if name not in PRESETS:
        raise InputError(f"no ROI detector preset for --res {res}; the presets take 32 or 64")
    return name


RECIPE = TrainingRecipe(method="roi", module_class=DetectorLightningModule, dataset=LabelledVolumeDataset.from_config)

METHOD = Method(
    name="roi",
    description="ROI detector: coarse whole-image 3D U-Net; its foreground's centre centres `predict --roi-run`",
    config_class=RoiDetectorConfig,
    presets=PRESETS,
    preset_for_res=preset_for_res,
    prepare=partial(prepare_dataset, prepare_one=prepare_detector_case, manifest_entries=LABEL_MANIFEST_ENTRIES),
    train=partial(train_run, RECIPE),
    load=partial(load_model, RECIPE),
    predict_roi=None,
)
