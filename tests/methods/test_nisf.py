"""NISF: coordinates in physical space, prepare / train / fit / predict through the pipeline on the cine phantom,
and labels sampled on a plane given in world mm where the phantom says they are."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from implicitseg import methods
from implicitseg.config import CanonicalConfig, LabelsConfig, NisfConfig, config_from_dict
from implicitseg.data.nisf import NisfSubjectDataset, normalised_frames
from implicitseg.data.synthetic import write_synthetic_dataset
from implicitseg.data.synthetic.cardiac import CardiacPhantom
from implicitseg.errors import InputError
from implicitseg.geometry.frames import image_center_world_mm, index_to_world, nisf_coordinates
from implicitseg.io.configs import save_config
from implicitseg.io.images import read_image_series
from implicitseg.methods import nisf
from implicitseg.methods.base import copy_preset
from implicitseg.methods.pipeline import run_predict, run_prepare, run_train
from implicitseg.methods.predict import parse_plane
from implicitseg.models.nisf import NisfModel, NisfNetwork
from implicitseg.training.module import NisfLightningModule

from helpers import AFFINE_CASES


def test_coordinates_are_world_mm_about_the_image_centre_over_one_scale():
    config = copy_preset(nisf.PRESETS, "nisf")
    affine = AFFINE_CASES["flipped_oblique"]
    shape = (1, 20, 30, 10)
    center = image_center_world_mm(shape, affine)
    assert np.allclose(center, index_to_world(np.array([[9.5, 14.5, 4.5]]), affine)[0])
    index = np.array([[0, 0, 0], [19, 29, 9]])
    coordinates = nisf_coordinates(index, affine, center, config, time=np.array([0.3, 1.2]))
    world = index_to_world(index, affine)
    assert np.allclose(coordinates[:, :3], (world - center) / 100.0, atol=1e-6)
    assert np.allclose(coordinates[:, 3], [0.3, 0.2])  # time wraps over the cycle
    assert np.allclose(coordinates[0, :3], -coordinates[1, :3], atol=1e-6)  # symmetric about the centre
    frames = normalised_frames(np.array([[[[2.0, 4.0]]], [[[5.0, 5.0]]]]))
    assert np.allclose(frames[0].ravel(), [0, 1]) and np.allclose(frames[1].ravel(), [0, 0])


def test_plane_option_is_parsed_into_a_one_pixel_thick_grid():
    shape, affine = parse_plane("10,20,30;0.5,0,0;0,0,-0.5;40,30")
    assert shape == (40, 30, 1)
    assert np.allclose(index_to_world(np.array([[0, 0, 0], [2, 4, 0]]), affine), [[10, 20, 30], [11, 20, 28]])
    for bad in ("1,2,3;1,0,0;2,0,0;4,4", "1,2;1,0,0;0,1,0;4,4", "1,2,3;1,0,0;0,1,0;0,4", "x"):
        with pytest.raises(InputError, match="--plane"):
            parse_plane(bad)


class BallNetwork(NisfNetwork):
    """A 'fitted' NISF network whose label is 1 inside a ball of ``radius_mm`` about ``center_mm`` (world LPS),
    whatever the code: it follows the coordinates through every frame conversion."""

    def __init__(self, center_mm: np.ndarray, radius_mm: float, image_center_mm: np.ndarray, scale_mm: float):
        super().__init__(4, 2, latent_dim=8, hidden=8, n_layers=1)
        self.ball = torch.tensor((np.asarray(center_mm) - image_center_mm) / scale_mm, dtype=torch.float32)
        self.radius = radius_mm / scale_mm

    def forward(self, coordinates, latent):
        inside = self.radius - torch.linalg.norm(coordinates[..., :3] - self.ball, dim=-1)
        logits = torch.stack([torch.zeros_like(inside), 400.0 * inside], dim=-1)
        return logits + 0.0 * latent.sum(), torch.zeros_like(inside) + 0.0 * latent.sum()


def test_a_plane_in_world_mm_gets_the_labels_at_its_world_points(tmp_path, monkeypatch):
    write_synthetic_dataset(tmp_path / "ds", kind="cardiac", n_cases=1, n_test=1, seed=4)
    image_path = tmp_path / "ds" / "imagesTs" / "cardiac_001.nii.gz"
    series = read_image_series(image_path)
    image_center = image_center_world_mm(series.frames.shape, series.affine_lps)
    phantom = CardiacPhantom.from_json((tmp_path / "ds" / "phantoms" / "cardiac_001.json").read_text())
    ball_center, radius = np.array(phantom.center_mm), 30.0
    config = dataclasses.replace(copy_preset(nisf.PRESETS, "nisf-demo"),
                                 labels=LabelsConfig(names=("background", "ball")),
                                 canonical=CanonicalConfig(n_training_subjects=1))
    model = NisfModel(BallNetwork(ball_center, radius, image_center, 100.0), 1)
    model.inference_steps.fill_(2)
    save_config(tmp_path / "run" / "config.yaml", config)
    loaded = dataclasses.replace(nisf.METHOD, load=lambda run, which, device: (model, config))
    monkeypatch.setattr(methods, "_table", lambda: {"nisf": loaded})
    # a long-axis plane through the ball's centre, 0.5 mm pixels: a plane the short-axis stack never acquired
    long_axis = np.array(phantom.axes)[:, 2]
    across = np.array(phantom.axes)[:, 0]
    origin = ball_center - 40.0 * (long_axis + across)
    plane = ";".join(",".join(f"{v:.6f}" for v in vector) for vector in (origin, 0.5 * long_axis, 0.5 * across))
    [record] = run_predict(tmp_path / "run", [image_path], tmp_path / "out", plane=plane + ";160,160", frames=[3],
                           show_progress=False)
    labels = read_image_series(tmp_path / "out" / "cardiac_001" / "labelmap.nii.gz")
    assert labels.frames.shape == (1, 160, 160, 1) and record["mesh"] is None
    points = index_to_world(np.indices((160, 160, 1)).reshape(3, -1).T.astype(float), labels.affine_lps)
    expected = np.linalg.norm(points - ball_center, axis=1) < radius
    assert np.mean((labels.frames[0].ravel() > 0) == expected) > 0.999
    assert record["counts"]["fit_steps"] == 2 and record["counts"]["frames"] == [3]


@pytest.fixture
def tiny_presets(monkeypatch):
    for name, config in list(nisf.PRESETS.items()):
        tiny = dataclasses.replace(
            config, model=dataclasses.replace(config.model, latent_dim=16, hidden=16, n_layers=2),
            train=dataclasses.replace(config.train, points_per_step=2048, val_every_epochs=2, val_fit_steps=20,
                                      val_record_every=5),
            fit=dataclasses.replace(config.fit, steps=10, points_per_step=2048))
        monkeypatch.setitem(nisf.PRESETS, name, tiny)


def test_prepare_train_and_predict_a_cine_stack_end_to_end(tmp_path, tiny_presets):
    write_synthetic_dataset(tmp_path / "ds", kind="cardiac", n_cases=3, n_test=1, seed=1)
    manifest = run_prepare(tmp_path / "ds", tmp_path / "prep", method="nisf", preset="nisf-demo", show_progress=False)
    canonical = manifest["config"]["canonical"]
    assert canonical["with_time"] and canonical["n_training_subjects"] == len(manifest["splits"]["train"]) == 2
    assert manifest["config"]["labels"]["names"][3] == "RV blood pool"
    prepared = config_from_dict(NisfConfig, manifest["config"])
    item = NisfSubjectDataset.from_config(tmp_path / "prep", "train", prepared)[0]
    assert item["coordinates"].shape == (2048, 4) and item["subject"] == 0
    assert len(set(item["coordinates"][:, 3].tolist())) == 1  # one frame per training item
    summary = run_train(tmp_path / "prep", tmp_path / "run", max_epochs=4, show_progress=False)
    assert summary["epochs_completed"] == 4 and summary["best_val_loss"] is not None
    model, _ = nisf.METHOD.load(tmp_path / "run", "best", torch.device("cpu"))
    assert 0 <= int(model.inference_steps) <= 20  # validated: a multiple of val_record_every
    [record] = run_predict(tmp_path / "run", [tmp_path / "ds"], tmp_path / "out", spacing="4", show_progress=False)
    labels = read_image_series(tmp_path / "out" / "cardiac_003" / "labelmap.nii.gz")
    assert labels.frames.shape[0] == 10 and np.allclose(np.linalg.norm(labels.affine_lps[:3, :3], axis=0), 4.0)
    timings = json.loads((tmp_path / "out" / "cardiac_003" / "prediction.json").read_text())["timings"]
    assert timings["fitting_s"] > 0 and record["counts"]["fit_steps"] == int(model.inference_steps)
    with pytest.raises(InputError, match="frame\\(s\\) \\[99\\] outside 0..9"):
        run_predict(tmp_path / "run", [tmp_path / "ds"], tmp_path / "o2", frames=[99], show_progress=False)


def test_frames_are_refused_for_3d_methods(tmp_path):
    from implicitseg.methods import implicit_unet

    save_config(tmp_path / "iunet" / "config.yaml", implicit_unet.PRESETS["iunet-demo"])
    with pytest.raises(InputError, match="--frame applies to 3D\\+t methods"):
        run_predict(tmp_path / "iunet", [tmp_path], tmp_path / "out", frames=[1], show_progress=False)


def test_a_run_without_validated_steps_fits_for_the_configured_steps():
    from implicitseg.io.images import VolumeSeries

    config = dataclasses.replace(copy_preset(nisf.PRESETS, "nisf-demo"), labels=LabelsConfig(names=("bg", "fg")),
                                 canonical=CanonicalConfig(n_training_subjects=2))
    config.fit.steps = 3
    model = NisfLightningModule.build_model(config)
    assert int(model.inference_steps) == -1
    series = VolumeSeries(np.random.default_rng(0).random((2, 6, 5, 4)), AFFINE_CASES["oblique"])
    _, latent, counts = nisf.fit_subject(model, config, series, device=torch.device("cpu"))
    assert counts["fit_steps"] == 3 and counts["fit_points"] == 2 * 6 * 5 * 4 and latent.shape == (1, 64)
    model.inference_steps.fill_(0)  # validated: the population's mean code is best
    assert nisf.fit_subject(model, config, series, device=torch.device("cpu"))[2]["fit_steps"] == 0


def test_the_same_method_runs_on_3d_volumes(tmp_path, tiny_presets):
    from implicitseg.io.images import read_image, read_labelmap

    write_synthetic_dataset(tmp_path / "ds", kind="organ", n_cases=2, n_test=1, seed=2)
    manifest = run_prepare(tmp_path / "ds", tmp_path / "prep", method="nisf", preset="nisf-demo", show_progress=False)
    assert manifest["config"]["canonical"]["with_time"] is False
    run_train(tmp_path / "prep", tmp_path / "run", max_epochs=2, show_progress=False)
    [record] = run_predict(tmp_path / "run", [tmp_path / "ds"], tmp_path / "out", fit_weights=True,
                           show_progress=False)
    image = read_image(tmp_path / "ds" / "imagesTs" / "organ_002.nii.gz")
    labelmap = read_labelmap(tmp_path / "out" / "organ_002" / "labelmap.nii.gz", allow_empty=True)
    assert labelmap.shape == image.shape and np.allclose(labelmap.affine_lps, image.affine_lps, atol=1e-4)
    assert record["counts"]["fit_weights"] is True and record["counts"]["frames"] == [0]
