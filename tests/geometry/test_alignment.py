"""PICCT: similarity alignment by Coherent Point Drift and exact round trips index → world → canonical → back."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import AFFINE_CASES, rotation_matrix
from implicitseg.errors import InputError
from implicitseg.geometry.alignment import Picct, SimilarityTransform, cpd_similarity, unit_sphere_scale
from implicitseg.geometry.frames import index_to_world, world_to_index


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
