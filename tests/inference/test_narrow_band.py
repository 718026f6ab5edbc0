"""The narrow band over the ROI: every cell the surface passes through is kept, however coarse the start."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from implicitseg.config import BandConfig
from implicitseg.errors import InputError
from implicitseg.inference.narrow_band import BandLevels, FieldQuery, narrow_band
from meshing.analytic_fields import FIELDS, ROI_MM, as_decoder, surface_samples


def band_of(name: str, **band):
    query = FieldQuery(as_decoder(FIELDS[name]), [torch.zeros(1)], 50_000)
    return narrow_band(query, BandConfig(**band), ROI_MM)


@pytest.mark.parametrize("name", sorted(FIELDS))
def test_band_holds_every_cell_the_surface_passes_through(name):
    band, stats = band_of(name, cell_mm=0.5)
    assert stats["cell_mm"] <= 0.5 and stats["finest_cells"] == band.cells_per_side == 140
    crossed = np.unique(np.floor((surface_samples(name) - band.lower) / band.cell_size).astype(np.int64), axis=0)
    kept = {tuple(cell) for cell in band.cells_ijk.tolist()}
    missing = [cell for cell in map(tuple, crossed.tolist()) if cell not in kept]
    assert not missing, f"{len(missing)} of {len(crossed)} surface cells dropped"
    # the band is narrow: a few cells across the surface (its width is set by the face distance and the margin)
    across = 2 * (0.75 + 1.5 * np.sqrt(3) / 2 * 0.5) / 0.5 + 1
    assert len(band.cells_ijk) < 1.5 * across * len(crossed) and len(band.cells_ijk) < 0.05 * 140 ** 3


def test_finest_values_and_gradients_are_the_fields():
    band, stats = band_of("sphere", cell_mm=1.0)
    points = torch.from_numpy(band.corner_points()).requires_grad_(True)
    distance = FIELDS["sphere"](points)
    (gradient,) = torch.autograd.grad(distance.sum(), points)
    np.testing.assert_allclose(band.distances, distance.detach().numpy(), atol=1e-6)
    off_surface = distance.detach().numpy() > 1e-4  # on the surface |.| has no gradient: either sign is right
    np.testing.assert_allclose(band.gradients[off_surface], gradient.numpy()[off_surface], atol=1e-5)
    assert stats["n_gradient_points"] == stats["n_band_corners"] == len(band.corners_ijk)
    # coarse levels are asked forward only, and a corner shared by two levels is asked once
    assert stats["n_forward_points"] < 2 * sum((band.cells_per_side // 2 ** k + 1) ** 3 for k in range(stats["n_levels"]))


@pytest.mark.parametrize("roi_mm, cell_mm, coarse, levels", [(70.0, 0.5, 35, 2), (70.0, 0.25, 35, 3),
                                                             (70.0, 2.0, 35, 0), (70.0, 5.0, 14, 0)])
def test_levels_reach_the_requested_cell_from_a_coarse_grid(roi_mm, cell_mm, coarse, levels):
    chosen = BandLevels.for_cell(roi_mm, cell_mm, 32)
    assert (chosen.coarse_cells, chosen.levels) == (coarse, levels)
    assert roi_mm / chosen.finest_cells <= cell_mm


def test_invalid_band_values_are_input_errors():
    with pytest.raises(InputError, match="meshing.band.cell_mm"):
        band_of("sphere", cell_mm=0.0)
    with pytest.raises(InputError, match="meshing.band.snap_samples=2"):  # no parabola through fewer than 3
        band_of("sphere", snap_samples=2)
