"""Exact unsigned distance fields in the ROI's unit frame (a 70 mm ROI: 1 unit = 35 mm), as decoders that
:class:`~implicitseg.inference.narrow_band.FieldQuery` can ask: ``decode(features, points (1, N, 3)) -> (1, N)``."""

from __future__ import annotations

import numpy as np
import torch

ROI_MM = 70.0
MM = 2.0 / ROI_MM
"""One mm in unit lengths."""
RADIUS = 15 * MM
HALF_SIDE = 20 * MM
"""Half the side of the square sheets."""
HOLE_RADIUS = 6 * MM
SHEET_GAP = 2 * MM


def sphere(points: torch.Tensor, centre=(0.0, 0.0, 0.0), radius: float = RADIUS) -> torch.Tensor:
    return ((points - torch.tensor(centre, dtype=points.dtype)).norm(dim=-1) - radius).abs()


def hemisphere(points: torch.Tensor) -> torch.Tensor:
    """The sphere's cap z ≥ 0: open, one boundary loop (the rim, radius :data:`RADIUS` in z = 0)."""
    rim = torch.sqrt((points[..., :2].norm(dim=-1) - RADIUS) ** 2 + points[..., 2] ** 2)
    return torch.where(points[..., 2] >= 0, sphere(points), rim)


def square_sheet(points: torch.Tensor, height: float, hole_radius: float = 0.0) -> torch.Tensor:
    """The square |x|, |y| ≤ :data:`HALF_SIDE` in the plane z = ``height``, less a disk of ``hole_radius`` at its centre."""
    outside = (points[..., :2].abs() - HALF_SIDE).clamp_min(0).norm(dim=-1)
    in_hole = (hole_radius - points[..., :2].norm(dim=-1)).clamp_min(0)
    return torch.sqrt(torch.maximum(outside, in_hole) ** 2 + (points[..., 2] - height) ** 2)


SHEET_HEIGHT = 0.3 * MM
"""Where the sheets lie off the grid's corners (a surface through corners has no gradient there to sign by)."""


def two_sheets(points: torch.Tensor) -> torch.Tensor:
    """Two parallel squares :data:`SHEET_GAP` apart about z = :data:`SHEET_HEIGHT`: two components, two loops."""
    return torch.minimum(square_sheet(points, SHEET_HEIGHT - SHEET_GAP / 2),
                         square_sheet(points, SHEET_HEIGHT + SHEET_GAP / 2))


def holed_sheet(points: torch.Tensor) -> torch.Tensor:
    """A square with a round hole of :data:`HOLE_RADIUS`: two boundary loops."""
    return square_sheet(points, 0.013, HOLE_RADIUS)


def sphere_and_speck(points: torch.Tensor) -> torch.Tensor:
    """The sphere and, 25 mm from it, a speck (a 1.5 mm sphere): a small spurious surface beside the true one."""
    return torch.minimum(sphere(points), sphere(points, (0.0, 0.0, 32 * MM), 1.5 * MM))


def as_decoder(field):
    """``field(points (..., 3)) -> (...)`` as ``decode(features, points (1, N, 3)) -> (1, N)``."""
    return lambda features, points_unit: field(points_unit)


def surface_samples(name: str, n: int = 20_000, seed: int = 0) -> np.ndarray:
    """(n, 3) points on the analytic surface ``name`` (unit frame), for coverage checks."""
    rng = np.random.default_rng(seed)
    if name in ("sphere", "hemisphere"):
        directions = rng.normal(size=(n, 3))
        directions /= np.linalg.norm(directions, axis=1, keepdims=True)
        if name == "hemisphere":
            directions[:, 2] = np.abs(directions[:, 2])
        return directions * RADIUS
    planar = rng.uniform(-HALF_SIDE, HALF_SIDE, size=(n, 2))
    if name == "holed_sheet":
        planar = planar[np.linalg.norm(planar, axis=1) >= HOLE_RADIUS]
        return np.column_stack([planar, np.full(len(planar), 0.013)])
    heights = SHEET_HEIGHT + np.where(rng.random(n) < 0.5, -SHEET_GAP / 2, SHEET_GAP / 2)
    return np.column_stack([planar, heights])


FIELDS = {"sphere": sphere, "hemisphere": hemisphere, "two_sheets": two_sheets, "holed_sheet": holed_sheet}
