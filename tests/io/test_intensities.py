"""Intensity normalisation of network inputs."""

from __future__ import annotations

import numpy as np
import pytest

from implicitseg.config import IntensityConfig
from implicitseg.errors import InputError
from implicitseg.io.intensities import normalise_intensities


def test_normalise_intensities_window_and_zscore() -> None:
    hu = np.array([-3000.0, -1000.0, 0.0, 250.0, 1000.0, 4000.0])
    np.testing.assert_allclose(normalise_intensities(hu, IntensityConfig()), [-1.0, -1.0, 0.0, 0.25, 1.0, 1.0])
    np.testing.assert_allclose(normalise_intensities(hu, IntensityConfig(window=(-100.0, 300.0), scale=100.0)),
                               [-1.0, -1.0, 0.0, 2.5, 3.0, 3.0])
    mri = np.array([[10.0, 20.0], [30.0, 40.0]])
    zscored = normalise_intensities(mri, IntensityConfig(mode="zscore"))
    assert zscored.dtype == np.float32 and zscored.shape == (2, 2)
    assert zscored.mean() == pytest.approx(0.0, abs=1e-6) and zscored.std() == pytest.approx(1.0, rel=1e-6)
    np.testing.assert_array_equal(normalise_intensities(np.full(4, 7.0), IntensityConfig(mode="zscore")), 0.0)
    with pytest.raises(InputError, match="'gamma'"):
        normalise_intensities(hu, IntensityConfig(mode="gamma"))
