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


def cpd_similarity(moving_points: np.ndarray, fixed_points: np.ndarray, *, max_points: int = 3000,
                   iterations: int = 100, tolerance: float = 1e-3, seed: int = 0) -> SimilarityTransform:
    """The similarity transform that brings ``moving_points`` (N, 3) onto ``fixed_points`` (M, 3), by Coherent
    Point Drift (rigid with scaling, no outlier weight), each cloud subsampled to ``max_points`` so the N × M
    posterior fits in memory. Both clouds are first centred and scaled to unit RMS radius (CPD's variance
    initialisation behaves the same for any mm extent), which the returned transform accounts for."""
    from pycpd import RigidRegistration

    moving = np.asarray(moving_points, dtype=np.float64)
    fixed = np.asarray(fixed_points, dtype=np.float64)
    if moving.ndim != 2 or fixed.ndim != 2 or moving.shape[1] != 3 or fixed.shape[1] != 3 or min(len(moving),
                                                                                                  len(fixed)) < 4:
        raise InputError(f"alignment needs two clouds of at least 4 points (N, 3); got {moving.shape}, {fixed.shape}")
    rng = np.random.default_rng(seed)
    moving_sample, fixed_sample = _subsample(moving, max_points, rng), _subsample(fixed, max_points, rng)
    moving_center, fixed_center = moving_sample.mean(axis=0), fixed_sample.mean(axis=0)
    moving_radius = np.sqrt(((moving_sample - moving_center) ** 2).sum(axis=1).mean())
    fixed_radius = np.sqrt(((fixed_sample - fixed_center) ** 2).sum(axis=1).mean())
    registration = RigidRegistration(X=(fixed_sample - fixed_center) / fixed_radius,
                                     Y=(moving_sample - moving_center) / moving_radius, w=0.0,
                                     max_iterations=int(iterations), tolerance=float(tolerance), scale=True)
    _, (scale, rotation_right, shift) = registration.register()
    # pycpd moves row vectors: y ↦ s · y R + t; compose with the normalisations on both sides
    rotation = np.asarray(rotation_right).T
    total_scale = float(scale) * fixed_radius / moving_radius
    translation = fixed_center + fixed_radius * (np.asarray(shift).ravel() - float(scale) * rotation @ moving_center
                                                 / moving_radius)
    return SimilarityTransform(total_scale, rotation, translation)


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
