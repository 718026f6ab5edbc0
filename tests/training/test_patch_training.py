"""The Implicit U-Net trained for a few seconds on the organ phantom: it learns the organ, its sparse coarse-to-fine
inference gives the labels of a dense pass, and the same encoder's U-Net trains from the same prepared folder.

Tolerance of the sparse inference: on a trained model, sparse and dense labels agree on at least 99.5 % of the
output voxels (the coarse pass can miss a structure thinner than its stride, 4 voxels, away from any boundary it
found; the band then never reaches it)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from implicitseg.config import ImplicitUnetModelConfig, PatchTrainConfig, PointSamplingConfig, VolumeGridConfig
from implicitseg.data.synthetic import write_synthetic_dataset
from implicitseg.io.dataset import list_images
from implicitseg.io.images import grid_at_spacing, read_image, read_labelmap, resample_volume
from implicitseg.methods import implicit_unet
from implicitseg.methods.pipeline import run_train

TINY_MODEL = ImplicitUnetModelConfig(stage_channels=(8, 16, 32), stage_convs=(1, 1, 2), hidden=64, n_hidden_layers=4,
                                     skip_layer=2, n_frequencies=4, dropout=0.0)


def _tiny(config):
    return dataclasses.replace(config, grid=VolumeGridConfig(spacing_mm=3.0, patch_voxels=16, positive_fraction=0.5),
                               model=dataclasses.replace(TINY_MODEL, decoder=config.model.decoder),
                               sampling=PointSamplingConfig(points_per_patch=2048, boundary_sigma_voxels=1.5),
                               train=PatchTrainConfig(learning_rate=3e-3, batch_size=4, patches_per_case=4,
                                                      early_stopping_patience=1000))


@pytest.fixture(scope="module")
def trained(tmp_path_factory, monkeypatch_module):
    root = tmp_path_factory.mktemp("iunet")
    write_synthetic_dataset(root / "ds", kind="organ", n_cases=4, n_test=1, seed=3)
    for name, config in list(implicit_unet.PRESETS.items()):  # the method's table holds this same dict
        monkeypatch_module.setitem(implicit_unet.PRESETS, name, _tiny(config))
    implicit_unet.METHOD.prepare(root / "ds", root / "prep", implicit_unet.PRESETS["iunet-demo"])
    torch.manual_seed(0)
    summary = run_train(root / "prep", root / "run", max_epochs=30, show_progress=False)
    return root, summary


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def test_trained_model_finds_the_organ_and_sparse_labels_match_dense(trained):
    root, summary = trained
    assert summary["epochs_completed"] == 30
    model, config = implicit_unet.METHOD.load(root / "run", "best", torch.device("cpu"))
    [image_path] = list_images([root / "ds"])
    volume = read_image(image_path)
    grid = grid_at_spacing(volume, 2.0)
    sparse = implicit_unet.predict_image(model, config, volume, image_path, device=torch.device("cpu"),
                                         output_grid=grid)
    dense_config = dataclasses.replace(config, inference=dataclasses.replace(config.inference, dense=True))
    dense = implicit_unet.predict_image(model, dense_config, volume, image_path, device=torch.device("cpu"),
                                        output_grid=grid)
    assert np.mean(sparse.labelmap.array == dense.labelmap.array) >= 0.995
    assert sparse.counts["n_query_points"] < 0.7 * dense.counts["n_query_points"]
    labelmap = read_labelmap(root / "ds" / "labelsTs" / image_path.name)
    truth = resample_volume(labelmap, sparse.labelmap.shape, sparse.labelmap.affine_lps,
                            interpolation="nearest").array > 0
    predicted = sparse.labelmap.array > 0
    assert 2 * np.sum(truth & predicted) / (truth.sum() + predicted.sum()) > 0.8


def test_the_same_encoders_unet_trains_from_the_same_folder_and_resumes(trained):
    root, _ = trained
    run_train(root / "prep", root / "run_conv", preset="iunet-conv-demo", max_epochs=11, show_progress=False)
    summary = run_train(root / "prep", root / "run_conv", preset="iunet-conv-demo", max_epochs=12, resume=True,
                        show_progress=False)
    assert summary["epochs_completed"] == 12 and summary["epochs_this_session"] == 1
    model, config = implicit_unet.METHOD.load(root / "run_conv", "last", torch.device("cpu"))
    assert config.model.decoder == "convolutional" and config.labels.names == ("background", "organ", "lesion")
    [image_path] = list_images([root / "ds"])
    volume = read_image(image_path)
    prediction = implicit_unet.predict_image(model, config, volume, image_path, device=torch.device("cpu"),
                                             output_grid=grid_at_spacing(volume, 1.5))
    assert np.allclose(prediction.labelmap.spacing, 1.5)
    truth = read_labelmap(root / "ds" / "labelsTs" / image_path.name)
    on_output = resample_volume(truth, prediction.labelmap.shape, prediction.labelmap.affine_lps,
                                interpolation="nearest").array > 0
    predicted = prediction.labelmap.array > 0
    # it segments the organ on the 1.5 mm grid, in world mm (labelling every voxel would score 0.20 here)
    assert 2 * np.sum(on_output & predicted) / (on_output.sum() + predicted.sum()) > 0.6
