"""An image and its labelmap / mesh: same grid within stated tolerances, declared label values, mesh inside."""

import numpy as np
import pytest

from helpers import AFFINE_CASES, rotation_matrix
from implicitseg.errors import InputError
from implicitseg.geometry.frames import affine_from_geometry, geometry_from_affine, ras_to_lps
from implicitseg.io.images import Volume, VolumeSeries, read_image, write_image
from implicitseg.io.meshes import Mesh
from implicitseg.io.pairs import (GRID_DIRECTION_TOLERANCE_RAD, GRID_ORIGIN_TOLERANCE_MM, check_label_grid,
                                  check_label_values, check_mesh_in_image, grid_differences, label_onto_grid)

SHAPE = (20, 18, 12)


def _volume(affine, shape=SHAPE):
    return Volume(np.zeros(shape, np.int16), affine)


def _moved(affine, *, origin_mm=(0.0, 0.0, 0.0), spacing_factor=1.0, turn_degrees=0.0):
    origin, spacing, direction = geometry_from_affine(affine)
    return affine_from_geometry(origin + np.asarray(origin_mm), spacing * spacing_factor,
                                rotation_matrix((0.0, 0.0, turn_degrees)) @ direction)


@pytest.mark.parametrize("name", ["oblique", "flipped_oblique"])
def test_a_labelmap_written_with_its_image_is_on_its_grid(tmp_path, name):
    # NIfTI stores the geometry in float32 (RAS): what comes back differs from the original by ~1e-5 mm
    write_image(tmp_path / "label.nii.gz", _volume(AFFINE_CASES[name]))
    assert grid_differences(_volume(AFFINE_CASES[name]), read_image(tmp_path / "label.nii.gz")) == []


def test_each_difference_beyond_its_tolerance_is_named():
    image = _volume(AFFINE_CASES["oblique"])
    within = _moved(image.affine_lps, origin_mm=(GRID_ORIGIN_TOLERANCE_MM / 2, 0, 0))
    assert grid_differences(image, _volume(within)) == []
    assert grid_differences(image, _volume(_moved(image.affine_lps, origin_mm=(3.0, 4.0, 0.0))))[0].startswith(
        "origin 5.00 mm apart: image (")
    assert grid_differences(image, _volume(image.affine_lps, (20, 18, 2))) == [
        "size: image 20×18×12, label 20×18×2"]
    assert grid_differences(image, _volume(_moved(image.affine_lps, spacing_factor=1.01)))[0].startswith("spacing: ")
    turned = np.degrees(GRID_DIRECTION_TOLERANCE_RAD) * 5
    assert grid_differences(image, _volume(_moved(image.affine_lps, turn_degrees=turned))) == [
        f"direction {turned:.2f}° apart"]
    series = VolumeSeries(np.zeros((3, *SHAPE), np.int16), image.affine_lps)
    assert grid_differences(series, VolumeSeries(np.zeros((2, *SHAPE), np.int16), image.affine_lps)) == [
        "frames: image 3, label 2"]


def test_label_on_another_grid_names_both_files_and_resampling_puts_it_on_the_image_grid():
    image = _volume(AFFINE_CASES["anisotropic"])
    label_array = np.zeros(SHAPE, np.int16)
    label_array[5:9, 6:10, 3:6] = 1
    shifted = Volume(label_array, _moved(image.affine_lps, origin_mm=(5.0, 0.0, 0.0)))
    with pytest.raises(InputError, match=r"label.nii.gz: labelmap not on the grid of its image image.nii.gz: "
                                         r"origin 5.00 mm apart"):
        check_label_grid(shifted, "label.nii.gz", image, "image.nii.gz")
    on_grid = label_onto_grid(shifted, image)
    assert on_grid.shape == SHAPE and np.allclose(on_grid.affine_lps, image.affine_lps)
    # the same voxels in world space: 5 mm along x = 5 / 0.6 voxels along i (anisotropic: i is x, 0.6 mm)
    world_center = shifted.voxel_centers_world_mm(label_array > 0).mean(axis=0)
    np.testing.assert_allclose(on_grid.voxel_centers_world_mm(on_grid.array > 0).mean(axis=0), world_center, atol=0.4)
    assert set(np.unique(on_grid.array)) == {0, 1}


def test_undeclared_label_values_are_listed():
    labels = np.array([[[0, 1, 3, 7]]])
    with pytest.raises(InputError, match=r"l.nii.gz: label value\(s\) 3, 7 are not declared in dataset.json's "
                                         r"labels \(0, 1\)"):
        check_label_values(labels, "l.nii.gz", {0, 1})
    check_label_values(labels, "l.nii.gz", {0, 1, 3, 7})


def test_mesh_outside_its_image_is_refused_with_the_lps_ras_hint_when_the_flip_fits():
    affine = affine_from_geometry([40.0, 60.0, -20.0], [1.0, 1.0, 1.0], np.eye(3))
    image = _volume(affine)
    center = np.array([50.0, 69.0, -14.0])
    corners = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [-1, 0, 0], [0, -1, 0], [0, 0, -1]], float) * 3.0
    faces = [[0, 1, 2], [3, 4, 5]]
    check_mesh_in_image(Mesh(center + corners, faces), "m.ply", image, "i.nii.gz")
    with pytest.raises(InputError, match=r"m.ply: only 0% of the mesh's vertices lie inside its image i.nii.gz; in "
                                         r"the other convention \(LPS ↔ RAS\) 100% would"):
        check_mesh_in_image(Mesh(ras_to_lps(center + corners), faces), "m.ply", image, "i.nii.gz")
    with pytest.raises(InputError, match="does the mesh belong to this image"):
        check_mesh_in_image(Mesh(center + corners + 100.0, faces), "m.ply", image, "i.nii.gz")
