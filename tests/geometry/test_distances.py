"""Exact point→mesh distances against analytic planes and spheres."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh

from implicitseg.geometry.distances import closest_points_on_mesh, signed_distance, unsigned_distance

SQUARE_VERTICES = np.array([[-50.0, -50.0, 0.0], [50.0, -50.0, 0.0], [50.0, 50.0, 0.0], [-50.0, 50.0, 0.0]])
SQUARE_FACES = np.array([[0, 1, 2], [0, 2, 3]])


def test_unsigned_distance_to_a_square_is_height_inside_and_distance_to_edge_outside() -> None:
    rng = np.random.default_rng(0)
    above = np.column_stack([rng.uniform(-40, 40, (200, 2)), rng.uniform(-30, 30, 200)])
    distance = unsigned_distance(above, SQUARE_VERTICES, SQUARE_FACES)
    np.testing.assert_allclose(distance, np.abs(above[:, 2]), atol=1e-9)
    beside = np.array([[60.0, 0.0, 5.0], [-53.0, 10.0, -4.0], [60.0, 60.0, 0.0]])
    expected = np.array([np.hypot(10, 5), np.hypot(3, 4), np.hypot(10, 10)])
    np.testing.assert_allclose(unsigned_distance(beside, SQUARE_VERTICES, SQUARE_FACES), expected, atol=1e-9)


def test_distance_to_a_sphere_mesh_matches_the_analytic_sphere() -> None:
    center = np.array([120.0, -80.0, 35.0])
    radius = 10.0
    sphere = trimesh.creation.icosphere(subdivisions=5, radius=radius)
    vertices = np.asarray(sphere.vertices) + center
    rng = np.random.default_rng(1)
    points = center + rng.uniform(-25, 25, size=(2000, 3))
    exact = np.abs(np.linalg.norm(points - center, axis=1) - radius)
    # The faces sit at most r(1 - cos(edge / 2r)) ≈ 0.01 mm inside the true sphere.
    np.testing.assert_allclose(unsigned_distance(points, vertices, sphere.faces), exact, atol=0.02)


def test_closest_points_lie_on_the_mesh_at_the_returned_distance() -> None:
    rng = np.random.default_rng(2)
    points = rng.uniform(-70, 70, size=(300, 3))
    distance, closest, face_index = closest_points_on_mesh(points, SQUARE_VERTICES, SQUARE_FACES)
    np.testing.assert_allclose(np.linalg.norm(points - closest, axis=1), distance, atol=1e-9)
    np.testing.assert_allclose(closest[:, 2], 0.0, atol=1e-12)
    assert np.all(np.abs(closest[:, :2]) <= 50.0 + 1e-9)
    assert set(face_index.tolist()) <= {0, 1}


def test_signed_distance_is_negative_inside_and_positive_outside() -> None:
    sphere = trimesh.creation.icosphere(subdivisions=4, radius=5.0)
    points = np.array([[0.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 8.0], [-6.0, 0.0, 0.0]])
    signed = signed_distance(points, sphere.vertices, sphere.faces)
    np.testing.assert_allclose(signed, [-5.0, -2.0, 3.0, 1.0], atol=0.05)


def test_distance_rejects_bad_inputs() -> None:
    with pytest.raises(ValueError, match="no faces"):
        unsigned_distance(np.zeros((1, 3)), SQUARE_VERTICES, np.zeros((0, 3), dtype=int))
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        unsigned_distance(np.zeros((4, 2)), SQUARE_VERTICES, SQUARE_FACES)
    with pytest.raises(ValueError, match="NaN"):
        unsigned_distance(np.array([[np.nan, 0.0, 0.0]]), SQUARE_VERTICES, SQUARE_FACES)


def test_results_come_back_in_the_query_order() -> None:
    # Queries are reordered internally (Morton order); each answer must still belong to its own point.
    rng = np.random.default_rng(3)
    points = rng.uniform(-60, 60, size=(5_000, 3))
    distance, closest, _ = closest_points_on_mesh(points, SQUARE_VERTICES, SQUARE_FACES)
    clamped = np.column_stack([np.clip(points[:, :2], -50, 50), np.zeros(len(points))])
    np.testing.assert_allclose(closest, clamped, atol=1e-9)
    np.testing.assert_allclose(distance, np.linalg.norm(points - clamped, axis=1), atol=1e-9)
    sphere = trimesh.creation.icosphere(subdivisions=3, radius=20.0)
    signed = signed_distance(points, sphere.vertices, sphere.faces)
    radial = np.linalg.norm(points, axis=1)
    away_from_shell = np.abs(radial - 20.0) > 1.0  # the icosphere's faces cut up to ~0.5 mm inside the sphere
    np.testing.assert_array_equal((signed < 0)[away_from_shell], (radial < 20.0)[away_from_shell])
