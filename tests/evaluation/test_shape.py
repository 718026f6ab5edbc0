"""Shape metrics (ISMM): Chamfer and EMD on analytic spheres and hand-made clouds, and the ``shape`` evaluate kind."""

from __future__ import annotations

import csv
import itertools
import json
from pathlib import Path

import numpy as np
import pytest
from helpers import AFFINE_CASES, sphere_volume

from implicitseg.errors import InputError
from implicitseg.evaluation.shape import (
    N_CHAMFER,
    N_EMD,
    NORMALISATION,
    SHAPE_METRIC_NAMES,
    SHAPE_SAMPLING,
    chamfer_distance,
    compute_shape_metrics,
    earth_movers_distance,
    normalise_clouds,
)
from implicitseg.evaluation.surface import sample_surface
from implicitseg.evaluation.tables import KINDS, evaluate_folders
from implicitseg.geometry.frames import index_to_world
from implicitseg.io.images import Volume, read_labelmap, write_image
from implicitseg.io.meshes import Mesh, read_mesh, write_mesh
from implicitseg.meshing.isosurface import labelmap_to_mesh

N_CD, N_EM = 10_000, 300  # test-sized point counts (the paper's are 30,000 and 1,000)
CENTRE_MM = np.array([12.0, -30.0, 45.0])


def icosphere(centre_mm: np.ndarray, radius_mm: float, subdivisions: int = 4) -> Mesh:
    """Sphere mesh: an icosahedron whose faces are split in four ``subdivisions`` times, vertices pushed onto the
    sphere (level 4: 2,562 vertices, 5,120 faces; the faces sag inside the sphere by < 0.1 % of the radius)."""
    g = (1 + 5 ** 0.5) / 2
    vertices = [np.array(v, dtype=np.float64) for v in (
        (-1, g, 0), (1, g, 0), (-1, -g, 0), (1, -g, 0), (0, -1, g), (0, 1, g),
        (0, -1, -g), (0, 1, -g), (g, 0, -1), (g, 0, 1), (-g, 0, -1), (-g, 0, 1))]
    faces = [(0, 11, 5), (0, 5, 1), (0, 1, 7), (0, 7, 10), (0, 10, 11), (1, 5, 9), (5, 11, 4), (11, 10, 2),
             (10, 7, 6), (7, 1, 8), (3, 9, 4), (3, 4, 2), (3, 2, 6), (3, 6, 8), (3, 8, 9), (4, 9, 5),
             (2, 4, 11), (6, 2, 10), (8, 6, 7), (9, 8, 1)]
    for _ in range(subdivisions):
        midpoints: dict[tuple[int, int], int] = {}  # edge → index of its midpoint, shared by the two faces
        split = []
        for a, b, c in faces:
            corners = []
            for u, v in ((a, b), (b, c), (c, a)):
                key = (min(u, v), max(u, v))
                if key not in midpoints:
                    midpoints[key] = len(vertices)
                    vertices.append((vertices[u] + vertices[v]) / 2)
                corners.append(midpoints[key])
            ab, bc, ca = corners
            split += [(a, ab, ca), (b, bc, ab), (c, ca, bc), (ab, bc, ca)]
        faces = split
    unit = np.array(vertices)
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    return Mesh(unit * radius_mm + centre_mm, np.array(faces))


PRED = icosphere(CENTRE_MM, 10.0)
GT = icosphere(CENTRE_MM, 11.0)


def greedy_matching_mean(a: np.ndarray, b: np.ndarray) -> float:
    """Mean distance of the greedy matching: repeatedly pair the closest still unmatched points."""
    cost = np.linalg.norm(a[:, None] - b[None], axis=-1)
    total = 0.0
    for _ in range(len(a)):
        i, j = np.unravel_index(np.argmin(cost), cost.shape)
        total += cost[i, j]
        cost[i, :], cost[:, j] = np.inf, np.inf
    return total / len(a)


def test_icosphere_is_a_closed_sphere_mesh():
    assert len(PRED.faces) == 5_120 and len(PRED.vertices_world_mm) == 2_562
    np.testing.assert_allclose(np.linalg.norm(GT.vertices_world_mm - CENTRE_MM, axis=1), 11.0)
    assert PRED.face_areas_mm2.sum() == pytest.approx(4 * np.pi * 100, rel=0.01)


def test_paper_protocol_is_documented():
    assert (N_CHAMFER, N_EMD) == (30_000, 1_000)
    assert SHAPE_SAMPLING == {"n_chamfer": 30_000, "n_emd": 1_000, "normalisation": NORMALISATION}
    assert "unit sphere" in NORMALISATION


def test_concentric_spheres_one_millimetre_apart():
    metrics = compute_shape_metrics(PRED, GT, n_chamfer=N_CD, n_emd=N_EM, seed=0)
    assert tuple(metrics) == SHAPE_METRIC_NAMES
    # Every point pair is at least the radial gap (1 mm, less the faces' sag) apart; nearest neighbours add
    # only a small tangential part on top of it.
    assert 0.99 < metrics["chamfer_mm"] < 1.05
    assert abs(metrics["chamfer_mm"] - 1.0) < 0.05
    # The EMD is the exact optimal matching of the two sampled clouds; it is ≥ the gap but, drawn from
    # independent samples, carries the sampling floor (about the sample spacing, √(area / n) ≈ 2 mm here), so
    # it is not ≈ 1 mm at 300 points; the floor-free case is test_emd_of_radially_scaled_clouds_is_the_gap.
    emd_pred = sample_surface(PRED, N_EM, 2)
    emd_gt = sample_surface(GT, N_EM, 3)
    assert metrics["emd_mm"] == pytest.approx(earth_movers_distance(emd_pred, emd_gt), rel=1e-9)
    assert metrics["emd_mm"] > 0.99


def test_normalised_values_are_the_mm_values_over_the_ground_truth_radius():
    metrics = compute_shape_metrics(PRED, GT, n_chamfer=N_CD, n_emd=N_EM, seed=4)
    _, gt_unit, center, radius = normalise_clouds(sample_surface(PRED, N_CD, 4), sample_surface(GT, N_CD, 5))
    # The GT sphere's centre and radius, up to the sample centroid's error (about r / √n per axis).
    np.testing.assert_allclose(center, CENTRE_MM, atol=0.2)
    assert radius == pytest.approx(11.0, abs=0.2)
    assert np.linalg.norm(gt_unit, axis=1).max() == pytest.approx(1.0, abs=1e-12)
    assert metrics["chamfer_normalised"] == pytest.approx(metrics["chamfer_mm"] / radius, rel=1e-12)
    assert metrics["emd_normalised"] == pytest.approx(metrics["emd_mm"] / radius, rel=1e-12)
    assert metrics["chamfer_normalised"] == pytest.approx(1 / 11, abs=0.05 / 11)


def test_identical_meshes_are_at_the_sampling_floor():
    n_cd = 5_000
    metrics = compute_shape_metrics(GT, GT, n_chamfer=n_cd, n_emd=N_EM, seed=1)
    area = GT.face_areas_mm2.sum()
    # Two independent samples of one surface: the mean nearest-neighbour distance of n uniform points on an
    # area A is ½ √(A / n) (2D Poisson), half the sample spacing (≈ 0.28 mm here), not 0.
    assert metrics["chamfer_mm"] == pytest.approx(0.5 * np.sqrt(area / n_cd), rel=0.1)
    spacing_emd = np.sqrt(area / N_EM)  # ≈ 2.3 mm
    assert 0.5 * spacing_emd < metrics["emd_mm"] < 1.5 * spacing_emd
    # The same cloud against itself is exactly 0.
    cloud = sample_surface(GT, N_EM, 0)
    assert chamfer_distance(cloud, cloud) == 0.0
    assert earth_movers_distance(cloud, cloud[::-1]) == 0.0


def test_translating_both_meshes_leaves_the_metrics_unchanged():
    shift = np.array([150.0, -80.0, 35.0])
    moved = compute_shape_metrics(Mesh(PRED.vertices_world_mm + shift, PRED.faces),
                                  Mesh(GT.vertices_world_mm + shift, GT.faces), n_chamfer=N_CD, n_emd=N_EM)
    metrics = compute_shape_metrics(PRED, GT, n_chamfer=N_CD, n_emd=N_EM)
    for name in SHAPE_METRIC_NAMES:
        assert moved[name] == pytest.approx(metrics[name], rel=1e-9), name


def test_emd_of_radially_scaled_clouds_is_the_gap():
    # Points exactly on a sphere of radius 10 and their images on radius 11, shuffled: any pair is ≥ 1 mm apart,
    # and the radial pairing attains it, so the optimal matching is exactly the gap.
    rng = np.random.default_rng(0)
    directions = rng.normal(size=(N_EM, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    inner = CENTRE_MM + 10 * directions
    outer = (CENTRE_MM + 11 * directions)[rng.permutation(N_EM)]
    assert earth_movers_distance(inner, outer) == pytest.approx(1.0, abs=1e-12)
    pred_unit, gt_unit, _, radius = normalise_clouds(inner, outer)
    assert earth_movers_distance(pred_unit, gt_unit) == pytest.approx(1.0 / radius, abs=1e-12)


def test_emd_is_the_optimal_not_the_greedy_matching():
    # On a line (direction u, any offset): pred at 0 and 6, GT at 5 and 12. Greedy takes the closest pair
    # (6, 5) first and is left with (0, 12): (1 + 12) / 2 = 6.5. Optimal: (0, 5) and (6, 12): (5 + 6) / 2 = 5.5.
    u, offset = np.array([1.0, 2.0, 2.0]) / 3, np.array([10.0, -20.0, 5.0])
    pred = offset + np.array([[0.0], [6.0]]) * u
    gt = offset + np.array([[12.0], [5.0]]) * u
    assert greedy_matching_mean(pred, gt) == pytest.approx(6.5)
    assert earth_movers_distance(pred, gt) == pytest.approx(5.5)
    assert earth_movers_distance(gt, pred) == pytest.approx(5.5)


def test_emd_matches_brute_force_over_all_bijections():
    rng = np.random.default_rng(3)
    for _ in range(5):
        a, b = rng.normal(size=(6, 3)), rng.normal(size=(6, 3)) + 0.5
        best = min(np.linalg.norm(a - b[list(order)], axis=1).mean() for order in itertools.permutations(range(6)))
        assert earth_movers_distance(a, b) == pytest.approx(best, abs=1e-12)


def test_chamfer_on_hand_made_clouds():
    # pred → GT: 5; GT → pred: (5 + 10) / 2 = 7.5; symmetric: (5 + 7.5) / 2. Sizes may differ.
    pred = np.array([[0.0, 0.0, 0.0]])
    gt = np.array([[3.0, 4.0, 0.0], [6.0, 8.0, 0.0]])
    assert chamfer_distance(pred, gt) == pytest.approx(6.25)
    assert chamfer_distance(gt, pred) == pytest.approx(6.25)


def test_normalise_clouds_puts_the_ground_truth_in_the_unit_sphere():
    gt = np.array([[1.0, 0, 0], [-1, 0, 0], [0, 3, 0], [0, -3, 0]]) + [5.0, 6.0, 7.0]
    pred = np.array([[5.0, 6.0, 7.0], [5.0, 12.0, 7.0]])
    pred_unit, gt_unit, center, radius = normalise_clouds(pred, gt)
    np.testing.assert_allclose(center, [5.0, 6.0, 7.0])
    assert radius == 3.0
    np.testing.assert_allclose(gt_unit.mean(axis=0), 0.0, atol=1e-15)
    assert np.linalg.norm(gt_unit, axis=1).max() == 1.0
    np.testing.assert_allclose(pred_unit, [[0.0, 0, 0], [0, 2, 0]])
    np.testing.assert_allclose(center + radius * gt_unit, gt)


def test_bad_input_raises_input_error():
    empty = Mesh(np.zeros((3, 3)), np.zeros((0, 3), dtype=np.int64))
    flat = Mesh(np.array([[0.0, 0, 0], [1, 0, 0], [2, 0, 0]]), np.array([[0, 1, 2]]))
    for pred, gt in ((empty, GT), (PRED, empty), (flat, GT)):
        with pytest.raises(InputError, match="no faces|zero surface area"):
            compute_shape_metrics(pred, gt, n_chamfer=100, n_emd=10)
    with pytest.raises(InputError, match="n_emd must be ≥ 1"):
        compute_shape_metrics(PRED, GT, n_chamfer=100, n_emd=0)
    cloud = np.random.default_rng(0).normal(size=(5, 3))
    with pytest.raises(InputError, match="equal size, got 5 and 4"):
        earth_movers_distance(cloud, cloud[:4])
    with pytest.raises(InputError, match="empty"):
        earth_movers_distance(np.zeros((0, 3)), np.zeros((0, 3)))
    with pytest.raises(InputError, match="empty"):
        chamfer_distance(cloud, np.zeros((0, 3)))
    with pytest.raises(InputError, match=r"\(N, 3\)"):
        chamfer_distance(cloud[:, :2], cloud)
    with pytest.raises(InputError, match="NaN"):
        earth_movers_distance(np.full((5, 3), np.nan), cloud)
    with pytest.raises(InputError, match="no extent"):
        normalise_clouds(cloud, np.ones((4, 3)))


def test_evaluate_kind_shape_with_a_labelmap_standing_in_for_a_missing_gt_mesh(tmp_path: Path):
    assert "shape" in KINDS
    pred, gt = tmp_path / "pred", tmp_path / "gt"
    small_pred, small_gt = icosphere(CENTRE_MM, 10.0, 2), icosphere(CENTRE_MM, 11.0, 2)
    write_mesh(pred / "c1" / "mesh.ply", small_pred)
    write_mesh(gt / "c1.obj", small_gt)
    affine, shape = AFFINE_CASES["oblique"], (40, 40, 30)
    middle = index_to_world(np.array([[19.5, 19.5, 14.5]]), affine)[0]
    ball = sphere_volume(affine, shape, middle, 8.0).astype(np.int16)
    write_image(gt / "c2.nii.gz", Volume(ball, affine))  # no c2 mesh: the labelmap's surface is the GT
    gt_surface = labelmap_to_mesh(read_labelmap(gt / "c2.nii.gz"))
    write_mesh(pred / "c2" / "mesh.vtk", gt_surface)

    summary = evaluate_folders(pred, gt, tmp_path / "shape", kind="shape", n_chamfer=2_000, n_emd=100, seed=2)
    assert summary == json.loads((tmp_path / "shape.summary.json").read_text())
    assert summary["kind"] == "shape" and summary["cases"] == ["c1", "c2"]
    assert (summary["n_chamfer"], summary["n_emd"], summary["seed"]) == (2_000, 100, 2)
    assert summary["normalisation"] == NORMALISATION and "n_samples" not in summary
    assert summary["gt_from_labelmap"] == ["c2"]
    assert list(summary["metrics"]) == list(SHAPE_METRIC_NAMES)
    with open(tmp_path / "shape.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["case", "status", *SHAPE_METRIC_NAMES]
    expected = {
        "c1": compute_shape_metrics(read_mesh(pred / "c1" / "mesh.ply"), read_mesh(gt / "c1.obj"),
                                    n_chamfer=2_000, n_emd=100, seed=2),
        "c2": compute_shape_metrics(read_mesh(pred / "c2" / "mesh.vtk"), gt_surface, n_chamfer=2_000, n_emd=100,
                                    seed=2),
    }
    for row in rows:
        for name in SHAPE_METRIC_NAMES:
            assert float(row[name]) == pytest.approx(expected[row["case"]][name], rel=1e-6), (row["case"], name)
    assert abs(float(rows[0]["chamfer_mm"]) - 1.0) < 0.1  # coarser spheres and fewer points than above
    # c2 scores its own surface: Chamfer at the sampling floor, well under a voxel.
    assert float(rows[1]["chamfer_mm"]) < 0.5
