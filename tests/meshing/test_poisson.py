"""Point cloud → mesh: open surfaces stay open, closed ones close, vertices lie on the sampled surface."""

from __future__ import annotations

import numpy as np
import pytest

from implicitseg.config import MeshingConfig
from implicitseg.errors import InputError
from implicitseg.meshing.components import boundary_edges
from implicitseg.meshing.poisson import max_hole_edges, mesh_from_point_cloud, orient_normals

CENTRE_WORLD_MM = np.array([120.0, -80.0, 250.0])  # far from the origin, as world coordinates are
RADIUS_MM = 10.0
SMALL = MeshingConfig(n_subsample=3_000, poisson_depth=7)


def sphere_cloud(n: int, *, seed: int = 0) -> np.ndarray:
    """(n, 3) directions uniform on the unit sphere."""
    directions = np.random.default_rng(seed).normal(size=(n, 3))
    return directions / np.linalg.norm(directions, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def hemisphere_result():
    directions = sphere_cloud(50_000)
    directions[:, 2] = np.abs(directions[:, 2])  # the cap z < 0 is missing: an open surface
    return mesh_from_point_cloud(CENTRE_WORLD_MM + RADIUS_MM * directions, SMALL)


def test_open_hemisphere_stays_open_and_lies_on_the_sphere(hemisphere_result):
    mesh, info = hemisphere_result
    offsets_mm = mesh.vertices_world_mm - CENTRE_WORLD_MM
    radial_error_mm = np.abs(np.linalg.norm(offsets_mm, axis=1) - RADIUS_MM)
    assert radial_error_mm[offsets_mm[:, 2] > 1.0].max() < 0.05  # away from the rim: on the sphere
    # Distance to the analytic open hemisphere (below z = 0 the nearest point is on the rim circle): the
    # rim may reach past the data by about the trim support radius plus one Poisson cell.
    rim_distance_mm = np.hypot(np.linalg.norm(offsets_mm[:, :2], axis=1) - RADIUS_MM, offsets_mm[:, 2])
    distance_mm = np.where(offsets_mm[:, 2] >= 0, radial_error_mm, rim_distance_mm)
    assert distance_mm.max() < SMALL.trim_support_mm + 0.25
    assert radial_error_mm.max() < 0.25
    assert info["n_boundary_edges"] > 0
    assert len(boundary_edges(mesh.faces)) == info["n_boundary_edges"]
    # Nothing across the missing cap: trimming re-opens the surface within ~support radius of the rim.
    assert offsets_mm[:, 2].min() > -1.0
    # The boundary is the rim: a loop near z = 0 around the full circle, long enough to be the cut.
    rim = mesh.vertices_world_mm[np.unique(boundary_edges(mesh.faces))] - CENTRE_WORLD_MM
    assert np.abs(rim[:, 2]).max() < 1.0
    angles = np.sort(np.arctan2(rim[:, 1], rim[:, 0]))
    assert np.diff(np.concatenate([angles, [angles[0] + 2 * np.pi]])).max() < 0.2
    # Area close to the analytic hemisphere's 2πR² (the rim may reach ~0.5 mm below z = 0).
    assert mesh.face_areas_mm2.sum() == pytest.approx(2 * np.pi * RADIUS_MM**2, rel=0.08)


def test_hemisphere_faces_point_away_from_the_centroid(hemisphere_result):
    mesh, _ = hemisphere_result
    centroids_mm = mesh.vertices_world_mm[mesh.faces].mean(axis=1) - CENTRE_WORLD_MM
    outward = np.einsum("ij,ij->i", mesh.face_normals, centroids_mm) > 0
    assert outward.mean() > 0.99


def test_hemisphere_info_reports_steps(hemisphere_result):
    mesh, info = hemisphere_result
    assert info["n_dense"] == 50_000
    assert abs(info["n_subsample"] - SMALL.n_subsample) <= 0.05 * SMALL.n_subsample
    assert info["n_trimmed_faces"] > 0  # Poisson closed the cap; trimming removed it
    assert info["n_faces"] == len(mesh.faces)
    for step in ("subsample_s", "normals_s", "orient_s", "poisson_s", "trim_s", "close_holes_s", "total_s"):
        assert info[step] >= 0


def test_same_cloud_and_seed_give_the_same_mesh(hemisphere_result):
    directions = sphere_cloud(50_000)
    directions[:, 2] = np.abs(directions[:, 2])
    again, _ = mesh_from_point_cloud(CENTRE_WORLD_MM + RADIUS_MM * directions, SMALL)
    np.testing.assert_array_equal(again.vertices_world_mm, hemisphere_result[0].vertices_world_mm)
    np.testing.assert_array_equal(again.faces, hemisphere_result[0].faces)


def test_closed_sphere_gives_a_closed_surface():
    mesh, info = mesh_from_point_cloud(CENTRE_WORLD_MM + RADIUS_MM * sphere_cloud(40_000, seed=1), SMALL)
    assert info["n_boundary_edges"] == 0
    radial_error_mm = np.abs(np.linalg.norm(mesh.vertices_world_mm - CENTRE_WORLD_MM, axis=1) - RADIUS_MM)
    assert radial_error_mm.max() < 0.2
    assert mesh.face_areas_mm2.sum() == pytest.approx(4 * np.pi * RADIUS_MM**2, rel=0.03)


@pytest.mark.parametrize("hole_radius_mm, closes", [(0.8, True), (4.0, False)])
def test_holes_below_close_holes_mm_are_filled_larger_ones_kept(hole_radius_mm, closes):
    directions = sphere_cloud(40_000, seed=2)
    # Remove a polar cap of base radius hole_radius_mm: after trimming the hole's diameter is about
    # 2 · (hole_radius_mm - trim_support_mm), i.e. ~0.9 mm (< 3.5 mm, filled) or ~7.3 mm (kept open).
    keep = directions[:, 2] < np.sqrt(1 - (hole_radius_mm / RADIUS_MM) ** 2)
    mesh, info = mesh_from_point_cloud(CENTRE_WORLD_MM + RADIUS_MM * directions[keep], SMALL)
    assert (info["n_boundary_edges"] == 0) == closes


def test_orient_normals_makes_random_signs_consistent_and_outward():
    directions = sphere_cloud(2_000, seed=3)
    points_mm = CENTRE_WORLD_MM + RADIUS_MM * directions
    signs = np.where(np.random.default_rng(4).random(len(directions)) < 0.5, -1.0, 1.0)
    oriented = orient_normals(points_mm, directions * signs[:, None], k=10)
    np.testing.assert_allclose(oriented, directions)


def test_max_hole_edges_converts_diameter_to_perimeter_in_edges():
    # One right triangle with legs 1 mm: edge lengths 1, 1, √2 → mean (2 + √2) / 3 mm.
    vertices = np.array([[0.0, 0, 0], [1, 0, 0], [0, 1, 0]])
    mean_edge_mm = (2 + np.sqrt(2)) / 3
    assert max_hole_edges(vertices, np.array([[0, 1, 2]]), 3.5) == int(np.ceil(np.pi * 3.5 / mean_edge_mm))
    assert max_hole_edges(vertices, np.array([[0, 1, 2]]), 0.0) == 0


@pytest.mark.parametrize(
    "points",
    [np.zeros((0, 3)), np.random.default_rng(0).normal(size=(20, 3)), np.zeros((500, 2)), np.ones((500, 3)),
     np.vstack([np.random.default_rng(0).normal(size=(500, 3)), [[np.nan, 0.0, 0.0]]])],
)
def test_bad_clouds_raise_input_error(points):
    with pytest.raises(InputError):
        mesh_from_point_cloud(points, SMALL)


def test_cloud_too_sparse_for_trimming_raises_input_error():
    config = MeshingConfig(n_subsample=500, poisson_depth=6, trim_support_mm=0.01, trim_min_points=5)
    with pytest.raises(InputError, match="meshing produced no surface"):
        mesh_from_point_cloud(CENTRE_WORLD_MM + RADIUS_MM * sphere_cloud(2_000), config)
