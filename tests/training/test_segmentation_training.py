"""Training the voxel methods (U-Net baseline, ROI detector) through the shared trainer: they learn, resume,
and load back only as what they are."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from implicitseg.config import UnetModelConfig
from implicitseg.errors import InputError
from implicitseg.inference.roi import foreground_probability
from implicitseg.methods import nudf, roi_detector, unet

RES = 16


def write_ball_prep(prep_dir: Path, method: str, preset: str, n_cases: int = 4, seed: int = 0) -> Path:
    """Bright balls of varying centre and radius in noise, labelled 1 inside (``image.npy``, ``label.npy``)."""
    rng = np.random.default_rng(seed)
    axis = np.linspace(-1.0, 1.0, RES)
    z, y, x = np.meshgrid(axis, axis, axis, indexing="ij")
    cases = [f"ball{i}" for i in range(n_cases)]
    for case in cases:
        center, radius = rng.uniform(-0.3, 0.3, size=3), rng.uniform(0.3, 0.5)
        inside = np.sqrt((x - center[0]) ** 2 + (y - center[1]) ** 2 + (z - center[2]) ** 2) < radius
        (prep_dir / case).mkdir(parents=True)
        np.save(prep_dir / case / "image.npy", (inside + rng.normal(0, 0.1, inside.shape)).astype(np.float32))
        np.save(prep_dir / case / "label.npy", inside.astype(np.uint8))
    manifest = {"method": method, "preset": preset, "res": RES, "roi_mm": 70.0, "cases": cases,
                "splits": {"train": cases[:-1], "val": cases[-1:]}, "config": {}}
    (prep_dir / "manifest.json").write_text(json.dumps(manifest))
    return prep_dir


def tiny_unet_config():
    config = unet.preset_config("unet-demo")
    config.roi.res = RES
    config.model = UnetModelConfig(channels=(8, 16, 32), strides=(2, 2), num_res_units=1)
    config.train.batch_size = 3
    config.train.learning_rate = 1e-2
    return config


@pytest.fixture(scope="module")
def unet_run(tmp_path_factory) -> tuple[Path, Path, dict]:
    root = tmp_path_factory.mktemp("unet")
    prep = write_ball_prep(root / "prep", "unet", "unet-demo")
    summary = unet.METHOD.train(prep, root / "run", tiny_unet_config(), max_epochs=30, progress=False,
                                accelerator="cpu")
    return prep, root / "run", summary


def test_unet_learns_to_segment_and_loads_back(unet_run) -> None:
    prep, run, summary = unet_run
    assert summary["epochs_completed"] == 30 and (run / "checkpoints" / "best.ckpt").is_file()
    model, config = unet.METHOD.load(run, "best", torch.device("cpu"))
    assert config.method == "unet" and config.model.channels == (8, 16, 32)
    image, label = np.load(prep / "ball3" / "image.npy"), np.load(prep / "ball3" / "label.npy") > 0  # validation case
    predicted = foreground_probability(model, image, torch.device("cpu")) > 0.5
    dice = 2 * np.sum(predicted & label) / (predicted.sum() + label.sum())
    assert dice > 0.85


def test_unet_run_resumes_and_is_refused_as_another_method(unet_run, tmp_path) -> None:
    prep, run, _ = unet_run
    import shutil

    copy = Path(shutil.copytree(run, tmp_path / "run"))
    summary = unet.METHOD.train(prep, copy, tiny_unet_config(), max_epochs=31, resume=True, progress=False,
                                accelerator="cpu")
    assert summary["epochs_this_session"] == 1 and summary["epochs_completed"] == 31
    with pytest.raises(InputError, match="a run of method 'unet', not 'nudf'"):
        nudf.METHOD.load(run, "best", torch.device("cpu"))
    with pytest.raises(InputError, match="a run of method 'unet', not 'roi'"):
        roi_detector.METHOD.load(run, "best", torch.device("cpu"))
    with pytest.raises(InputError, match="prepared for method 'unet', not 'roi'"):
        config = roi_detector.preset_config("roi32")
        config.grid.res = RES
        roi_detector.METHOD.train(prep, tmp_path / "roi_run", config, max_epochs=1, progress=False)


def test_detector_trains_on_its_own_prepared_grid(tmp_path) -> None:
    prep = write_ball_prep(tmp_path / "prep", "roi", "roi32", n_cases=3)
    config = roi_detector.preset_config("roi32")
    config.grid.res = RES
    config.model = UnetModelConfig(channels=(8, 16), strides=(2,), num_res_units=1)
    summary = roi_detector.METHOD.train(prep, tmp_path / "run", config, max_epochs=2, progress=False,
                                        accelerator="cpu")
    assert summary["epochs_completed"] == 2
    model, loaded = roi_detector.METHOD.load(tmp_path / "run", "last", torch.device("cpu"))
    assert loaded.grid.res == RES and model(torch.zeros(1, 1, RES, RES, RES)).shape == (1, 2, RES, RES, RES)
