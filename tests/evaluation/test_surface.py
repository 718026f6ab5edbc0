"""Surface metrics: every metric against a plain brute-force computation, plus analytic cases."""

from __future__ import annotations

import numpy as np
import pytest

from implicitseg.errors import InputError
from implicitseg.evaluation.surface import (
    compute_surface_metrics,
    missing_surface_metrics,
    point_to_mesh_distance_mm,
    sample_surface,
    surface_metric_names,
)
from implicitseg.io.meshes import Mesh


def grid_square(x_mm: tuple[float, float], y_mm: tuple[float, float], z_mm: float, nx: int, ny: int) -> Mesh:
    """Flat rectangle at height ``z_mm`` triangulated on an ``nx`` × ``ny`` vertex grid."""
    xs, ys = np.linspace(*x_mm, nx), np.linspace(*y_mm, ny)
    gx, gy = np.meshgrid(xs, ys, indexing="ij")
    vertices = np.stack([gx.ravel(), gy.ravel(), np.full(gx.size, z_mm)], axis=1)
    index = np.arange(nx * ny).reshape(nx, ny)
    a, b, c, d = index[:-1, :-1].ravel(), index[1:, :-1].ravel(), index[1:, 1:].ravel(), index[:-1, 1:].ravel()
    return Mesh(vertices, np.concatenate([np.stack([a, b, c], 1), np.stack([a, c, d], 1)]))


def uv_sphere(centre_mm: np.ndarray, radius_mm: float, n_lat: int, n_lon: int) -> Mesh:
    """Closed latitude/longitude triangulated sphere with poles."""
    theta = np.linspace(0, np.pi, n_lat + 1)[1:-1]
    phi = np.linspace(0, 2 * np.pi, n_lon, endpoint=False)
    t, p = np.meshgrid(theta, phi, indexing="ij")
    ring = np.stack([np.sin(t) * np.cos(p), np.sin(t) * np.sin(p), np.cos(t)], axis=-1).reshape(-1, 3)
    vertices = np.concatenate([[[0, 0, 1]], ring, [[0, 0, -1]]]) * radius_mm + centre_mm
    faces = []
    south = len(vertices) - 1
    for j in range(n_lon):
        k = (j + 1) % n_lon
        faces.append([0, 1 + j, 1 + k])
        last = 1 + (n_lat - 2) * n_lon
        faces.append([south, last + k, last + j])
        for i in range(n_lat - 2):
            r0, r1 = 1 + i * n_lon, 1 + (i + 1) * n_lon
            faces += [[r0 + j, r1 + j, r1 + k], [r0 + j, r1 + k, r0 + k]]
    return Mesh(vertices, np.array(faces))


def brute_force_distance_mm(points: np.ndarray, mesh: Mesh) -> np.ndarray:
    """(N,) distance to the nearest triangle: to the plane when the foot lies inside, else to the edges."""
    a, b, c = (mesh.vertices_world_mm[mesh.faces[:, i]][None] for i in range(3))  # (1, F, 3)
    p = points[:, None, :]  # (N, 1, 3)
    normal = np.cross(b - a, c - a)
    normal = normal / np.linalg.norm(normal, axis=-1, keepdims=True)
    height = np.sum((p - a) * normal, axis=-1)
    foot = p - height[..., None] * normal
    inside = np.ones(height.shape, dtype=bool)
    for start, end in ((a, b), (b, c), (c, a)):
        inside &= np.sum(np.cross(end - start, foot - start) * normal, axis=-1) >= 0
    best = np.where(inside, np.abs(height), np.inf)
    for start, end in ((a, b), (b, c), (c, a)):
        edge = end - start
        s = np.clip(np.sum((p - start) * edge, axis=-1) / np.sum(edge * edge, axis=-1), 0, 1)
        best = np.minimum(best, np.linalg.norm(p - (start + s[..., None] * edge), axis=-1))
    return best.min(axis=1)


PRED = uv_sphere(np.array([10.0, -5.0, 30.0]), 5.0, 10, 16)
GT = uv_sphere(np.array([10.4, -5.2, 30.1]), 5.6, 12, 14)


def test_sphere_meshes_have_a_few_hundred_faces():
    assert 200 <= len(PRED.faces) <= 400 and 200 <= len(GT.faces) <= 400


def test_point_to_mesh_distance_matches_brute_force():
    points = np.random.default_rng(0).normal(scale=6.0, size=(500, 3)) + np.array([10.0, -5.0, 30.0])
    np.testing.assert_allclose(point_to_mesh_distance_mm(points, GT), brute_force_distance_mm(points, GT), atol=1e-9)


def test_every_metric_matches_brute_force():
    n, seed = 3_000, 7
    metrics = compute_surface_metrics(PRED, GT, n_samples=n, completion_mm=0.5, seed=seed)
    vertex_to_gt = brute_force_distance_mm(PRED.vertices_world_mm, GT)  # every vertex is used by a face
    pred_to_gt = brute_force_distance_mm(sample_surface(PRED, n, seed), GT)
    gt_to_pred = brute_force_distance_mm(sample_surface(GT, n, seed + 1), PRED)
    expected = {
        "chamfer_pred_to_gt_mm": vertex_to_gt.mean(),
        "chamfer_symmetric_mm": (pred_to_gt.mean() + gt_to_pred.mean()) / 2,
        "accuracy_90_mm": np.percentile(pred_to_gt, 90),
        "completion_at_0.5mm": np.mean(gt_to_pred <= 0.5),
        "hd95_mm": max(np.percentile(pred_to_gt, 95), np.percentile(gt_to_pred, 95)),
        "far_area_fraction_at_0.5mm": np.mean(pred_to_gt > 0.5),
    }
    assert tuple(metrics) == surface_metric_names(0.5) == tuple(expected)
    for name, value in expected.items():
        assert metrics[name] == pytest.approx(value, abs=1e-9), name
    # The case is not degenerate: the thresholded metrics sit strictly between 0 and 1.
    assert 0.05 < metrics["completion_at_0.5mm"] < 0.95 and 0.05 < metrics["far_area_fraction_at_0.5mm"] < 0.95


def test_default_names_are_the_specs():
    assert surface_metric_names() == (
        "chamfer_pred_to_gt_mm", "chamfer_symmetric_mm", "accuracy_90_mm", "completion_at_2mm", "hd95_mm",
        "far_area_fraction_at_2mm",
    )
    missing = missing_surface_metrics()
    assert tuple(missing) == surface_metric_names() and missing["completion_at_2mm"] == 0.0
    assert all(np.isnan(value) for name, value in missing.items() if name != "completion_at_2mm")


@pytest.mark.parametrize("gap_mm, completion, far", [(1.0, 1.0, 0.0), (3.0, 0.0, 1.0)])
def test_parallel_squares(gap_mm, completion, far):
    pred = grid_square((0, 10), (0, 10), gap_mm, 6, 6)
    gt = grid_square((0, 10), (0, 10), 0.0, 4, 5)
    metrics = compute_surface_metrics(pred, gt, n_samples=5_000)
    for name in ("chamfer_pred_to_gt_mm", "chamfer_symmetric_mm", "accuracy_90_mm", "hd95_mm"):
        assert metrics[name] == pytest.approx(gap_mm, abs=1e-9), name
    assert metrics["completion_at_2mm"] == completion
    assert metrics["far_area_fraction_at_2mm"] == far


def test_prediction_overhanging_the_ground_truth():
    # pred covers x ∈ [0, 2], GT x ∈ [0, 1] in the same plane: pred→GT distance is max(x - 1, 0), so half the
    # predicted area is at distance 0 and half uniform in [0, 1] mm; GT→pred distances are all 0.
    pred = grid_square((0, 2), (0, 1), 0.0, 5, 3)
    gt = grid_square((0, 1), (0, 1), 0.0, 2, 2)
    metrics = compute_surface_metrics(pred, gt, n_samples=100_000, completion_mm=0.5)
    assert metrics["chamfer_pred_to_gt_mm"] == pytest.approx((0 + 0 + 0 + 0.5 + 1.0) / 5)  # vertex columns
    assert metrics["chamfer_symmetric_mm"] == pytest.approx(0.5 * 0.25, abs=0.005)
    assert metrics["accuracy_90_mm"] == pytest.approx(0.8, abs=0.01)
    assert metrics["hd95_mm"] == pytest.approx(0.9, abs=0.01)
    assert metrics["completion_at_0.5mm"] == 1.0
    assert metrics["far_area_fraction_at_0.5mm"] == pytest.approx(0.25, abs=0.01)


def test_sample_surface_is_area_uniform_on_the_surface_and_reproducible():
    # Two triangles of area 0.5 mm² and 4.5 mm²: 10 % and 90 % of the samples.
    mesh = Mesh(np.array([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [5, 0, 0], [8, 0, 0], [5, 3, 0]]),
                np.array([[0, 1, 2], [3, 4, 5]]))
    samples = sample_surface(mesh, 20_000, seed=3)
    assert samples.shape == (20_000, 3)
    np.testing.assert_array_equal(samples, sample_surface(mesh, 20_000, seed=3))
    assert np.abs(point_to_mesh_distance_mm(samples, mesh)).max() < 1e-12
    in_small = samples[:, 0] <= 1.0
    assert in_small.mean() == pytest.approx(0.1, abs=0.01)
    # Uniform inside a triangle: the mean is its centroid.
    np.testing.assert_allclose(samples[~in_small].mean(axis=0), [6.0, 1.0, 0.0], atol=0.03)


def test_empty_or_degenerate_meshes_raise_input_error():
    empty = Mesh(np.zeros((3, 3)), np.zeros((0, 3), dtype=np.int64))
    flat = Mesh(np.array([[0.0, 0, 0], [1, 0, 0], [2, 0, 0]]), np.array([[0, 1, 2]]))
    for pred, gt in ((empty, GT), (PRED, empty), (flat, GT)):
        with pytest.raises(InputError):
            compute_surface_metrics(pred, gt, n_samples=100)
