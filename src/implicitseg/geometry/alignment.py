"""Similarity alignment of shapes and the ISMM canonical frame (PICCT, spec ``ismm.md``).

PICCT: index → world with the full direction matrix (``frames.index_to_world``), then a similarity transform
that aligns a shape's surface to an anchor shape, found by Coherent Point Drift (pycpd, rigid with scaling),
then one global scale into the unit sphere. Every step is stored, so canonical points map back to world (and
index) exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from implicitseg.errors import InputError


@dataclass(frozen=True)
class SimilarityTransform:
    """``x ↦ scale · R x + translation`` on points (N, 3): ``rotation`` (3, 3) proper, ``scale`` > 0."""

    scale: float
    rotation: np.ndarray
    translation: np.ndarray

    def apply(self, points: np.ndarray) -> np.ndarray:
        return self.scale * np.asarray(points, dtype=np.float64) @ self.rotation.T + self.translation

    def inverse(self) -> "SimilarityTransform":
        rotation = self.rotation.T
        return SimilarityTransform(1.0 / self.scale, rotation, -(rotation @ self.translation) / self.scale)

    def to_json(self) -> dict:
        return {"scale": float(self.scale), "rotation": self.rotation.tolist(),
                "translation": self.translation.tolist()}

    @classmethod
    def from_json(cls, data: dict) -> "SimilarityTransform":
        return cls(float(data["scale"]), np.array(data["rotation"], dtype=np.float64),
                   np.array(data["translation"], dtype=np.float64))


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


def principal_axes_rotation(moving: np.ndarray, fixed: np.ndarray) -> np.ndarray:
    """The proper rotation (3, 3) that maps the principal axes of the centred cloud ``moving`` (N, 3) onto those of
    the centred cloud ``fixed`` (M, 3), of the four sign choices the one whose rotated cloud lies closest to
    ``fixed`` (mean nearest-neighbour distance both ways). Rigid CPD only finds nearby optima; started from this
    it aligns shapes in any pose."""
    from scipy.spatial import cKDTree

    def axes(points: np.ndarray) -> np.ndarray:
        return np.linalg.eigh(points.T @ points / len(points))[1][:, ::-1]  # columns, largest variance first

    moving_axes, fixed_axes = axes(moving), axes(fixed)
    fixed_tree = cKDTree(fixed)
    best, best_cost = np.eye(3), np.inf
    for signs in ((1, 1), (1, -1), (-1, 1), (-1, -1)):
        flips = np.diag([signs[0], signs[1], 1.0])
        rotation = fixed_axes @ flips @ moving_axes.T
        if np.linalg.det(rotation) < 0:
            flips[2, 2] = -1.0
            rotation = fixed_axes @ flips @ moving_axes.T
        rotated = moving @ rotation.T
        cost = fixed_tree.query(rotated)[0].mean() + cKDTree(rotated).query(fixed)[0].mean()
        if cost < best_cost:
            best, best_cost = rotation, cost
    return best


def coherent_point_drift(moving_points: np.ndarray, fixed_points: np.ndarray, *, max_points: int = 3000,
                         iterations: int = 100, tolerance: float = 1e-3, outlier_weight: float = 0.0,
                         seed: int = 0) -> CpdResult:
    """Rigid-with-scaling Coherent Point Drift of ``moving_points`` (N, 3) onto ``fixed_points`` (M, 3) (pycpd),
    each cloud subsampled to ``max_points`` so the posterior matrix fits in memory; ``outlier_weight`` is CPD's
    ``w`` (the uniform outlier component's share, 0 ≤ w < 1). Both clouds are first centred and scaled to unit RMS
    radius (CPD's variance initialisation then behaves the same for any mm extent), which the returned transform
    accounts for. The registration starts from the principal-axes alignment (:func:`principal_axes_rotation`)."""
    from pycpd import RigidRegistration

    moving = np.asarray(moving_points, dtype=np.float64)
    fixed = np.asarray(fixed_points, dtype=np.float64)
    if moving.ndim != 2 or fixed.ndim != 2 or moving.shape[1] != 3 or fixed.shape[1] != 3 or min(len(moving),
                                                                                                  len(fixed)) < 4:
        raise InputError(f"alignment needs two clouds of at least 4 points (N, 3); got {moving.shape}, {fixed.shape}")
    if not 0.0 <= outlier_weight < 1.0:
        raise InputError(f"CPD outlier weight must be in [0, 1), got {outlier_weight}")
    rng = np.random.default_rng(seed)
    moving_indices = (np.arange(len(moving)) if len(moving) <= max_points
                      else np.sort(rng.choice(len(moving), max_points, replace=False)))
    moving_sample, fixed_sample = moving[moving_indices], _subsample(fixed, max_points, rng)
    moving_center, fixed_center = moving_sample.mean(axis=0), fixed_sample.mean(axis=0)
    moving_radius = np.sqrt(((moving_sample - moving_center) ** 2).sum(axis=1).mean())
    fixed_radius = np.sqrt(((fixed_sample - fixed_center) ** 2).sum(axis=1).mean())
    fixed_normalised = (fixed_sample - fixed_center) / fixed_radius
    moving_normalised = (moving_sample - moving_center) / moving_radius
    start = principal_axes_rotation(moving_normalised, fixed_normalised)
    registration = RigidRegistration(X=fixed_normalised, Y=moving_normalised @ start.T, w=float(outlier_weight),
                                     max_iterations=int(iterations), tolerance=float(tolerance), scale=True)
    _, (scale, rotation_right, shift) = registration.register()
    # pycpd moves row vectors: y ↦ s · y R + t; compose with the start and the normalisations on both sides
    rotation = np.asarray(rotation_right).T @ start
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


@dataclass(frozen=True)
class Picct:
    """One shape's physical-informed continuous coordinate transform: world LPS mm → anchor-aligned
    (``similarity``, e.g. :func:`cpd_similarity` onto the anchor shape's points with their centroid subtracted, so
    the aligned shapes sit about the origin) → canonical (× ``global_scale``, the same for every shape of a
    dataset: :func:`unit_sphere_scale`)."""

    similarity: SimilarityTransform
    global_scale: float

    def world_to_canonical(self, points_world_mm: np.ndarray) -> np.ndarray:
        return self.global_scale * self.similarity.apply(points_world_mm)

    def canonical_to_world(self, points_canonical: np.ndarray) -> np.ndarray:
        return self.similarity.inverse().apply(np.asarray(points_canonical, dtype=np.float64) / self.global_scale)

    def to_json(self) -> dict:
        return {"similarity": self.similarity.to_json(), "global_scale": float(self.global_scale)}

    @classmethod
    def from_json(cls, data: dict) -> "Picct":
        return cls(SimilarityTransform.from_json(data["similarity"]), float(data["global_scale"]))


def unit_sphere_scale(aligned_shapes: list[np.ndarray], margin: float = 0.9) -> float:
    """The one scale that puts every aligned shape (points (N, 3) in the anchor's frame, mm) inside the unit
    sphere about the origin with ``margin`` to spare: ``margin / max |p|``."""
    radius = max(float(np.linalg.norm(points, axis=1).max()) for points in aligned_shapes)
    if radius <= 0:
        raise InputError("cannot scale shapes of zero extent into the unit sphere")
    return margin / radius
