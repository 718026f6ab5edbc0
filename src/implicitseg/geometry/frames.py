"""Every conversion between coordinate frames lives here.

Frames (DESIGN §4):

- **index**: ``(i, j, k)`` into a :class:`~implicitseg.io.images.Volume` array, ``array[i, j, k]``, where
  ``i`` runs along the image's first (ITK "x") axis.
- **world**: millimetres in **LPS** (ITK / DICOM / 3D Slicer). ``world = origin + D @ diag(spacing) @ index``,
  i.e. ``world = affine_lps @ [i, j, k, 1]``. ``origin`` is the centre of the first voxel.
- **roi**: a cube of side ``size_mm`` centred at ``center_world_mm`` with axes parallel to the world axes,
  sampled on ``res``³ voxel centres. Voxel ``0`` sits on the cube's lower face and voxel ``res - 1`` on its
  upper face (the ``align_corners=True`` convention), so the ROI spacing is ``size_mm / (res - 1)``.
- **unit**: the ROI cube mapped to ``[-1, 1]³``: ``unit = (world - center) / (size_mm / 2)``. Networks see
  unit coordinates only; a distance of 1 unit is ``size_mm / 2`` mm.

Tensor axis order (the one place it is stated): a ROI image is stored as ``(Z, Y, X)`` = ``(D, H, W)``, so
``torch.nn.functional.grid_sample(image[None, None], points_unit[None, :, None, None])`` reads the image at
points given in ``(x, y, z)`` order — ``grid_sample`` takes its last coordinate as the first tensor axis.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0])
"""Flips x and y: maps RAS coordinates to LPS and back (it is its own inverse)."""


def affine_from_geometry(origin: np.ndarray, spacing: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """4×4 index→world (LPS mm) affine from ITK origin (3,), spacing (3,), direction (3, 3) (columns = axes)."""
    origin = np.asarray(origin, dtype=np.float64).reshape(3)
    spacing = np.asarray(spacing, dtype=np.float64).reshape(3)
    direction = np.asarray(direction, dtype=np.float64).reshape(3, 3)
    affine = np.eye(4)
    affine[:3, :3] = direction @ np.diag(spacing)
    affine[:3, 3] = origin
    return affine


def geometry_from_affine(affine_lps: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inverse of :func:`affine_from_geometry`: (origin (3,), spacing (3,), direction (3, 3))."""
    linear = np.asarray(affine_lps, dtype=np.float64)[:3, :3]
    spacing = np.linalg.norm(linear, axis=0)
    direction = linear / spacing
    return affine_lps[:3, 3].copy(), spacing, direction


def index_to_world(points_index: np.ndarray, affine_lps: np.ndarray) -> np.ndarray:
    """(N, 3) continuous voxel indices → (N, 3) world LPS mm."""
    points_index = np.asarray(points_index, dtype=np.float64)
    return points_index @ affine_lps[:3, :3].T + affine_lps[:3, 3]


def world_to_index(points_world_mm: np.ndarray, affine_lps: np.ndarray) -> np.ndarray:
    """(N, 3) world LPS mm → (N, 3) continuous voxel indices."""
    points_world_mm = np.asarray(points_world_mm, dtype=np.float64)
    inverse = np.linalg.inv(affine_lps)
    return points_world_mm @ inverse[:3, :3].T + inverse[:3, 3]


def ras_to_lps(points: np.ndarray) -> np.ndarray:
    """(N, 3) RAS mm ↔ LPS mm (the same flip both ways)."""
    return np.asarray(points, dtype=np.float64) @ LPS_FROM_RAS


lps_to_ras = ras_to_lps


@dataclass(frozen=True)
class Roi:
    """An axis-aligned cube in world LPS mm and its ``res``³ sampling grid (see module docstring)."""

    center_world_mm: tuple[float, float, float]
    size_mm: float
    res: int

    def __post_init__(self) -> None:
        center = tuple(float(c) for c in self.center_world_mm)
        if len(center) != 3 or not all(np.isfinite(center)):
            raise ValueError(f"ROI centre must be 3 finite numbers (mm), got {self.center_world_mm!r}")
        if not (self.size_mm > 0 and np.isfinite(self.size_mm)):
            raise ValueError(f"ROI size must be a positive number of mm, got {self.size_mm!r}")
        if int(self.res) < 2:
            raise ValueError(f"ROI resolution must be at least 2 voxels, got {self.res!r}")
        object.__setattr__(self, "center_world_mm", center)
        object.__setattr__(self, "size_mm", float(self.size_mm))
        object.__setattr__(self, "res", int(self.res))

    @property
    def half_size_mm(self) -> float:
        """mm per unit length."""
        return self.size_mm / 2.0

    @property
    def spacing_mm(self) -> float:
        """Distance between neighbouring ROI voxel centres (mm)."""
        return self.size_mm / (self.res - 1)

    @property
    def origin_world_mm(self) -> np.ndarray:
        """World position (LPS mm) of ROI voxel (0, 0, 0), the cube's lower corner."""
        return np.asarray(self.center_world_mm) - self.half_size_mm

    def world_to_unit(self, points_world_mm: np.ndarray) -> np.ndarray:
        """(N, 3) world LPS mm → (N, 3) unit coordinates (x, y, z order)."""
        return (np.asarray(points_world_mm, dtype=np.float64) - np.asarray(self.center_world_mm)) / self.half_size_mm

    def unit_to_world(self, points_unit: np.ndarray) -> np.ndarray:
        """(N, 3) unit coordinates → (N, 3) world LPS mm."""
        return np.asarray(points_unit, dtype=np.float64) * self.half_size_mm + np.asarray(self.center_world_mm)

    def world_to_roi_index(self, points_world_mm: np.ndarray) -> np.ndarray:
        """(N, 3) world LPS mm → continuous ROI voxel indices in (x, y, z) order."""
        return (np.asarray(points_world_mm, dtype=np.float64) - self.origin_world_mm) / self.spacing_mm

    def roi_index_to_world(self, points_roi_index: np.ndarray) -> np.ndarray:
        """(N, 3) continuous ROI voxel indices (x, y, z) → world LPS mm."""
        return np.asarray(points_roi_index, dtype=np.float64) * self.spacing_mm + self.origin_world_mm

    @property
    def index_affine_lps(self) -> np.ndarray:
        """4×4 affine from ROI voxel index (x, y, z) to world LPS mm: a ROI array in (Z, Y, X) order, transposed
        to (X, Y, Z), is a volume with this affine."""
        affine = np.eye(4)
        affine[:3, :3] = np.eye(3) * self.spacing_mm
        affine[:3, 3] = self.origin_world_mm
        return affine

    def mm_to_unit(self, distance_mm: np.ndarray | float) -> np.ndarray | float:
        """Length in mm → length in unit coordinates."""
        return distance_mm / self.half_size_mm

    def unit_to_mm(self, distance_unit: np.ndarray | float) -> np.ndarray | float:
        """Length in unit coordinates → length in mm."""
        return distance_unit * self.half_size_mm

    def contains_world(self, points_world_mm: np.ndarray) -> np.ndarray:
        """(N,) bool: whether each world point lies inside the cube."""
        return np.all(np.abs(self.world_to_unit(points_world_mm)) <= 1.0, axis=-1)

    def to_json(self) -> dict:
        """Plain-JSON description (DESIGN §5 ``roi.json``)."""
        return {
            "center_world_mm": list(self.center_world_mm),
            "size_mm": self.size_mm,
            "res": self.res,
            "space": "LPS",
            "axes": "world-aligned; unit = (world - center) / (size_mm / 2); voxel 0 and res-1 on the faces",
            "spacing_mm": self.spacing_mm,
        }

    @classmethod
    def from_json(cls, data: dict) -> "Roi":
        """Inverse of :meth:`to_json`."""
        return cls(tuple(data["center_world_mm"]), float(data["size_mm"]), int(data["res"]))
