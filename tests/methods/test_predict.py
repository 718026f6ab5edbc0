"""The Python API (``implicitseg.load_run(RUN).predict(image)``): what the command line writes, from a path or an
image in memory, in world LPS mm; settings over the run's config, refused where a trained run may not change."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

import implicitseg
from helpers import AFFINE_CASES, BrightIsForeground, ImageLevelSetModel, blurred_sphere_hu, fake_runs, sphere_volume
from implicitseg.cli import app
from implicitseg.errors import InputError
from implicitseg.geometry.frames import index_to_world
from implicitseg.io.configs import save_config
from implicitseg.io.images import Volume, VolumeSeries, write_image
from implicitseg.io.meshes import read_mesh, read_point_cloud
from implicitseg.methods import nudf, unet

SHAPE = (70, 64, 48)
RADIUS_MM = 12.0


def _sphere_image(path, name="oblique"):
    """A CT-like sphere on an oblique grid; returns the ROI centre and the sphere's centre, (3,) world LPS mm."""
    affine = AFFINE_CASES[name]
    center_world = index_to_world(np.array([[35.0, 32.0, 24.0]]), affine)[0]
    sphere_center = center_world + np.array([4.0, -3.0, 2.5])
    write_image(path, Volume(blurred_sphere_hu(affine, SHAPE, sphere_center, RADIUS_MM), affine))
    return center_world, sphere_center


def _nudf_run(monkeypatch, run_dir):
    config = nudf.preset_config("nudf-demo")
    config.roi.size_mm, config.roi.res = 40.0, 48
    save_config(run_dir / "config.yaml", config)
    fake_runs(monkeypatch, ("nudf", ImageLevelSetModel(), config))


def test_load_run_predicts_what_the_cli_writes_in_world_mm(tmp_path, monkeypatch):
    center, sphere_center = _sphere_image(tmp_path / "case_7.nii.gz")
    _nudf_run(monkeypatch, tmp_path / "run")
    roi_center = ",".join(str(c) for c in center)
    result = CliRunner().invoke(app, ["predict", str(tmp_path / "run"), str(tmp_path / "case_7.nii.gz"), "--out",
                                      str(tmp_path / "out"), "--roi-center", roi_center])
    assert result.exit_code == 0, result.output
    written = read_mesh(tmp_path / "out" / "case_7" / "mesh.vtk")

    predictor = implicitseg.load_run(tmp_path / "run", roi_center=center)
    prediction = predictor.predict(tmp_path / "case_7.nii.gz")
    assert prediction.case == "case_7" and prediction.image == tmp_path / "case_7.nii.gz"
    # the file holds float32 coordinates: the same vertices, rounded
    assert np.array_equal(prediction.mesh.vertices_world_mm.astype(np.float32),
                          written.vertices_world_mm.astype(np.float32))
    assert np.array_equal(prediction.mesh.faces, written.faces)
    assert np.array_equal(prediction.points_world_mm.astype(np.float32),
                          read_point_cloud(tmp_path / "out" / "case_7" / "points.ply").astype(np.float32))
    radial_mm = np.linalg.norm(prediction.mesh.vertices_world_mm - sphere_center, axis=1)
    assert np.median(np.abs(radial_mm - RADIUS_MM)) < 0.1  # on the object, in world mm
    assert prediction.labelmap is None and prediction.details["roi_source"] == "center"
    assert {"encoder_s", "meshing_s", "total_s"} <= set(prediction.timings)

    # the same image in memory, its ROI centre given per image
    in_memory = implicitseg.load_run(tmp_path / "run").predict(implicitseg.read_image(tmp_path / "case_7.nii.gz"),
                                                                name="case_7", roi_center=center)
    assert in_memory.image is None and in_memory.case == "case_7"
    assert np.array_equal(in_memory.mesh.vertices_world_mm, prediction.mesh.vertices_world_mm)

    # write() gives what predict writes
    record = predictor.write(prediction, tmp_path / "again" / "case_7")
    assert np.array_equal(read_mesh(record["mesh"]).vertices_world_mm, written.vertices_world_mm)
    cli_record = json.loads((tmp_path / "out" / "case_7" / "prediction.json").read_text())
    assert set(record) == set(cli_record) and record["roi"] == cli_record["roi"]


def test_a_roi_method_without_a_roi_centre_says_how_to_give_one(tmp_path, monkeypatch):
    _sphere_image(tmp_path / "case_7.nii.gz")
    _nudf_run(monkeypatch, tmp_path / "run")
    with pytest.raises(InputError, match=r"give its centre \(predict\(image, roi_center="):
        implicitseg.load_run(tmp_path / "run").predict(tmp_path / "case_7.nii.gz")
    with pytest.raises(InputError, match="exactly one of --roi-center"):
        implicitseg.load_run(tmp_path / "run", roi_center=(0, 0, 0), roi_run=tmp_path / "roi_run")
    with pytest.raises(InputError, match="segments 3D images; got a series of 2 frames"):
        implicitseg.load_run(tmp_path / "run", roi_center=(0, 0, 0)).predict(
            VolumeSeries(np.zeros((2, 8, 8, 8), np.float32), np.eye(4)))


def test_overrides_change_the_run_config_and_are_recorded(tmp_path, monkeypatch):
    center, _ = _sphere_image(tmp_path / "case_7.nii.gz")
    _nudf_run(monkeypatch, tmp_path / "run")
    predictor = implicitseg.load_run(tmp_path / "run", roi_center=center,
                                     overrides={"meshing": {"band": {"cell_mm": 2.0}}, "point_cloud.n_dense": 5000})
    assert predictor.config.meshing.band.cell_mm == 2.0 and predictor.config.point_cloud.n_dense == 5000
    assert nudf.PRESETS["nudf-demo"].meshing.band.cell_mm == 1.0
    prediction = predictor.predict(tmp_path / "case_7.nii.gz")
    assert prediction.details["meshing"]["cell_mm"] > 1.0  # a coarser band than the run's 1 mm
    record = predictor.write(prediction, tmp_path / "out" / "case_7")
    assert record["overrides"] == {"meshing.band.cell_mm": 2.0, "point_cloud.n_dense": 5000}


@pytest.mark.parametrize("overrides, message", [
    ({"roi.res": 64}, "overrides: roi.res: may not change for a trained run .*predict may change point_cloud, "
                      "meshing$"),
    ({"encoder": {"stem_channels": 8}}, "overrides: encoder.stem_channels: may not change for a trained run"),
    ({"meshing.band.cell": 2.0}, "overrides: meshing.band.cell: no such setting \\(meshing.band has cell_mm,"),
    ({"point_cloud.n_dense": "many"}, "overrides: point_cloud.n_dense: expected an integer, got 'many'"),
])
def test_overrides_a_trained_run_may_not_take_are_refused_before_it_loads(tmp_path, overrides, message):
    save_config(tmp_path / "run" / "config.yaml", nudf.preset_config("nudf-demo"))  # no checkpoint: nothing loads
    with pytest.raises(InputError, match=message):
        implicitseg.load_run(tmp_path / "run", roi_center=(0, 0, 0), overrides=overrides)


def test_a_voxel_method_returns_its_labelmap_on_the_images_grid(tmp_path, monkeypatch):
    center, sphere_center = _sphere_image(tmp_path / "case_3.nii.gz", "flipped_oblique")
    config = unet.preset_config("unet-demo")
    config.roi.size_mm, config.roi.res = 40.0, 48
    save_config(tmp_path / "run" / "config.yaml", config)
    fake_runs(monkeypatch, ("unet", BrightIsForeground(), config))
    prediction = implicitseg.load_run(tmp_path / "run", roi_center=center).predict(tmp_path / "case_3.nii.gz")
    affine = AFFINE_CASES["flipped_oblique"]
    assert prediction.labelmap.shape == SHAPE and np.allclose(prediction.labelmap.affine_lps, affine)
    truth = sphere_volume(affine, SHAPE, sphere_center, RADIUS_MM) > 0
    predicted = prediction.labelmap.array > 0
    assert 2 * np.sum(truth & predicted) / (truth.sum() + predicted.sum()) > 0.97
    radial_mm = np.linalg.norm(prediction.mesh.vertices_world_mm - sphere_center, axis=1)
    assert np.median(np.abs(radial_mm - RADIUS_MM)) < 0.15
    assert prediction.points_world_mm is None and "upsample_and_mesh_s" in prediction.timings
