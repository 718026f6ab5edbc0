"""Similarity alignment of shapes, which finds ISMM's canonical frame (PICCT, spec ``ismm.md``;
the frame itself, :class:`~implicitseg.geometry.frames.Picct`, lives in :mod:`implicitseg.geometry.frames`).

A shape's surface is aligned to an anchor shape by Coherent Point Drift (pycpd, rigid with scaling); one global
scale (:func:`unit_sphere_scale`) then puts every aligned shape into the unit sphere.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from implicitseg.config.ismm import ALIGNMENT_STARTS
from implicitseg.errors import InputError
from implicitseg.geometry.frames import SimilarityTransform


def _subsample(points: np.ndarray, max_points: int, rng: np.random.Generator) -> np.ndarray:
    if len(points) <= max_points:
        return points
    return points[rng.choice(len(points), max_points, replace=False)]


@dataclass(frozen=True)
class CpdResult:
    """A Coherent Point Drift registration: the similarity that brings the moving cloud onto the fixed one, the
    indices (K,) of the moving points it used (a subsample) and, per used moving point, the total posterior mass the
    fixed points assign to it (K,): near 0 for a moving point no fixed point claims."""

    transform: SimilarityTransform
    moving_indices: np.ndarray
    moving_posterior_mass: np.ndarray


def principal_axes_rotations(moving: np.ndarray, fixed: np.ndarray) -> list[np.ndarray]:
    """The four proper rotations (3, 3) that map the principal axes of the centred cloud ``moving`` (N, 3) onto those
    of the centred cloud ``fixed`` (M, 3) (one per sign choice of the first two axes), closest first (mean
    nearest-neighbour distance both ways of the rotated cloud). Rigid CPD only finds nearby optima; started from
    these it aligns shapes in any pose."""

    def axes(points: np.ndarray) -> np.ndarray:
        return np.linalg.eigh(points.T @ points / len(points))[1][:, ::-1]  # columns, largest variance first

    moving_axes, fixed_axes = axes(moving), axes(fixed)
    rotations = []
    for signs in ((1, 1), (1, -1), (-1, 1), (-1, -1)):
        flips = np.diag([signs[0], signs[1], 1.0])
        rotation = fixed_axes @ flips @ moving_axes.T
        if np.linalg.det(rotation) < 0:
            flips[2, 2] = -1.0
            rotation = fixed_axes @ flips @ moving_axes.T
        rotations.append(rotation)
    return sorted(rotations, key=lambda rotation: symmetric_trimmed_distance(moving @ rotation.T, fixed, 1.0))


def symmetric_trimmed_distance(moving: np.ndarray, fixed: np.ndarray, kept_fraction: float) -> float:
    """The mean nearest-neighbour distance of two clouds (N, 3), (M, 3), each way over the closest ``kept_fraction``
    of its points, summed: how well two shapes overlap where they overlap (a damaged part does not count)."""
    from scipy.spatial import cKDTree

    total = 0.0
    for a, b in ((moving, fixed), (fixed, moving)):
        distances = np.sort(cKDTree(b).query(a)[0])
        total += float(distances[: max(1, int(round(kept_fraction * len(distances))))].mean())
    return total


def coherent_point_drift(moving_points: np.ndarray, fixed_points: np.ndarray, *, max_points: int = 3000,
                         iterations: int = 100, tolerance: float = 1e-3, outlier_weight: float = 0.0,
                         start: str = "principal-axes", seed: int = 0) -> CpdResult:
    """Rigid-with-scaling Coherent Point Drift of ``moving_points`` (N, 3) onto ``fixed_points`` (M, 3) (pycpd),
    each cloud subsampled to ``max_points`` so the posterior matrix fits in memory; ``outlier_weight`` is CPD's
    ``w`` (the uniform outlier component's share, 0 ≤ w < 1). Both clouds are first centred and scaled to unit RMS
    radius (CPD's variance initialisation then behaves the same for any mm extent), which the returned transform
    accounts for. ``start``: ``principal-axes`` (shapes in any pose) runs CPD from each of the four principal-axes
alignments (:func:`principal_axes_rotations`) and keeps the one whose registered clouds overlap best (the closest
75 % of each cloud's points: :func:`symmetric_trimmed_distance`); ``world`` starts from the clouds' own pose (no
rotation: shapes in one patient coordinate system, whose anatomy keeps its orientation). A thin, curved shape
that lost a part can overlap its template about as well turned 180° as it does upright; from the world pose CPD
stays in the upright optimum."""
    from pycpd import RigidRegistration

    moving = np.asarray(moving_points, dtype=np.float64)
    fixed = np.asarray(fixed_points, dtype=np.float64)
    if moving.ndim != 2 or fixed.ndim != 2 or moving.shape[1] != 3 or fixed.shape[1] != 3 or min(len(moving),
                                                                                                  len(fixed)) < 4:
        raise InputError(f"alignment needs two clouds of at least 4 points (N, 3); got {moving.shape}, {fixed.shape}")
    if not 0.0 <= outlier_weight < 1.0:
        raise InputError(f"CPD outlier weight must be in [0, 1), got {outlier_weight}")
    if start not in ALIGNMENT_STARTS:
        raise InputError(f"CPD start must be one of {', '.join(ALIGNMENT_STARTS)}, got {start!r}")
    rng = np.random.default_rng(seed)
    moving_indices = (np.arange(len(moving)) if len(moving) <= max_points
                      else np.sort(rng.choice(len(moving), max_points, replace=False)))
    moving_sample, fixed_sample = moving[moving_indices], _subsample(fixed, max_points, rng)
    moving_center, fixed_center = moving_sample.mean(axis=0), fixed_sample.mean(axis=0)
    moving_radius = np.sqrt(((moving_sample - moving_center) ** 2).sum(axis=1).mean())
    fixed_radius = np.sqrt(((fixed_sample - fixed_center) ** 2).sum(axis=1).mean())
    fixed_normalised = (fixed_sample - fixed_center) / fixed_radius
    moving_normalised = (moving_sample - moving_center) / moving_radius
    starts = ([np.eye(3)] if start == "world" else principal_axes_rotations(moving_normalised, fixed_normalised))
    best = None
    for start_rotation in starts:
        registration = RigidRegistration(X=fixed_normalised, Y=moving_normalised @ start_rotation.T,
                                         w=float(outlier_weight), max_iterations=int(iterations),
                                         tolerance=float(tolerance), scale=True)
        registered, parameters = registration.register()
        cost = symmetric_trimmed_distance(np.asarray(registered), fixed_normalised, 0.75)
        if best is None or cost < best[0]:
            best = (cost, start_rotation, registration, parameters)
    _, start_rotation, registration, (scale, rotation_right, shift) = best
    # pycpd moves row vectors: y ↦ s · y R + t; compose with the start and the normalisations on both sides
    rotation = np.asarray(rotation_right).T @ start_rotation
    total_scale = float(scale) * fixed_radius / moving_radius
    translation = fixed_center + fixed_radius * (np.asarray(shift).ravel() - float(scale) * rotation @ moving_center
                                                 / moving_radius)
    # pycpd's P is (moving M, fixed N), each fixed point's posterior spread over the moving points
    mass = np.asarray(registration.P).sum(axis=1)
    return CpdResult(SimilarityTransform(total_scale, rotation, translation), moving_indices, mass)


def cpd_similarity(moving_points: np.ndarray, fixed_points: np.ndarray, *, max_points: int = 3000,
                   iterations: int = 100, tolerance: float = 1e-3, seed: int = 0) -> SimilarityTransform:
    """The similarity transform that brings ``moving_points`` (N, 3) onto ``fixed_points`` (M, 3) by Coherent Point
    Drift with no outlier weight (PICCT's alignment; :func:`coherent_point_drift`)."""
    return coherent_point_drift(moving_points, fixed_points, max_points=max_points, iterations=iterations,
                                tolerance=tolerance, seed=seed).transform


def unit_sphere_scale(aligned_shapes: list[np.ndarray], margin: float = 0.9) -> float:
    """The one scale that puts every aligned shape (points (N, 3) in the anchor's frame, mm) inside the unit
    sphere about the origin with ``margin`` to spare: ``margin / max |p|``."""
    radius = max(float(np.linalg.norm(points, axis=1).max()) for points in aligned_shapes)
    if radius <= 0:
        raise InputError("cannot scale shapes of zero extent into the unit sphere")
    return margin / radius
