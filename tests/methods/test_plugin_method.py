"""A fifth method, defined here and not in implicitseg (its config, network and methods entry), made known through
an entry point as another installed package would, and run through ``prepare``, ``train`` and ``predict`` from the
CLI: nothing in the pipeline, the CLI or the training code names it."""

import csv
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from implicitseg.config import MethodConfig, RoiConfig, UnetConfig
from implicitseg.io.images import read_image
from implicitseg.methods import get_method, register_method
from implicitseg.methods.base import Method

TINY_METHOD = '''
"""tiny: two convolutions on the NUDF ROI, trained with the U-Net's loss on its prepared data."""

import time
from dataclasses import dataclass, field
from functools import partial
from typing import ClassVar

import torch

from implicitseg.config import AugmentConfig, RoiConfig, RoiMethodConfig, VoxelTrainConfig
from implicitseg.data.datasets import LabelledVolumeDataset, split_cases_of
from implicitseg.data.prepare import prepare_dataset
from implicitseg.data.prepare_labels import LABEL_MANIFEST_ENTRIES, prepare_roi_label_case
from implicitseg.inference.roi import foreground_probability
from implicitseg.methods.base import Method, RoiPrediction
from implicitseg.training.module import SegmentationLightningModule
from implicitseg.training.run import TrainingRecipe


@dataclass
class TinyModelConfig:
    channels: int = 8


@dataclass
class TinyConfig(RoiMethodConfig):
    DATA_SECTIONS: ClassVar[tuple[str, ...]] = ("roi", "intensity")
    NETWORK_SECTIONS: ClassVar[tuple[str, ...]] = ("model",)
    PREDICT_SECTIONS: ClassVar[tuple[str, ...]] = ("level",)

    method: str = "tiny"
    preset: str = "tiny16"
    model: TinyModelConfig = field(default_factory=TinyModelConfig)
    train: VoxelTrainConfig = field(default_factory=VoxelTrainConfig)
    level: float = 0.5


class TinyModule(SegmentationLightningModule):
    config_class = TinyConfig

    @staticmethod
    def build_model(config):
        channels = config.model.channels
        return torch.nn.Sequential(torch.nn.Conv3d(1, channels, 3, padding=1), torch.nn.ReLU(),
                                   torch.nn.Conv3d(channels, 2, 3, padding=1))


def dataset(prep_dir, split, config):
    manifest = split_cases_of(prep_dir, split, config.method, config.input_res(), config.preset)
    return LabelledVolumeDataset(prep_dir, manifest.splits[split], res=config.input_res())


def predict_roi(model, config, roi, roi_image_zyx, *, device, seed=0):
    start = time.perf_counter()
    probability_zyx = foreground_probability(model.eval(), roi_image_zyx, device)
    return RoiPrediction(timings={"network_s": time.perf_counter() - start}, counts={},
                         probability_zyx=probability_zyx, probability_level=config.level)


PRESETS = {"tiny16": TinyConfig(roi=RoiConfig(size_mm=70.0, res=16),
                                train=VoxelTrainConfig(learning_rate=1e-2, batch_size=2,
                                                       augment=AugmentConfig(probability=0.0)))}

METHOD = Method(
    name="tiny", description="two convolutions on the ROI", config_class=TinyConfig, presets=PRESETS,
    preset_for_res=lambda res: "tiny16",
    prepare=partial(prepare_dataset, prepare_one=prepare_roi_label_case, manifest_entries=LABEL_MANIFEST_ENTRIES),
    recipe=TrainingRecipe(method="tiny", module_class=TinyModule, dataset=dataset),
    predict_roi=predict_roi, needs_label=True)
'''


@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory):
    """An environment in which an installed package ``tiny-method`` declares the method ``tiny``."""
    site = tmp_path_factory.mktemp("site")
    (site / "tiny_method.py").write_text(textwrap.dedent(TINY_METHOD))
    info = site / "tiny_method-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tiny-method\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[implicitseg.methods]\ntiny = tiny_method:METHOD\n")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
            "OMP_NUM_THREADS": "1"}


def _cli(env, *arguments):
    return subprocess.run([sys.executable, "-m", "implicitseg.cli", *map(str, arguments)], capture_output=True,
                          text=True, encoding="utf-8", env=env, timeout=300)


def _ok(result):
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_a_method_from_another_package_runs_through_prepare_train_and_predict(plugin_env, tmp_path):
    dataset, prep, run, out = tmp_path / "dataset", tmp_path / "prep", tmp_path / "run", tmp_path / "pred"
    _ok(_cli(plugin_env, "synth", dataset, "--kind", "organ", "--cases", 5, "--test-cases", 1, "--seed", 3))
    _ok(_cli(plugin_env, "prepare", dataset, "--method", "tiny", "--out", prep))
    assert json.loads((prep / "manifest.json").read_text())["res"] == 16
    _ok(_cli(plugin_env, "train", prep, "--out", run, "--max-epochs", 25))
    with open(next((run / "logs" / "csv").rglob("metrics.csv"))) as handle:
        losses = [float(row["train_loss_epoch"]) for row in csv.DictReader(handle) if row.get("train_loss_epoch")]
    assert len(losses) == 25 and np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3]), losses

    listing = json.loads((dataset / "dataset.json").read_text())
    case = listing["training"][0]
    _ok(_cli(plugin_env, "predict", run, dataset / case["image"], "--out", out, "--roi-label", dataset / case["label"],
             "--set", "level=0.4"))
    record = json.loads(next(out.glob("*/prediction.json")).read_text())
    assert record["method"] == "tiny" and record["overrides"] == {"level": 0.4}
    image = read_image(dataset / case["image"])
    labelmap = read_image(record["labelmap"])
    truth = read_image(dataset / case["label"]).array > 0
    assert labelmap.shape == image.shape and np.allclose(labelmap.affine_lps, image.affine_lps)
    # a briefly trained net finds most of the organ on the image grid
    # (measured: 0.92 of the organ's voxels found, 0.87 of the found ones in it)
    assert (labelmap.array[truth] > 0).mean() > 0.7 and truth[labelmap.array > 0].mean() > 0.6
    assert os.path.getsize(record["mesh"]) > 0

    refused = _cli(plugin_env, "predict", run, dataset / case["image"], "--out", out, "--roi-label",
                   dataset / case["label"], "--set", "model.channels=4")
    assert refused.returncode == 2 and "may not change for a trained run" in refused.stderr
    unknown = _cli(plugin_env, "prepare", dataset, "--method", "nosuch", "--out", tmp_path / "other")
    assert unknown.returncode == 2 and "tiny" in unknown.stderr  # the table of methods lists it


def test_register_method_makes_a_method_known_in_process_and_refuses_a_taken_name():
    unet = get_method("unet")
    with pytest.raises(Exception, match="exists already"):
        register_method(Method(name="unet", description="another", config_class=UnetConfig, presets={},
                               preset_for_res=unet.preset_for_res, prepare=unet.prepare, recipe=unet.recipe))


def test_a_method_declaration_that_does_not_hold_together_is_refused_when_built():
    unet = get_method("unet")
    common = dict(name="broken", description="", config_class=UnetConfig, preset_for_res=unet.preset_for_res,
                  prepare=unet.prepare)
    with pytest.raises(TypeError, match="give train and load, or a recipe"):
        Method(presets={}, **common)
    with pytest.raises(TypeError, match="not a UnetConfig"):
        Method(presets={"x": get_method("nudf").presets["nudf64"]}, recipe=unet.recipe, **common)
    with pytest.raises(TypeError, match="need predict_image"):
        Method(presets={}, recipe=unet.recipe, image_options=frozenset({"frames"}), predict_roi=unet.predict_roi,
               **common)
    with pytest.raises(TypeError, match="unknown image_options"):
        Method(presets={}, recipe=unet.recipe, image_options=frozenset({"colour"}),
               predict_image=get_method("nisf").predict_image, **common)


def test_a_config_class_must_give_every_field_one_role():
    from dataclasses import dataclass

    @dataclass
    class Forgetful(MethodConfig):
        DATA_SECTIONS = ("roi",)
        roi: RoiConfig = None  # type: ignore[assignment]
        extra: int = 0

    with pytest.raises(TypeError, match="extra not declared"):
        Forgetful()
