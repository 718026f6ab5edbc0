"""Small builders shared by tests: oblique/flipped/anisotropic affines and analytic shapes."""

from __future__ import annotations

import numpy as np
import torch

from implicitseg.geometry.frames import affine_from_geometry


def rotation_matrix(angles_degrees: tuple[float, float, float]) -> np.ndarray:
    """(3, 3) rotation from Euler angles about x, then y, then z (degrees)."""
    ax, ay, az = np.radians(angles_degrees)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


AFFINE_CASES = {
    "axis_aligned": affine_from_geometry([0.0, 0.0, 0.0], [1.0, 1.0, 1.0], np.eye(3)),
    "anisotropic": affine_from_geometry([-20.0, 13.0, 7.5], [0.6, 0.8, 1.7], np.eye(3)),
    "oblique": affine_from_geometry([5.0, -30.0, 12.0], [0.7, 0.7, 1.3], rotation_matrix((20, -35, 50))),
    "flipped_oblique": affine_from_geometry(
        [40.0, 2.0, -60.0], [0.9, 0.5, 1.1], rotation_matrix((-10, 25, 130)) @ np.diag([1.0, -1.0, 1.0])
    ),
}
"""Index→world LPS affines covering oblique directions, a flipped axis (det < 0) and anisotropic spacing."""


def sphere_volume(affine_lps: np.ndarray, shape: tuple[int, int, int], center_world_mm: np.ndarray,
                  radius_mm: float, *, inside: float = 1.0, outside: float = 0.0) -> np.ndarray:
    """Array on the given grid: ``inside`` where the voxel centre lies in the sphere, else ``outside``."""
    from implicitseg.geometry.frames import index_to_world

    index = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1).reshape(-1, 3)
    world = index_to_world(index, affine_lps)
    distance = np.linalg.norm(world - np.asarray(center_world_mm), axis=1).reshape(shape)
    return np.where(distance <= radius_mm, inside, outside).astype(np.float32)


def blurred_sphere_hu(affine_lps: np.ndarray, shape: tuple[int, int, int], center_world_mm: np.ndarray,
                      radius_mm: float) -> np.ndarray:
    """A CT-like sphere: 1000 HU inside, 0 HU outside, blurred (partial volume) over a few mm; 500 HU on the sphere."""
    from implicitseg.geometry.frames import index_to_world

    index = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1).reshape(-1, 3)
    distance = np.linalg.norm(index_to_world(index, affine_lps) - center_world_mm, axis=1) - radius_mm
    blood = 1.0 / (1.0 + np.exp(distance / 1.5))
    return (blood * 1000.0).reshape(shape).astype(np.float32)


class BrightIsForeground(torch.nn.Module):
    """A segmentation 'network' (logits (B, 2, D, H, W)) whose foreground logit rises steeply where the normalised
    image exceeds 0.5: it segments a bright object exactly, so tests can follow its output through the frames."""

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.zeros_like(image), (image - 0.5) * 20.0], dim=1)


def posed_ellipsoid_labelmap(affine_lps: np.ndarray, semi_axes_mm: np.ndarray, rotation: np.ndarray,
                             scale: float = 1.0, extent_mm: float = 64.0):
    """A labelmap (:class:`Volume`, uint8) of an ellipsoid of ``semi_axes_mm`` × ``scale``, turned by ``rotation``
    (3, 3), at the centre of a grid ``extent_mm`` wide along each of its axes; and that centre (3,) world LPS mm."""
    from implicitseg.geometry.frames import index_to_world
    from implicitseg.io.images import Volume

    shape = tuple(int(n) for n in np.ceil(extent_mm / np.linalg.norm(affine_lps[:3, :3], axis=0)))
    center = index_to_world(np.array(shape)[None] / 2.0, affine_lps)[0]
    index = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1).reshape(-1, 3)
    local = (index_to_world(index, affine_lps) - center) @ rotation / scale
    inside = np.linalg.norm(local / np.asarray(semi_axes_mm), axis=1) <= 1.0
    return Volume(inside.reshape(shape).astype(np.uint8), affine_lps), center
