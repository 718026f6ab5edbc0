"""predict writes meshes in world LPS mm that lie on the object in the image they came from.

The model here reads the ROI image itself (its field is zero where the normalised intensity crosses 0.5), so
the test exercises the whole chain a trained model goes through: image grid → world → ROI → unit →
``grid_sample`` axis order → projection → world → mesh file → back, on oblique, flipped and anisotropic images.
"""

import dataclasses
import json

import numpy as np
import torch
import pytest
import yaml

from helpers import AFFINE_CASES, ImageLevelSetModel, blurred_sphere_hu
from implicitseg import methods
from implicitseg.errors import InputError
from implicitseg.geometry.frames import index_to_world
from implicitseg.io.configs import save_config
from implicitseg.io.images import Volume, write_image
from implicitseg.io.meshes import read_mesh, read_point_cloud
from implicitseg.methods.nudf import preset_config
from implicitseg.methods.pipeline import run_predict


@pytest.mark.parametrize("name", ["oblique", "flipped_oblique", "anisotropic"])
@pytest.mark.parametrize("mesh_space", ["LPS", "RAS"])
@pytest.mark.parametrize("mesher", ["udf-mc", "poisson"])
def test_predicted_mesh_lies_on_the_object_in_world_space(tmp_path, monkeypatch, name, mesh_space, mesher):
    affine = AFFINE_CASES[name]
    shape = (70, 64, 48)
    center_world = index_to_world(np.array([[35.0, 32.0, 24.0]]), affine)[0]
    sphere_center = center_world + np.array([4.0, -3.0, 2.5])
    radius_mm = 12.0
    write_image(tmp_path / "case_7.nii.gz", Volume(blurred_sphere_hu(affine, shape, sphere_center, radius_mm), affine))

    config = preset_config("nudf-demo")
    config.roi.size_mm, config.roi.res = 40.0, 48
    config.point_cloud.n_seeds, config.point_cloud.n_dense = 100_000, 60_000
    config.meshing.n_subsample = 3_000
    save_config(tmp_path / "run" / "config.yaml", config)
    model = ImageLevelSetModel()
    fake_nudf = dataclasses.replace(methods.get_method("nudf"), load=lambda run, which, device: (model, config))
    monkeypatch.setattr(methods, "_table", lambda: {"nudf": fake_nudf})

    results = run_predict(tmp_path / "run", [tmp_path / "case_7.nii.gz"], tmp_path / "out", show_progress=False,
                          roi_center=",".join(str(c) for c in center_world), mesh_space=mesh_space, mesh_format="ply",
                          mesher=mesher)
    case_dir = tmp_path / "out" / "case_7"
    record = json.loads((case_dir / "prediction.json").read_text())
    assert results[0]["case"] == "case_7" and record["mesh_space"] == mesh_space
    assert record["meshing"]["method"] == mesher and record["meshing"]["components"]["n_kept"] == 1
    stage = "band_s" if mesher == "udf-mc" else "point_cloud_s"
    assert set(record["timings"]) >= {"encoder_s", stage, "meshing_s", "total_s"}
    assert record["counts"]["n_forward_points"] > 0 and record["counts"]["n_gradient_points"] > 0

    mesh = read_mesh(case_dir / "mesh.ply", space=mesh_space)
    radial_error_mm = np.abs(np.linalg.norm(mesh.vertices_world_mm - sphere_center, axis=1) - radius_mm)
    assert np.median(np.abs(radial_error_mm)) < 0.1 and radial_error_mm.max() < 0.3
    assert len(mesh.faces) > 3_000
    points = read_point_cloud(case_dir / "points.ply")  # its header names the space
    assert np.median(np.abs(np.linalg.norm(points - sphere_center, axis=1) - radius_mm)) < 0.1


def test_roi_outside_the_image_is_refused_and_nothing_is_written(tmp_path, monkeypatch):
    affine = AFFINE_CASES["oblique"]
    write_image(tmp_path / "case_1.nii.gz", Volume(np.zeros((20, 20, 20), np.float32), affine))
    config = preset_config("nudf-demo")
    save_config(tmp_path / "run" / "config.yaml", config)
    fake_nudf = dataclasses.replace(methods.get_method("nudf"), load=lambda run, which, device: (ImageLevelSetModel(), config))
    monkeypatch.setattr(methods, "_table", lambda: {"nudf": fake_nudf})
    with pytest.raises(InputError, match="case_1.nii.gz: ROI outside the image"):
        run_predict(tmp_path / "run", [tmp_path / "case_1.nii.gz"], tmp_path / "out", roi_center="500,500,500",
                    show_progress=False)
    assert not (tmp_path / "out" / "case_1").exists()


def test_meshing_options_reach_the_config_and_bad_ones_are_refused(tmp_path, monkeypatch):
    affine = AFFINE_CASES["anisotropic"]
    shape = (60, 50, 30)
    center_world = index_to_world(np.array([[30.0, 25.0, 15.0]]), affine)[0]
    write_image(tmp_path / "case_2.nii.gz", Volume(blurred_sphere_hu(affine, shape, center_world, 10.0), affine))
    config = preset_config("nudf-demo")
    config.roi.size_mm, config.roi.res = 40.0, 48
    save_config(tmp_path / "run" / "config.yaml", config)
    fake_nudf = dataclasses.replace(methods.get_method("nudf"), load=lambda run, which, device: (ImageLevelSetModel(), config))
    monkeypatch.setattr(methods, "_table", lambda: {"nudf": fake_nudf})
    roi_center = ",".join(str(c) for c in center_world)

    run_predict(tmp_path / "run", [tmp_path / "case_2.nii.gz"], tmp_path / "out", roi_center=roi_center,
                band_mm=1.0, show_progress=False)
    record = json.loads((tmp_path / "out" / "case_2" / "prediction.json").read_text())
    assert record["meshing"]["method"] == "udf-mc" and record["meshing"]["cell_mm"] <= 1.0
    fine = record["meshing"]["cell_mm"]
    assert yaml.safe_load((tmp_path / "out" / "config.yaml").read_text())["meshing"]["band"]["cell_mm"] == 1.0
    mesh = read_mesh(tmp_path / "out" / "case_2" / "mesh.vtk")
    assert np.median(np.abs(np.linalg.norm(mesh.vertices_world_mm - center_world, axis=1) - 10.0)) < 0.15
    assert fine > 0.5  # a coarser band than the default 0.5 mm

    for options, message in [({"band_mm": -1.0}, "--band-mm"), ({"mesher": "marching"}, "meshing.method")]:
        with pytest.raises(InputError, match=message):
            run_predict(tmp_path / "run", [tmp_path / "case_2.nii.gz"], tmp_path / "bad", roi_center=roi_center,
                        show_progress=False, **options)
        assert not (tmp_path / "bad" / "case_2").exists()


class HoledSphereModel(ImageLevelSetModel):
    """The image's level set, lifted off zero (by 1 unit) within ``radius_unit`` of each of ``holes_unit`` (H, 3):
    the field of an open sphere whose surface stops there, in the ROI's unit frame."""

    def __init__(self, holes_unit: np.ndarray, radii_unit: np.ndarray):
        super().__init__()
        self.holes_unit, self.radii_unit = torch.as_tensor(holes_unit).float(), torch.as_tensor(radii_unit).float()

    def decode(self, features, points_unit):
        inside = (torch.cdist(points_unit, self.holes_unit[None]) < self.radii_unit).any(dim=-1)
        return super().decode(features, points_unit) + inside.float()


@pytest.mark.parametrize("close_holes_mm, loops", [(3.5, 1), (0.0, 2)])
def test_udf_mc_closes_holes_smaller_than_close_holes_mm_and_keeps_the_opening(tmp_path, monkeypatch, close_holes_mm,
                                                                               loops):
    affine = AFFINE_CASES["flipped_oblique"]
    center_world = index_to_world(np.array([[35.0, 32.0, 24.0]]), affine)[0]
    radius_mm = 12.0
    write_image(tmp_path / "case_3.nii.gz", Volume(blurred_sphere_hu(affine, (70, 64, 48), center_world, radius_mm),
                                                   affine))
    config = preset_config("nudf-demo")
    config.roi.size_mm, config.roi.res = 40.0, 48
    config.meshing.close_holes_mm = close_holes_mm
    save_config(tmp_path / "run" / "config.yaml", config)
    mm_per_unit = config.roi.size_mm / 2
    # on the sphere (radius 12 mm = 0.6 unit about the ROI centre): an opening 16 mm across, a hole 1 mm across
    directions = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    model = HoledSphereModel(directions * radius_mm / mm_per_unit, np.array([8.0, 0.5]) / mm_per_unit)
    fake_nudf = dataclasses.replace(methods.get_method("nudf"), load=lambda run, which, device: (model, config))
    monkeypatch.setattr(methods, "_table", lambda: {"nudf": fake_nudf})

    run_predict(tmp_path / "run", [tmp_path / "case_3.nii.gz"], tmp_path / "out", show_progress=False,
                roi_center=",".join(str(c) for c in center_world))
    record = json.loads((tmp_path / "out" / "case_3" / "prediction.json").read_text())
    lengths_mm = record["meshing"]["boundary_loops_mm"]
    assert len(lengths_mm) == loops and record["meshing"]["n_loops_before_closing"] == 2
    assert 40.0 < lengths_mm[0] < 60.0  # the opening's rim: 2π · 8 mm ≈ 50 mm, kept open
    mesh = read_mesh(tmp_path / "out" / "case_3" / "mesh.vtk")
    radial_error_mm = np.abs(np.linalg.norm(mesh.vertices_world_mm - center_world, axis=1) - radius_mm)
    assert np.median(radial_error_mm) < 0.1 and radial_error_mm.max() < 0.5  # the patch lies on the sphere too
