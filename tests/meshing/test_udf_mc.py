"""Open surfaces straight from an unsigned distance field: on the surface, open where it is open, parts kept apart."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.measure import marching_cubes

from implicitseg.config import BandConfig, ComponentConfig
from implicitseg.inference.narrow_band import FieldQuery, narrow_band
from implicitseg.meshing.components import boundary_loops, face_areas, select_components, vertex_components
from implicitseg.meshing import udf_mc
from implicitseg.meshing.udf_mc import extract_open_surface
from meshing.analytic_fields import (FIELDS, HOLE_RADIUS, MM, RADIUS, ROI_MM, SHEET_GAP, SHEET_HEIGHT, as_decoder, sphere,
                                     sphere_and_speck)

CELL_MM = 0.5
FACE_UNIT = BandConfig().max_face_distance_mm * MM
"""The default face distance: sheets 2 mm apart must stay apart with it."""


def extract(field, cell_mm: float = CELL_MM):
    query = FieldQuery(as_decoder(field), [torch.zeros(1)], 50_000)
    band, _ = narrow_band(query, BandConfig(cell_mm=cell_mm), ROI_MM)
    vertices, faces, vertex_distance, stats = extract_open_surface(band, query.distances, FACE_UNIT)
    return band, vertices, faces, vertex_distance, stats


def true_distance(field, vertices: np.ndarray) -> np.ndarray:
    return field(torch.from_numpy(vertices)).numpy()


@pytest.mark.parametrize("name, loops, parts", [("sphere", 0, 1), ("hemisphere", 1, 1), ("two_sheets", 2, 2),
                                                ("holed_sheet", 2, 1)])
def test_vertices_lie_on_the_surface_and_its_boundaries_are_kept(name, loops, parts):
    band, vertices, faces, vertex_distance, _ = extract(FIELDS[name])
    assert len(faces) > 1000
    # on the analytic surface within a tenth of a cell
    assert true_distance(FIELDS[name], vertices).max() < 0.1 * band.cell_size
    np.testing.assert_allclose(vertex_distance, true_distance(FIELDS[name], vertices), atol=1e-6)
    assert boundary_loops(faces) == loops
    assert len(np.unique(vertex_components(vertices, faces)[faces[:, 0]])) == parts


def test_open_hemisphere_has_half_the_sphere_area_and_no_fringe():
    _, vertices, faces, _, stats = extract(FIELDS["hemisphere"])
    area_mm2 = face_areas(vertices / MM, faces).sum()
    assert area_mm2 == pytest.approx(2 * np.pi * (RADIUS / MM) ** 2, rel=0.01)
    assert vertices[:, 2].min() > -0.1 * CELL_MM * MM  # nothing marched past the rim
    assert stats["n_seam_faces"] > 0  # the pseudo-sign's seam off the rim was there, and was removed


def test_two_sheets_2_mm_apart_stay_two_flat_sheets():
    _, vertices, faces, _, stats = extract(FIELDS["two_sheets"])
    assert len(faces) > 1000 and stats["n_removed_faces"] > 0  # faces on the medial plane were marched, and removed
    heights_mm = np.abs(vertices[:, 2] - SHEET_HEIGHT) / MM
    np.testing.assert_allclose(heights_mm, SHEET_GAP / MM / 2, atol=0.05 * CELL_MM)


def test_the_hole_stays_open():
    _, vertices, _, _, _ = extract(FIELDS["holed_sheet"])
    assert np.linalg.norm(vertices[:, :2], axis=1).min() > HOLE_RADIUS - 0.1 * CELL_MM * MM


def test_a_small_spurious_surface_beside_the_true_one_is_dropped():
    _, vertices, faces, vertex_distance, _ = extract(sphere_and_speck, cell_mm=0.5)
    assert len(np.unique(vertex_components(vertices, faces)[faces[:, 0]])) == 2  # the speck was marched
    kept_vertices, kept_faces, selection = select_components(vertices / MM, faces, ComponentConfig(),
                                                            vertex_distance / MM)
    assert (selection.n_kept, selection.n_dropped) == (1, 1) and selection.area_dropped_mm2 < 40
    assert true_distance(sphere, kept_vertices * MM).max() < 0.1 * CELL_MM * MM


def test_scikit_image_marches_the_cell_below_a_mask_entry():
    """_march_band relies on this: mask[c + 1] selects the cell [c, c + 1] (scikit-image 0.26)."""
    volume = np.ones((6, 6, 6))
    volume[2, 3, 1] = -1.0
    mask = np.zeros(volume.shape, dtype=bool)
    mask[3, 4, 2] = True
    vertices, _, _, _ = marching_cubes(volume, 0.0, mask=mask)
    assert np.all(vertices.min(axis=0) >= [2, 3, 1]) and np.all(vertices.max(axis=0) <= [3, 4, 2])


def test_blocks_join_without_cracks(monkeypatch):
    """A band larger than one marching block is marched block by block: the sphere still closes."""
    monkeypatch.setattr(udf_mc, "BLOCK_CELLS", 24)
    band, vertices, faces, _, _ = extract(FIELDS["sphere"])
    assert band.cells_per_side > 4 * udf_mc.BLOCK_CELLS
    assert boundary_loops(faces) == 0 and true_distance(FIELDS["sphere"], vertices).max() < 0.1 * band.cell_size


def soft_sphere(points: torch.Tensor) -> torch.Tensor:
    """A learned field's kind of zero level: the sphere's distance with a soft floor of 0.3 mm at the surface."""
    return torch.sqrt(sphere(points) ** 2 + (0.3 * MM) ** 2)


def test_snapping_brings_vertices_of_a_soft_trough_back_onto_its_minimum():
    cell_mm = 1.0
    query = FieldQuery(as_decoder(soft_sphere), [torch.zeros(1)], 50_000)
    band, _ = narrow_band(query, BandConfig(cell_mm=cell_mm), ROI_MM)
    vertices, faces, vertex_distance, _ = extract_open_surface(band, query.distances, FACE_UNIT + 0.3 * MM)
    before = true_distance(sphere, vertices)
    assert before.max() > 0.15 * band.cell_size  # the interpolation of a soft trough is pulled off the surface
    snapped, snapped_distance = udf_mc.snap_to_minimum(vertices, faces, query.distances, band.cell_size / 2, 9)
    after = true_distance(sphere, snapped)
    assert after.max() < 0.03 * band.cell_size and after.mean() < 0.25 * before.mean()
    np.testing.assert_allclose(snapped_distance, true_distance(soft_sphere, snapped), atol=1e-6)
    # an exact field's vertices, already on the surface, stay there
    band, vertices, faces, _, _ = extract(sphere, cell_mm)
    snapped, _ = udf_mc.snap_to_minimum(vertices, faces, query.distances, band.cell_size / 2, 9)
    assert true_distance(sphere, snapped).max() < 0.03 * band.cell_size
