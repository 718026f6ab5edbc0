"""Voxel methods (U-Net baseline) through predict: a labelmap on the input image's grid and a mesh in world LPS mm
that lie on the object, on oblique, flipped and anisotropic images; the ROI found by a detector run."""

import dataclasses
import json

import numpy as np
import pytest

from helpers import AFFINE_CASES, BrightIsForeground, blurred_sphere_hu, sphere_volume
from implicitseg import methods
from implicitseg.errors import InputError
from implicitseg.geometry.frames import index_to_world
from implicitseg.io.configs import save_config
from implicitseg.io.images import Volume, read_labelmap, write_image
from implicitseg.io.meshes import read_mesh
from implicitseg.methods import roi_detector, unet
from implicitseg.methods.pipeline import run_predict

SHAPE = (70, 64, 48)
RADIUS_MM = 12.0


def _fake_table(monkeypatch, tmp_path):
    """Runs ``run`` (U-Net) and ``roi_run`` (detector) whose networks segment the bright sphere exactly."""
    unet_config = unet.preset_config("unet-demo")
    unet_config.roi.size_mm, unet_config.roi.res = 40.0, 48
    detector_config = roi_detector.preset_config("roi32")
    save_config(tmp_path / "run" / "config.yaml", unet_config)
    save_config(tmp_path / "roi_run" / "config.yaml", detector_config)
    model = BrightIsForeground()
    table = {
        "unet": dataclasses.replace(unet.METHOD, load=lambda run, which, device: (model, unet_config)),
        "roi": dataclasses.replace(roi_detector.METHOD, load=lambda run, which, device: (model, detector_config)),
    }
    monkeypatch.setattr(methods, "_table", lambda: table)


def _write_case(tmp_path, name):
    affine = AFFINE_CASES[name]
    center_world = index_to_world(np.array([[35.0, 32.0, 24.0]]), affine)[0]
    sphere_center = center_world + np.array([4.0, -3.0, 2.5])
    write_image(tmp_path / "case_3.nii.gz", Volume(blurred_sphere_hu(affine, SHAPE, sphere_center, RADIUS_MM), affine))
    return affine, center_world, sphere_center


@pytest.mark.parametrize("name", ["oblique", "flipped_oblique", "anisotropic"])
def test_labelmap_on_the_image_grid_and_mesh_lie_on_the_object(tmp_path, monkeypatch, name):
    affine, center_world, sphere_center = _write_case(tmp_path, name)
    _fake_table(monkeypatch, tmp_path)
    run_predict(tmp_path / "run", [tmp_path / "case_3.nii.gz"], tmp_path / "out", show_progress=False,
                roi_center=",".join(str(c) for c in center_world))
    case_dir = tmp_path / "out" / "case_3"
    labelmap = read_labelmap(case_dir / "labelmap.nii.gz")
    assert labelmap.shape == SHAPE and np.allclose(labelmap.affine_lps, affine, atol=1e-4)
    truth = sphere_volume(affine, SHAPE, sphere_center, RADIUS_MM) > 0
    predicted = labelmap.array > 0
    dice = 2 * np.sum(truth & predicted) / (truth.sum() + predicted.sum())
    assert dice > 0.97
    mesh = read_mesh(case_dir / "mesh.vtk")
    radial_error_mm = np.abs(np.linalg.norm(mesh.vertices_world_mm - sphere_center, axis=1) - RADIUS_MM)
    assert np.median(radial_error_mm) < 0.15 and radial_error_mm.max() < 0.5
    record = json.loads((case_dir / "prediction.json").read_text())
    assert record["method"] == "unet" and record["roi_source"] == "center"
    assert "upsample_and_mesh_s" in record["timings"] and not (case_dir / "points.ply").exists()


def test_roi_run_centres_the_roi_on_the_detected_object(tmp_path, monkeypatch):
    _, _, sphere_center = _write_case(tmp_path, "flipped_oblique")
    _fake_table(monkeypatch, tmp_path)
    run_predict(tmp_path / "run", [tmp_path / "case_3.nii.gz"], tmp_path / "out", show_progress=False,
                roi_run=tmp_path / "roi_run")
    record = json.loads((tmp_path / "out" / "case_3" / "prediction.json").read_text())
    assert record["roi_source"] == "detector" and record["roi_run"] == str(tmp_path / "roi_run")
    assert np.linalg.norm(np.array(record["roi"]["center_world_mm"]) - sphere_center) < 1.0
    mesh = read_mesh(tmp_path / "out" / "case_3" / "mesh.vtk")
    assert np.median(np.abs(np.linalg.norm(mesh.vertices_world_mm - sphere_center, axis=1) - RADIUS_MM)) < 0.15


def test_roi_sources_are_exclusive_and_a_detector_run_does_not_predict_alone(tmp_path, monkeypatch):
    _write_case(tmp_path, "oblique")
    _fake_table(monkeypatch, tmp_path)
    image = [tmp_path / "case_3.nii.gz"]
    with pytest.raises(InputError, match="exactly one of --roi-center"):
        run_predict(tmp_path / "run", image, tmp_path / "out", roi_center="0,0,0", roi_run=tmp_path / "roi_run")
    with pytest.raises(InputError, match="exactly one of --roi-center"):
        run_predict(tmp_path / "run", image, tmp_path / "out")
    with pytest.raises(InputError, match="does not predict on its own.*--roi-run"):
        run_predict(tmp_path / "roi_run", image, tmp_path / "out", roi_center="0,0,0")
    assert not (tmp_path / "out").exists()
