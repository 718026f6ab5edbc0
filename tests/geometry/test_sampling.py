"""Shape diameter, surface / near-surface / uniform samples, with analytic answers."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh

from implicitseg.config import SurfaceSamplingConfig
from implicitseg.geometry.distances import signed_distance
from implicitseg.geometry.frames import Roi
from implicitseg.geometry.sampling import (
    SampleSet,
    ShapeDiameters,
    cone_directions,
    face_geometry,
    near_surface_samples,
    robust_mean,
    sample_on_faces,
    shape_diameter_mm,
    shape_diameters_mm,
    training_samples,
    uniform_cube_samples_unit,
)

HALF_APERTURE = np.radians(22.5)


def sphere_mesh(radius: float, center: tuple[float, float, float] = (0.0, 0.0, 0.0), subdivisions: int = 3):
    sphere = trimesh.creation.icosphere(subdivisions=subdivisions, radius=radius)
    return np.asarray(sphere.vertices) + np.asarray(center), np.asarray(sphere.faces)


def slab_mesh(thickness: float, width: float = 40.0, offset=(0.0, 0.0, 0.0)):
    box = trimesh.creation.box(extents=(width, width, thickness))
    return np.asarray(box.vertices) + np.asarray(offset), np.asarray(box.faces)


def merge(*meshes):
    vertices, faces, shift = [], [], 0
    for v, f in meshes:
        vertices.append(v)
        faces.append(f + shift)
        shift += len(v)
    return np.concatenate(vertices), np.concatenate(faces)


def test_cone_directions_cover_the_cap_evenly() -> None:
    directions = cone_directions(64, 45.0)
    np.testing.assert_allclose(np.linalg.norm(directions, axis=1), 1.0)
    assert np.all(directions[:, 2] >= np.cos(HALF_APERTURE) - 1e-12)
    # Equal-area cover: the mean of cos θ is the cap average (1 + cos α) / 2.
    assert directions[:, 2].mean() == pytest.approx((1 + np.cos(HALF_APERTURE)) / 2, rel=1e-9)
    # Azimuths are spread: the mean direction points along the axis.
    np.testing.assert_allclose(directions[:, :2].mean(axis=0), 0.0, atol=0.02)


def test_robust_mean_drops_outliers() -> None:
    distances = np.array([[1.0, 1.0, 1.0, 1.0, 100.0], [2.0, 2.0, 2.0, 2.0, 2.0]])
    np.testing.assert_allclose(robust_mean(distances), [1.0, 2.0])


def test_shape_diameter_of_a_sphere_from_inside_is_the_cone_averaged_chord() -> None:
    # A ray leaving the sphere's wall inwards at θ from the normal travels 2 r cos θ. cos θ is uniform over the
    # cap, so the chords are uniform in [2r cos α, 2r] and the (robust) mean is r (1 + cos α).
    # Small and far from the origin (world coordinates of hundreds of mm): rays must not hit their own face.
    radius = 3.0
    vertices, faces = sphere_mesh(radius, center=(400.0, -600.0, 900.0), subdivisions=4)
    inside = shape_diameter_mm(vertices, faces, side="in", n_rays=32, cone_degrees=45.0, max_mm=35.0)
    np.testing.assert_allclose(inside, radius * (1 + np.cos(HALF_APERTURE)), rtol=0.01)
    outside = shape_diameter_mm(vertices, faces, side=SampleSet.OUT, n_rays=32, cone_degrees=45.0, max_mm=35.0)
    np.testing.assert_allclose(outside, 35.0)  # every outward ray misses: counted as max_mm


def test_shape_diameter_of_a_thin_slab_is_its_thickness_on_the_inner_side_only() -> None:
    thickness = 2.0
    vertices, faces = slab_mesh(thickness)
    _, normals, _ = face_geometry(vertices, faces)
    broad = np.abs(normals[:, 2]) > 0.99
    n_rays = 32
    inside = shape_diameter_mm(vertices, faces, side="in", n_rays=n_rays, max_mm=35.0)
    # Brute force: each ray crosses the slab over thickness / cos θ.
    per_ray = thickness / cone_directions(n_rays, 45.0)[:, 2]
    np.testing.assert_allclose(inside[broad], robust_mean(per_ray[None])[0], rtol=1e-5)  # rays are float32
    assert np.all((inside[broad] >= thickness) & (inside[broad] <= thickness / np.cos(HALF_APERTURE)))
    np.testing.assert_allclose(shape_diameter_mm(vertices, faces, side="out", max_mm=35.0)[broad], 35.0)
    # Reversing the faces swaps the sides.
    flipped = shape_diameter_mm(vertices, faces[:, ::-1], side="out", n_rays=n_rays, max_mm=35.0)
    np.testing.assert_allclose(flipped[broad], inside[broad])


def test_shape_diameter_on_a_face_subset_matches_the_full_computation() -> None:
    vertices, faces = merge(sphere_mesh(10.0, subdivisions=4), slab_mesh(2.0, offset=(100.0, 0.0, 0.0)))
    full = shape_diameter_mm(vertices, faces, side="in")
    subset = shape_diameter_mm(vertices, faces, side="in", max_faces=len(faces) // 4, rng=np.random.default_rng(0))
    assert np.mean(np.abs(subset - full) < 0.05 * full) > 0.95


def test_sample_on_faces_is_area_uniform_and_on_the_surface() -> None:
    vertices, faces = slab_mesh(2.0)
    points, face_index = sample_on_faces(vertices, faces, 20_000, np.random.default_rng(0))
    assert points.shape == (20_000, 3) and face_index.shape == (20_000,)
    assert np.all(np.abs(points) <= np.array([20.0, 20.0, 1.0]) + 1e-9)
    on_top = np.isclose(points[:, 2], 1.0)
    _, _, areas = face_geometry(vertices, faces)
    assert on_top.mean() == pytest.approx(40 * 40 / areas.sum(), abs=0.01)


def test_uniform_samples_fill_the_unit_cube() -> None:
    points = uniform_cube_samples_unit(50_000, np.random.default_rng(0))
    assert points.shape == (50_000, 3)
    assert np.all(np.abs(points) <= 1.0)
    np.testing.assert_allclose(points.mean(axis=0), 0.0, atol=0.02)
    np.testing.assert_allclose(points.var(axis=0), 1 / 3, atol=0.02)


def test_near_surface_samples_split_by_side_with_shape_diameter_spread() -> None:
    radius = 10.0
    vertices, faces = sphere_mesh(radius, subdivisions=3)
    config = SurfaceSamplingConfig(sd_rays=16)
    diameters = shape_diameters_mm(vertices, faces, config)
    points, sample_set = near_surface_samples(vertices, faces, diameters, 20_001, np.random.default_rng(0))
    assert points.shape == (20_001, 3)
    assert np.sum(sample_set == SampleSet.IN) == 10_000 and np.sum(sample_set == SampleSet.OUT) == 10_001
    signed = signed_distance(points, vertices, faces)
    inside = sample_set == SampleSet.IN
    assert np.mean(signed[inside] < 0) > 0.999  # behind outward normals = inside
    assert np.all(signed[~inside] > 0)
    # Offsets are |N(0, SD / 4)| with that side's SD: mean SD/4 · sqrt(2/π).
    for side, values in ((inside, diameters.in_mm), (~inside, diameters.out_mm)):
        sigma = 0.25 * values.mean()
        assert np.abs(signed[side]).mean() == pytest.approx(sigma * np.sqrt(2 / np.pi), rel=0.05)
        assert np.abs(signed[side]).max() < 5 * sigma


def test_thin_parts_are_sampled_density_factor_times_more_densely() -> None:
    sphere = sphere_mesh(10.0, subdivisions=3)
    slab = slab_mesh(2.0, offset=(100.0, 0.0, 0.0))
    vertices, faces = merge(sphere, slab)
    config = SurfaceSamplingConfig(sd_rays=16, sd_threshold_mm=3.5, sd_density_factor=50.0)
    diameters = shape_diameters_mm(vertices, faces, config)
    points, sample_set = near_surface_samples(vertices, faces, diameters, 40_000, np.random.default_rng(1),
                                              threshold_mm=3.5, density_factor=50.0)
    on_slab = points[:, 0] > 50.0
    _, _, areas = face_geometry(vertices, faces)
    slab_faces = np.arange(len(faces)) >= len(sphere[1])
    _, slab_normals, _ = face_geometry(*slab)
    thin_area = areas[slab_faces][np.abs(slab_normals[:, 2]) > 0.99].sum()  # only the broad faces are thin inside
    other_area = areas.sum() - thin_area
    expected_in = 50 * thin_area / (50 * thin_area + other_area)
    assert on_slab[sample_set == SampleSet.IN].mean() == pytest.approx(expected_in, abs=0.02)
    # Outside, nothing is thin: faces are drawn by area alone.
    assert on_slab[sample_set == SampleSet.OUT].mean() == pytest.approx(areas[slab_faces].sum() / areas.sum(), abs=0.02)


def test_near_surface_samples_check_the_diameters_shape() -> None:
    vertices, faces = slab_mesh(2.0)
    wrong = ShapeDiameters(np.ones(3), np.ones(3))
    with pytest.raises(ValueError, match="shape diameters"):
        near_surface_samples(vertices, faces, wrong, 10, np.random.default_rng(0))


def test_training_samples_are_in_unit_frame_with_exact_unit_distances() -> None:
    center, radius = np.array([30.0, -12.0, 250.0]), 12.0
    vertices, faces = sphere_mesh(radius, center=tuple(center), subdivisions=5)
    roi = Roi(tuple(center + [2.0, -3.0, 1.0]), 60.0, 32)
    config = SurfaceSamplingConfig(n_uniform=3_000, n_near_surface=6_000, sd_rays=8)
    samples = training_samples(vertices, faces, roi, config, np.random.default_rng(0))
    assert samples.points_unit.dtype == np.float32 and samples.points_unit.shape == (9_000, 3)
    assert samples.distances_unit.dtype == np.float32 and samples.distances_unit.shape == (9_000,)
    assert samples.sample_set.dtype == np.uint8
    assert np.bincount(samples.sample_set).tolist() == [3_000, 3_000, 3_000]
    uniform = samples.sample_set == SampleSet.UNIFORM
    assert np.all(np.abs(samples.points_unit[uniform]) <= 1.0)
    world = roi.unit_to_world(samples.points_unit.astype(np.float64))
    exact_unit = np.abs(np.linalg.norm(world - center, axis=1) - radius) / 30.0
    np.testing.assert_allclose(samples.distances_unit, exact_unit, atol=0.01 / 30.0 + 1e-6)
    assert set(samples.timings_s) == {"shape_diameter_s", "sampling_s", "distance_s"}


def test_degenerate_faces_get_max_mm_and_are_never_sampled() -> None:
    vertices, faces = slab_mesh(2.0)
    with_degenerate = np.vstack([faces, [[0, 0, 1], [2, 2, 2]]])
    diameters = shape_diameter_mm(vertices, with_degenerate, side="in", max_mm=35.0)
    np.testing.assert_allclose(diameters[-2:], 35.0)
    np.testing.assert_allclose(diameters[:-2], shape_diameter_mm(vertices, faces, side="in", max_mm=35.0))
    _, face_index = sample_on_faces(vertices, with_degenerate, 5_000, np.random.default_rng(0))
    assert face_index.max() < len(faces)
