"""PICCT: similarity alignment by Coherent Point Drift and exact round trips index → world → canonical → back."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import AFFINE_CASES, rotation_matrix
from implicitseg.errors import InputError
from implicitseg.geometry.alignment import coherent_point_drift, cpd_similarity, unit_sphere_scale
from implicitseg.geometry.frames import Picct, SimilarityTransform, index_to_world, world_to_index


def _irregular_shape(rng: np.random.Generator, n: int = 4000) -> np.ndarray:
    """Surface-like points (mm) of a bent, asymmetric blob: no symmetry for the alignment to confuse."""
    directions = rng.normal(size=(n, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    x, y, z = directions.T
    return np.stack([32 * x, 20 * y + 6 * x**2, 11 * z + 4 * x * y + 3 * (z > 0.5)], axis=1)


def test_cpd_recovers_a_known_similarity_transform():
    rng = np.random.default_rng(0)
    shape_mm = _irregular_shape(rng)
    truth = SimilarityTransform(1.25, rotation_matrix((25, -15, 40)), np.array([40.0, -12.0, 7.0]))
    moved = truth.apply(shape_mm)
    found = cpd_similarity(shape_mm, moved + rng.normal(scale=0.2, size=moved.shape), max_points=1500)
    assert abs(found.scale - 1.25) < 0.01
    assert np.allclose(found.rotation, truth.rotation, atol=0.01)
    assert np.abs(found.apply(shape_mm) - moved).max() < 0.8  # mm, against 0.2 mm noise
    with pytest.raises(InputError, match="at least 4 points"):
        cpd_similarity(shape_mm[:3], moved)


def test_picct_round_trip_on_an_oblique_flipped_image_is_exact():
    affine = AFFINE_CASES["flipped_oblique"]
    index = np.random.default_rng(1).uniform(0, 60, size=(1000, 3))
    world = index_to_world(index, affine)
    similarity = SimilarityTransform(0.8, rotation_matrix((10, 70, -30)), np.array([-5.0, 3.0, 100.0]))
    picct = Picct(similarity, unit_sphere_scale([similarity.apply(world)]))
    canonical = picct.world_to_canonical(world)
    assert np.linalg.norm(canonical, axis=1).max() <= 0.9 + 1e-9
    back_world = picct.canonical_to_world(canonical)
    assert np.abs(back_world - world).max() < 1e-4  # mm
    assert np.abs(world_to_index(back_world, affine) - index).max() < 1e-4
    restored = Picct.from_json(picct.to_json())
    assert np.allclose(restored.world_to_canonical(world), canonical, atol=1e-12)


@pytest.mark.parametrize("start", ["world", "principal-axes"])
def test_cpd_from_either_start_recovers_a_small_turn_of_a_whole_shape(start):
    rng = np.random.default_rng(3)
    shape_mm = _irregular_shape(rng)
    truth = SimilarityTransform(1.1, rotation_matrix((12, -8, 15)), np.array([5.0, -3.0, 2.0]))
    found = coherent_point_drift(shape_mm, truth.apply(shape_mm), max_points=1200, start=start).transform
    assert np.degrees(np.arccos(np.clip((np.trace(found.rotation @ truth.rotation.T) - 1) / 2, -1, 1))) < 2.0


def test_cpd_from_the_world_pose_keeps_a_damaged_shape_upright():
    rng = np.random.default_rng(4)
    template = _irregular_shape(rng)
    damaged = template[template[:, 0] < 18.0]  # the far end lost: the principal axes move, the pose does not
    turned = rotation_matrix((0, 0, 10))
    world = coherent_point_drift(damaged @ turned.T, template, max_points=1200, start="world").transform
    angle = np.degrees(np.arccos(np.clip((np.trace(world.rotation @ turned) - 1) / 2, -1, 1)))
    assert angle < 15.0  # measured 10°: the lost end pulls the fit a little; a flip would be ~180°
    with pytest.raises(InputError, match="start must be one of"):
        coherent_point_drift(damaged, template, start="random")
