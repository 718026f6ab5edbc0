import numpy as np
import pytest

from helpers import AFFINE_CASES
from implicitseg.geometry.frames import (
    CanonicalMesh,
    Roi,
    anchor_picct,
    geometry_from_affine,
    index_to_world,
    lps_to_ras,
    ras_to_lps,
    world_to_index,
)


@pytest.mark.parametrize("name", sorted(AFFINE_CASES))
def test_world_point_round_trips_through_index_roi_and_unit(name):
    affine = AFFINE_CASES[name]
    rng = np.random.default_rng(0)
    points_world_mm = rng.uniform(-80, 80, size=(500, 3))
    back = index_to_world(world_to_index(points_world_mm, affine), affine)
    assert np.abs(back - points_world_mm).max() < 1e-6
    roi = Roi((12.5, -3.0, 40.0), 70.0, 64)
    assert np.abs(roi.unit_to_world(roi.world_to_unit(points_world_mm)) - points_world_mm).max() < 1e-6
    assert np.abs(roi.roi_index_to_world(roi.world_to_roi_index(points_world_mm)) - points_world_mm).max() < 1e-6


@pytest.mark.parametrize("name", sorted(AFFINE_CASES))
def test_affine_follows_itk_formula(name):
    affine = AFFINE_CASES[name]
    origin, spacing, direction = geometry_from_affine(affine)
    index = np.array([[3.0, 7.0, 11.0]])
    expected = origin + direction @ np.diag(spacing) @ index[0]
    assert np.allclose(index_to_world(index, affine)[0], expected)
    assert np.allclose(index_to_world(np.zeros((1, 3)), affine)[0], origin)


def test_roi_unit_cube_corners_and_spacing():
    roi = Roi((10.0, 20.0, 30.0), 70.0, 64)
    assert roi.spacing_mm == pytest.approx(70.0 / 63)
    assert np.allclose(roi.world_to_unit(np.array([[10.0, 20.0, 30.0]])), 0.0)
    assert np.allclose(roi.world_to_unit(np.array([[45.0, -15.0, 30.0]])), [[1.0, -1.0, 0.0]])
    # voxel 0 on the lower face, voxel res-1 on the upper face
    assert np.allclose(roi.roi_index_to_world(np.array([[0, 0, 0], [63, 63, 63]])), [[-25, -15, -5], [45, 55, 65]])
    assert roi.unit_to_mm(0.1) == pytest.approx(3.5)
    assert roi.mm_to_unit(np.array([35.0]))[0] == pytest.approx(1.0)
    assert Roi.from_json(roi.to_json()) == roi


def test_ras_lps_flip_x_and_y():
    point_ras = np.array([[1.0, 2.0, 3.0]])
    assert np.allclose(ras_to_lps(point_ras), [[-1.0, -2.0, 3.0]])
    assert np.allclose(lps_to_ras(ras_to_lps(point_ras)), point_ras)


@pytest.mark.parametrize("bad", [dict(center_world_mm=(0, 0, np.nan)), dict(size_mm=-1.0), dict(res=1)])
def test_roi_rejects_bad_values_with_message(bad):
    arguments = dict(center_world_mm=(0, 0, 0), size_mm=70.0, res=64) | bad
    with pytest.raises(ValueError, match="ROI"):
        Roi(**arguments)


def test_the_anchor_picct_moves_the_anchor_centre_to_the_origin_and_scales():
    center = np.array([12.0, -40.0, 7.5])
    picct = anchor_picct(center, 0.02)
    points_world_mm = np.array([[12.0, -40.0, 7.5], [62.0, -40.0, 7.5]])
    assert np.allclose(picct.world_to_canonical(points_world_mm), [[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    assert np.allclose(picct.canonical_to_world(picct.world_to_canonical(points_world_mm)), points_world_mm)


def test_a_canonical_mesh_names_its_frame_and_checks_its_faces():
    mesh = CanonicalMesh(np.eye(3, dtype=np.float32), [[0, 1, 2]])
    assert mesh.vertices_canonical.dtype == np.float64 and mesh.faces.dtype == np.int64
    assert not hasattr(mesh, "vertices_world_mm")
    with pytest.raises(ValueError, match="faces"):
        CanonicalMesh(np.eye(3), [[0, 1, 3]])
