"""Marching-cubes surfaces land on the analytic shape in world LPS mm, with outward normals, on any grid."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import AFFINE_CASES, sphere_volume

from implicitseg.errors import InputError
from implicitseg.geometry.frames import Roi, index_to_world
from implicitseg.io.images import Volume
from implicitseg.io.meshes import Mesh
from implicitseg.meshing.isosurface import (
    labelmap_to_mesh,
    probability_to_mesh,
    roi_probability_to_mesh,
)

SHAPE = (40, 40, 24)
RADIUS_MM = 7.0


def enclosed_volume_mm3(mesh: Mesh) -> float:
    """Signed enclosed volume by the divergence theorem: positive iff the normals point outwards."""
    corners = mesh.vertices_world_mm[mesh.faces]
    return float(np.einsum("fi,fi->f", corners[:, 0], np.cross(corners[:, 1], corners[:, 2])).sum() / 6.0)


def is_closed(mesh: Mesh) -> bool:
    edges = np.sort(mesh.faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), axis=1)
    _, counts = np.unique(edges, axis=0, return_counts=True)
    return bool(np.all(counts == 2))


@pytest.mark.parametrize("name", sorted(AFFINE_CASES))
def test_labelmap_sphere_lands_on_the_sphere_with_outward_normals(name: str) -> None:
    affine = AFFINE_CASES[name]
    center = index_to_world(np.array([[19.5, 19.5, 11.5]]), affine)[0]
    labels = sphere_volume(affine, SHAPE, center, RADIUS_MM).astype(np.int16)
    mesh = labelmap_to_mesh(Volume(labels, affine))
    voxel_mm = np.linalg.norm(affine[:3, :3], axis=0).max()
    radial = np.linalg.norm(mesh.vertices_world_mm - center, axis=1)
    assert np.abs(radial - RADIUS_MM).max() < voxel_mm
    outward = np.einsum("fi,fi->f", mesh.vertices_world_mm[mesh.faces].mean(axis=1) - center, mesh.face_normals)
    assert np.all(outward > 0)
    assert enclosed_volume_mm3(mesh) == pytest.approx(4 / 3 * np.pi * RADIUS_MM**3, rel=0.1)
    assert is_closed(mesh)


def test_labelmap_picks_one_label_and_refuses_a_missing_one() -> None:
    affine = AFFINE_CASES["oblique"]
    small = index_to_world(np.array([[10.0, 10.0, 11.5]]), affine)[0]
    large = index_to_world(np.array([[27.0, 27.0, 11.5]]), affine)[0]
    labels = (sphere_volume(affine, SHAPE, small, 3.0) + 2 * sphere_volume(affine, SHAPE, large, 5.0)).astype(np.int16)
    mesh = labelmap_to_mesh(Volume(labels, affine), label=2)
    assert np.linalg.norm(mesh.center_of_mass_world_mm() - large) < 0.5
    both = labelmap_to_mesh(Volume(labels, affine))
    assert len(both.faces) > len(mesh.faces)
    with pytest.raises(InputError, match="label 3"):
        labelmap_to_mesh(Volume(labels, affine), label=3)


def test_object_touching_the_border_is_closed_half_a_voxel_outside() -> None:
    values = np.zeros((6, 6, 6), dtype=np.float32)
    values[:3] = 1.0  # fills the lower half along i, touching the i = 0 face
    mesh = probability_to_mesh(values, np.eye(4))
    assert is_closed(mesh)
    np.testing.assert_allclose(mesh.vertices_world_mm.min(axis=0), [-0.5, -0.5, -0.5])
    np.testing.assert_allclose(mesh.vertices_world_mm.max(axis=0), [2.5, 5.5, 5.5])
    assert enclosed_volume_mm3(mesh) > 0


def test_probability_map_level_moves_the_surface() -> None:
    affine = AFFINE_CASES["anisotropic"]
    index = np.stack(np.meshgrid(*[np.arange(n) for n in SHAPE], indexing="ij"), axis=-1).reshape(-1, 3)
    center = index_to_world(np.array([[19.5, 19.5, 11.5]]), affine)[0]
    radial = np.linalg.norm(index_to_world(index, affine) - center, axis=1).reshape(SHAPE)
    probability = np.clip(1.0 - radial / 20.0, 0.0, 1.0)  # = 0.5 at 10 mm, 0.75 at 5 mm
    for level, radius in ((0.5, 10.0), (0.75, 5.0)):
        mesh = probability_to_mesh(probability, affine, level=level)
        np.testing.assert_allclose(np.linalg.norm(mesh.vertices_world_mm - center, axis=1), radius, atol=0.1)


def test_roi_map_in_zyx_order_lands_at_the_right_world_place() -> None:
    roi = Roi((10.0, -40.0, 120.0), 40.0, 33)
    assert np.allclose(index_to_world(np.array([[32.0, 0.0, 16.0]]), roi.index_affine_lps),
                       roi.roi_index_to_world(np.array([[32.0, 0.0, 16.0]])))
    blob_world = np.array(roi.center_world_mm) + [12.0, -5.0, 3.0]
    grid_xyz = np.stack(np.meshgrid(*[np.arange(33)] * 3, indexing="ij"), axis=-1).reshape(-1, 3)
    inside_xyz = (np.linalg.norm(roi.roi_index_to_world(grid_xyz) - blob_world, axis=1) < 5.0).reshape((33,) * 3)
    mesh = roi_probability_to_mesh(inside_xyz.transpose(2, 1, 0).astype(np.float32), roi)
    assert np.linalg.norm(mesh.center_of_mass_world_mm() - blob_world) < 0.3
    with pytest.raises(ValueError, match="Z, Y, X"):
        roi_probability_to_mesh(np.zeros((33, 33, 32)), roi)


def test_no_surface_and_nan_maps_raise_input_errors() -> None:
    with pytest.raises(InputError, match="no voxel above level"):
        probability_to_mesh(np.zeros((5, 5, 5)), np.eye(4))
    values = np.ones((5, 5, 5))
    values[2, 2, 2] = np.nan
    with pytest.raises(InputError, match="NaN"):
        probability_to_mesh(values, np.eye(4))
