"""What every phantom draws from: random rotations, a smooth random field over mm, an oblique image direction."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """(3, 3) rotation (det +1) drawn uniformly."""
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def axis_angle_rotation(axis: np.ndarray, angle_rad: float) -> np.ndarray:
    """(3, 3) rotation by ``angle_rad`` about the unit vector ``axis`` (Rodrigues)."""
    axis = axis / np.linalg.norm(axis)
    cross = np.array([[0.0, -axis[2], axis[1]], [axis[2], 0.0, -axis[0]], [-axis[1], axis[0], 0.0]])
    return np.eye(3) + np.sin(angle_rad) * cross + (1.0 - np.cos(angle_rad)) * cross @ cross


def unit_perpendicular(vector: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random unit vector perpendicular to ``vector``."""
    candidate = rng.normal(size=3)
    candidate -= (candidate @ vector) / (vector @ vector) * vector
    return candidate / np.linalg.norm(candidate)


@dataclass(frozen=True)
class LowFrequencyField:
    """Sum of a few plane waves: a smooth random field in [-1, 1] over positions in mm."""

    wave_vectors_per_mm: np.ndarray  # (W, 3)
    phases: np.ndarray  # (W,)

    @classmethod
    def draw(cls, rng: np.random.Generator, n_waves: int, wavelength_mm: tuple[float, float]) -> "LowFrequencyField":
        directions = rng.normal(size=(n_waves, 3))
        directions /= np.linalg.norm(directions, axis=1, keepdims=True)
        wavelengths = rng.uniform(*wavelength_mm, size=n_waves)
        return cls(directions * (2.0 * np.pi / wavelengths[:, None]), rng.uniform(0.0, 2.0 * np.pi, size=n_waves))

    def __call__(self, points_mm: np.ndarray) -> np.ndarray:
        """(N,) values in [-1, 1]."""
        return np.cos(points_mm @ self.wave_vectors_per_mm.T + self.phases).mean(axis=1)

    def on_grid(self, mm_from_index: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
        """Values on a whole voxel grid, ``shape`` array; ``mm_from_index`` (4, 4) maps voxel indices to the
        field's frame. A plane wave is separable over the index axes, so no per-voxel cosine is needed."""
        total = np.zeros(shape)
        axes = [np.arange(n) for n in shape]
        for wave, phase in zip(self.wave_vectors_per_mm, self.phases):
            per_index = mm_from_index[:3, :3].T @ wave
            factors = [np.exp(1j * per_index[a] * axes[a]) for a in range(3)]
            plane = np.exp(1j * (wave @ mm_from_index[:3, 3] + phase)) * factors[0][:, None] * factors[1][None, :]
            total += (plane[:, :, None] * factors[2][None, None, :]).real
        return total / len(self.phases)


def draw_image_direction(rng: np.random.Generator) -> np.ndarray:
    """(3, 3) orthonormal image direction (columns = index axes in world LPS): a rotation by 10–40° about a
    random axis, so never axis-aligned, with one axis flipped (det -1) in 40 % of draws."""
    direction = axis_angle_rotation(rng.normal(size=3), np.radians(rng.uniform(10.0, 40.0)))
    if rng.random() < 0.4:
        direction = direction @ np.diag(rng.permutation([1.0, 1.0, -1.0]))
    return direction
