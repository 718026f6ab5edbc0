"""A distance field's narrow band over the ROI, coarse to fine (NUDF spec, "Fast extraction").

Octree refinement as in Occupancy Networks' MISE, with an unsigned-distance rule instead of a sign change: the
decoder is asked (forward only) at the corners of a coarse grid over the unit cube; a cell is kept when its
smallest corner distance is below ``max_face_distance + margin · half-diagonal`` — an exact distance field is
below ``half-diagonal`` at some corner of every cell the surface passes through (the farthest a point of a cube
lies from all its corners), ``max_face_distance`` admits a learned field whose zero level only comes that close,
and ``margin`` covers its gradient's error. Kept cells split into 8, corners already asked are reused, down to the
finest level; there, gradients (autograd with respect to the points) are taken at the kept cells' corners only.
The encoder runs once per image. Everything is in the ROI's unit frame (``[-1, 1]³``, distances in unit lengths).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from implicitseg.config import BandConfig
from implicitseg.errors import InputError
from implicitseg.meshing.udf_mc import CORNER_OFFSETS, DistanceBand, corner_keys
from implicitseg.models.batching import point_batches

class FieldQuery:
    """Batched queries of a distance-field model whose encoder has run: distances, and gradients on request.

    ``decode(features, points (1, N, 3) unit) -> (1, N)`` as
    :class:`~implicitseg.inference.pointcloud.DistanceFieldModel` has it; ``n_forward`` / ``n_gradient`` count the points asked so far.
    """

    def __init__(self, decode: Callable[[list[torch.Tensor], torch.Tensor], torch.Tensor],
                 features: list[torch.Tensor], batch_points: int) -> None:
        self.decode = decode
        self.features = features
        self.batch_points = int(batch_points)
        self.device = features[0].device
        self.n_forward = 0
        self.n_gradient = 0

    def distances(self, points_unit: np.ndarray) -> np.ndarray:
        """(N,) float32 distances (unit lengths) at ``points_unit`` (N, 3), forward only."""
        out = np.empty(len(points_unit), dtype=np.float32)
        with torch.no_grad():
            for rows, batch in point_batches(points_unit, self.batch_points, self.device):
                out[rows] = self.decode(self.features, batch[None])[0].float().cpu().numpy()
        self.n_forward += len(points_unit)
        return out

    def distances_and_gradients(self, points_unit: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N,) distances and (N, 3) gradients with respect to the points (unit frame), float32."""
        distances = np.empty(len(points_unit), dtype=np.float32)
        gradients = np.empty((len(points_unit), 3), dtype=np.float32)
        for rows, batch in point_batches(points_unit, self.batch_points, self.device):
            points = batch.requires_grad_(True)
            with torch.enable_grad():
                values = self.decode(self.features, points[None])[0]
                (gradient,) = torch.autograd.grad(values.sum(), points)
            distances[rows] = values.detach().float().cpu().numpy()
            gradients[rows] = gradient.float().cpu().numpy()
        self.n_gradient += len(points_unit)
        return distances, gradients



@dataclass
class BandLevels:
    """The octree's levels: ``coarse_cells · 2^level`` cells per side, ``levels + 1`` levels in all."""

    coarse_cells: int
    levels: int

    @classmethod
    def for_cell(cls, roi_size_mm: float, cell_mm: float, min_coarse_cells: int) -> BandLevels:
        """The fewest cells per side whose cell is ≤ ``cell_mm``, reached from a coarse grid of at least
        ``min_coarse_cells`` (fewer when the finest grid itself has fewer) by halving."""
        finest = max(1, math.ceil(roi_size_mm / cell_mm - 1e-9))
        levels = max(0, int(math.floor(math.log2(finest / min_coarse_cells)))) if finest >= min_coarse_cells else 0
        return cls(math.ceil(finest / 2 ** levels), levels)

    @property
    def finest_cells(self) -> int:
        return self.coarse_cells * 2 ** self.levels


def check_band_config(config: BandConfig) -> None:
    """Raises :class:`InputError` naming the first invalid value of ``config``."""
    checks = [("cell_mm", config.cell_mm > 0), ("coarse_cells", config.coarse_cells >= 1),
              ("margin", config.margin > 0), ("max_face_distance_mm", config.max_face_distance_mm >= 0),
              ("snap_samples", config.snap_samples == 0 or config.snap_samples >= 3),
              ("batch_points", config.batch_points >= 1)]
    for name, ok in checks:
        if not ok:
            raise InputError(f"meshing.band.{name}={getattr(config, name)!r} is invalid")


def narrow_band(query: FieldQuery, config: BandConfig, roi_size_mm: float, *,
                with_gradients: bool = True) -> tuple[DistanceBand, dict]:
    """The band of cells of at most ``config.cell_mm`` around the field's zero level over the ROI's unit cube.

    ``roi_size_mm``: the ROI's side (2 unit lengths). Returns the band (unit frame; gradients zero when
    ``with_gradients`` is False) and plain-number stats: ``band_s``, ``n_levels``, ``finest_cells``, ``cell_mm``,
    ``n_band_cells``, ``n_band_corners``, ``n_forward_points``, ``n_gradient_points``.
    """
    check_band_config(config)
    start = time.perf_counter()
    levels = BandLevels.for_cell(roi_size_mm, config.cell_mm, config.coarse_cells)
    mm_per_unit = roi_size_mm / 2.0
    face_unit = config.max_face_distance_mm / mm_per_unit
    n_cells = levels.coarse_cells
    axis = np.arange(n_cells, dtype=np.int64)
    cells = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), axis=-1).reshape(-1, 3)
    known_keys = np.zeros(0, dtype=np.int64)
    known_values = np.zeros(0, dtype=np.float32)
    for level in range(levels.levels + 1):
        cell_unit = 2.0 / n_cells
        corners, cell_corners = _cell_corners(cells, n_cells)
        values = _values_at(query, corners, n_cells, known_keys, known_values)
        threshold = face_unit + config.margin * math.sqrt(3.0) / 2.0 * cell_unit
        kept = values[cell_corners].min(axis=1) < threshold
        cells = cells[kept]
        if level == levels.levels:
            break
        known_keys, known_values = _lookup(corners, values, n_cells, scale=2)
        cells = (2 * cells[:, None, :] + CORNER_OFFSETS[None]).reshape(-1, 3)
        n_cells *= 2
    band_corners, _ = _cell_corners(cells, n_cells)
    if with_gradients and len(band_corners):
        distances, gradients = query.distances_and_gradients(-1.0 + band_corners * (2.0 / n_cells))
    else:  # every band corner was asked at the finest level already
        distances = _values_at(query, band_corners, n_cells, *_lookup(corners, values, n_cells, scale=1))
        gradients = np.zeros((len(band_corners), 3), dtype=np.float32)
    band = DistanceBand(cells_per_side=n_cells, cell_size=2.0 / n_cells, lower=-1.0, cells_ijk=cells,
                        corners_ijk=band_corners, distances=distances, gradients=gradients)
    stats = {"band_s": time.perf_counter() - start, "n_levels": levels.levels + 1, "finest_cells": n_cells,
             "cell_mm": roi_size_mm / n_cells, "n_band_cells": len(cells), "n_band_corners": len(band_corners),
             "n_forward_points": query.n_forward, "n_gradient_points": query.n_gradient}
    return band, stats


def _cell_corners(cells: np.ndarray, n_cells: int) -> tuple[np.ndarray, np.ndarray]:
    """Unique corners (K, 3) of ``cells`` (C, 3) and, per cell, the rows of its 8 corners (C, 8)."""
    keys = corner_keys(cells[:, None, :] + CORNER_OFFSETS[None], n_cells)
    unique_keys, inverse = np.unique(keys.reshape(-1), return_inverse=True)
    side = n_cells + 1
    corners = np.stack([unique_keys // (side * side), unique_keys // side % side, unique_keys % side], axis=1)
    return corners.astype(np.int64), inverse.reshape(-1, 8)


def _values_at(query: FieldQuery, corners: np.ndarray, n_cells: int, known_keys: np.ndarray,
               known_values: np.ndarray) -> np.ndarray:
    """(K,) the field at ``corners`` (K, 3) of a grid of ``n_cells`` per side: reused where ``known_keys`` (sorted,
    this grid's keys) has them, asked of the decoder elsewhere."""
    keys = corner_keys(corners, n_cells)
    values = np.empty(len(keys), dtype=np.float32)
    position = np.searchsorted(known_keys, keys)
    found = position < len(known_keys)
    found[found] = known_keys[position[found]] == keys[found]
    values[found] = known_values[position[found]]
    missing = ~found
    if missing.any():
        values[missing] = query.distances(-1.0 + corners[missing] * (2.0 / n_cells))
    return values


def _lookup(corners: np.ndarray, values: np.ndarray, n_cells: int, *, scale: int) -> tuple[np.ndarray, np.ndarray]:
    """``values`` at ``corners`` keyed on the grid of ``scale · n_cells`` cells (every index times ``scale``: the
    next level's grid for 2), sorted by key for :func:`_values_at`."""
    keys = corner_keys(scale * corners, scale * n_cells)
    order = np.argsort(keys)
    return keys[order], values[order]
