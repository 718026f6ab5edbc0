"""Whole-image prediction (implicit-unet) through ``run_predict``: labelmaps on the image's own grid or on the same box
at any ``--spacing``, and meshes, in world LPS mm on oblique, flipped and anisotropic images; sparse labels equal
dense ones; usage errors."""

import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from helpers import AFFINE_CASES, BrightIsForeground, blurred_sphere_hu, sphere_volume
from implicitseg import methods
from implicitseg.config import LabelsConfig
from implicitseg.errors import InputError
from implicitseg.geometry.frames import index_to_world
from implicitseg.io.configs import save_config
from implicitseg.io.images import Volume, read_image, read_labelmap, write_image
from implicitseg.io.meshes import read_mesh
from implicitseg.methods import implicit_unet, unet
from implicitseg.methods.pipeline import run_predict
from implicitseg.models.implicit_unet import ImplicitUnet

SHAPE = (60, 56, 40)
RADIUS_MM = 11.0


class BrightAtPoints(ImplicitUnet):
    """An 'Implicit U-Net' whose foreground logit rises steeply where the normalised image, read trilinearly at the
    query point, exceeds 0.5: it segments a bright object exactly, at any point, through the same windows."""

    def __init__(self) -> None:
        nn.Module.__init__(self)
        self.encoder = SimpleNamespace(stage_channels=(1,))
        self.n_classes = 2

    def encode(self, image: torch.Tensor) -> list[torch.Tensor]:
        return [image]

    def decode(self, stages: list[torch.Tensor], points_patch_voxel: torch.Tensor) -> torch.Tensor:
        patch = stages[0]
        sizes = torch.tensor(patch.shape[2:], dtype=points_patch_voxel.dtype)
        grid = (2.0 * points_patch_voxel / (sizes - 1) - 1.0).flip(-1)[:, :, None, None, :]
        value = torch.nn.functional.grid_sample(patch, grid, align_corners=True).reshape(patch.shape[0], -1)
        return torch.stack([torch.zeros_like(value), (value - 0.5) * 20.0], dim=-1)


def _config(decoder: str = "implicit"):
    config = implicit_unet.PRESETS["iunet-conv-demo" if decoder == "convolutional" else "iunet-demo"]
    config = dataclasses.replace(config, labels=LabelsConfig(names=("background", "sphere")))
    # the sphere image is 0 / 1000 HU: a window that maps it to 0 / 1
    return dataclasses.replace(config, intensity=dataclasses.replace(config.intensity, window=(0.0, 1000.0),
                                                                     scale=1000.0),
                               grid=dataclasses.replace(config.grid, spacing_mm=1.5))


def _fake_run(monkeypatch, tmp_path, decoder: str = "implicit"):
    config = _config(decoder)
    save_config(tmp_path / "run" / "config.yaml", config)
    model = BrightAtPoints() if decoder == "implicit" else BrightIsForeground()
    loaded = dataclasses.replace(implicit_unet.METHOD, load=lambda run, which, device: (model, config))
    table = {"implicit-unet": loaded, "unet": unet.METHOD}
    monkeypatch.setattr(methods, "_table", lambda: table)
    return config


def _write_sphere_image(tmp_path, name):
    affine = AFFINE_CASES[name]
    center = np.array(SHAPE) / 2.0 + np.array([3.0, -2.0, 1.5])
    sphere_center = index_to_world(center[None], affine)[0]
    write_image(tmp_path / "case_7.nii.gz", Volume(blurred_sphere_hu(affine, SHAPE, sphere_center, RADIUS_MM), affine))
    return affine, sphere_center


def _box_corners(shape, affine) -> np.ndarray:
    """World LPS mm of the outer corners of the first and the last voxel."""
    return index_to_world(np.array([[-0.5] * 3, np.array(shape) - 0.5]), affine)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float(np.sum(a & b)) / float(a.sum() + b.sum())


@pytest.mark.parametrize("decoder", ["implicit", "convolutional"])
@pytest.mark.parametrize("name", ["oblique", "flipped_oblique", "anisotropic"])
def test_labelmap_on_the_image_grid_and_mesh_lie_on_the_object(tmp_path, monkeypatch, name, decoder):
    affine, sphere_center = _write_sphere_image(tmp_path, name)
    _fake_run(monkeypatch, tmp_path, decoder)
    run_predict(tmp_path / "run", [tmp_path], tmp_path / "out", show_progress=False)
    case_dir = tmp_path / "out" / "case_7"
    labelmap = read_labelmap(case_dir / "labelmap.nii.gz")
    assert labelmap.shape == SHAPE and np.allclose(labelmap.affine_lps, affine, atol=1e-4)
    truth = sphere_volume(affine, SHAPE, sphere_center, RADIUS_MM) > 0
    assert _dice(labelmap.array > 0, truth) > 0.97
    mesh = read_mesh(case_dir / "mesh.vtk")
    radial_error_mm = np.abs(np.linalg.norm(mesh.vertices_world_mm - sphere_center, axis=1) - RADIUS_MM)
    assert np.median(radial_error_mm) < 0.3 and radial_error_mm.max() < 1.0
    record = json.loads((case_dir / "prediction.json").read_text())
    assert record["method"] == "implicit-unet" and "roi" not in record
    assert record["counts"]["n_output_voxels"] == int(np.prod(SHAPE))
    if decoder == "implicit":  # the coarse pass and the band asked far fewer points than there are voxels
        assert record["counts"]["n_query_points"] < 0.5 * np.prod(SHAPE)
        assert record["counts"]["n_coarse_points"] == int(np.prod([len(range(0, n, 4)) for n in SHAPE]))


def test_spacing_gives_a_finer_labelmap_of_the_same_box(tmp_path, monkeypatch):
    affine, sphere_center = _write_sphere_image(tmp_path, "flipped_oblique")
    _fake_run(monkeypatch, tmp_path)
    run_predict(tmp_path / "run", [tmp_path / "case_7.nii.gz"], tmp_path / "out", spacing="0.4",
                show_progress=False)
    labelmap = read_labelmap(tmp_path / "out" / "case_7" / "labelmap.nii.gz")
    assert np.allclose(labelmap.spacing, 0.4)
    assert np.allclose(labelmap.direction, Volume(np.zeros(SHAPE), affine).direction)
    # the same box: the outer faces of the first and last voxels agree (to the rounding of the voxel count)
    assert np.allclose(_box_corners(labelmap.shape, labelmap.affine_lps), _box_corners(SHAPE, affine), atol=0.35)
    truth = sphere_volume(labelmap.affine_lps, labelmap.shape, sphere_center, RADIUS_MM) > 0
    assert _dice(labelmap.array > 0, truth) > 0.98


def test_sparse_inference_gives_the_dense_labels(tmp_path):
    _write_sphere_image(tmp_path, "oblique")
    volume = read_image(tmp_path / "case_7.nii.gz")
    config = _config()
    dense_config = dataclasses.replace(config, inference=dataclasses.replace(config.inference, dense=True))
    sparse = implicit_unet.predict_image(BrightAtPoints(), config, volume, tmp_path, device=torch.device("cpu"))
    dense = implicit_unet.predict_image(BrightAtPoints(), dense_config, volume, tmp_path, device=torch.device("cpu"))
    assert np.array_equal(sparse.labelmap.array, dense.labelmap.array)
    assert sparse.counts["n_query_points"] < 0.5 * dense.counts["n_query_points"]


def test_roi_options_and_spacing_are_refused_where_they_do_not_apply(tmp_path, monkeypatch):
    _write_sphere_image(tmp_path, "oblique")
    _fake_run(monkeypatch, tmp_path)
    image = [tmp_path / "case_7.nii.gz"]
    with pytest.raises(InputError, match="segments whole images: --roi-center does not apply"):
        run_predict(tmp_path / "run", image, tmp_path / "out", roi_center="0,0,0", show_progress=False)
    for bad in ("0", "-1", "a,b,c", "1,2"):
        with pytest.raises(InputError, match="--spacing"):
            run_predict(tmp_path / "run", image, tmp_path / "out", spacing=bad, show_progress=False)
    save_config(tmp_path / "unet_run" / "config.yaml", unet.preset_config("unet-demo"))
    with pytest.raises(InputError, match="--spacing and --plane apply to whole-image methods"):
        run_predict(tmp_path / "unet_run", image, tmp_path / "out", spacing="0.5", roi_center="0,0,0",
                    show_progress=False)


def test_nothing_found_writes_an_empty_labelmap_and_says_so(tmp_path, monkeypatch):
    affine = AFFINE_CASES["anisotropic"]
    write_image(tmp_path / "case_7.nii.gz", Volume(np.zeros(SHAPE, np.float32), affine))
    _fake_run(monkeypatch, tmp_path)
    [record] = run_predict(tmp_path / "run", [tmp_path / "case_7.nii.gz"], tmp_path / "out", show_progress=False)
    assert record["mesh"] is None and "no foreground" in record["warning"]
    labelmap = read_labelmap(tmp_path / "out" / "case_7" / "labelmap.nii.gz", allow_empty=True)
    assert labelmap.shape == SHAPE and not labelmap.array.any()
    assert not (tmp_path / "out" / "case_7" / "mesh.vtk").exists()


def test_res_sets_the_patch_side_and_roi_mm_is_refused():
    from implicitseg.methods.pipeline import resolve_config

    _, config = resolve_config("implicit-unet", preset="iunet-demo", res=48, roi_mm=None)
    assert config.grid.patch_voxels == 48 and implicit_unet.PRESETS["iunet-demo"].grid.patch_voxels == 32
    with pytest.raises(InputError, match="--roi-mm does not apply to method 'implicit-unet'"):
        resolve_config("implicit-unet", preset=None, res=None, roi_mm=70.0)
    with pytest.raises(InputError, match="--res does not apply to method 'nisf'"):
        resolve_config("nisf", preset="nisf-demo", res=64, roi_mm=None)
    _, config = resolve_config("implicit-unet", preset="iunet-demo", res=30, roi_mm=None)
    with pytest.raises(InputError, match="patch side 30 .*use a multiple of 8"):
        implicit_unet.METHOD.prepare(Path("no-dataset"), Path("no-prep"), config)
