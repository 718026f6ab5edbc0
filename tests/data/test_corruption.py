"""Corrupted labelmaps for refinement tests: each corruption damages the object the way it says, on any grid."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from helpers import AFFINE_CASES, sphere_volume
from implicitseg.data.corruption import KINDS, corrupt_labelmap
from implicitseg.errors import InputError
from implicitseg.geometry.frames import index_to_world
from implicitseg.io.images import Volume

SHAPE = (56, 52, 30)


def _ball(name: str) -> Volume:
    affine = AFFINE_CASES[name]
    center = index_to_world(np.array(SHAPE)[None] / 2.0, affine)[0]
    return Volume(sphere_volume(affine, SHAPE, center, 14.0).astype(np.uint8), affine)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


@pytest.mark.parametrize("name", ["oblique", "anisotropic"])
def test_each_corruption_damages_the_object_as_named(name):
    ball = _ball(name)
    truth = ball.array > 0
    holes = corrupt_labelmap(ball, np.random.default_rng(0), ("holes",)).labelmap.array > 0
    assert not (holes & ~truth).any() and 0.6 < _dice(holes, truth) < 0.99
    blobs = corrupt_labelmap(ball, np.random.default_rng(0), ("blobs",)).labelmap.array > 0
    assert (blobs & ~truth).any() and (blobs | truth).sum() == blobs.sum()
    assert ndimage.label(blobs)[1] >= 2  # the blobs do not touch the object
    missing = corrupt_labelmap(ball, np.random.default_rng(0), ("missing_part",)).labelmap.array > 0
    assert not (missing & ~truth).any() and 0.5 < _dice(missing, truth) < 0.99
    steps = corrupt_labelmap(ball, np.random.default_rng(0), ("staircase",))
    assert steps.labelmap.shape == ball.shape and 0.7 < _dice(steps.labelmap.array > 0, truth) < 0.999
    assert steps.applied["staircase"]["axis"] == int(np.argmax(ball.spacing))


def test_all_at_once_is_deterministic_per_seed_and_bad_input_is_refused():
    ball = _ball("flipped_oblique")
    first = corrupt_labelmap(ball, np.random.default_rng(5))
    again = corrupt_labelmap(ball, np.random.default_rng(5))
    assert set(first.applied) == set(KINDS) and np.array_equal(first.labelmap.array, again.labelmap.array)
    assert np.allclose(first.labelmap.affine_lps, ball.affine_lps)
    with pytest.raises(InputError, match="unknown corruption"):
        corrupt_labelmap(ball, np.random.default_rng(0), ("smudge",))
    with pytest.raises(InputError, match="empty labelmap"):
        corrupt_labelmap(Volume(np.zeros(SHAPE, np.uint8), ball.affine_lps), np.random.default_rng(0))
