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
- **canonical** (ISMM, spec ``ismm.md``): a shape's PICCT (:class:`Picct`): world LPS mm → a similarity that aligns
  it to the anchor shape (the anchor's own: its centre moved to the origin, :func:`anchor_picct`) → × one global
  scale, which puts every training shape inside the unit sphere; the networks' box is ``[-CANONICAL_BOX,
  CANONICAL_BOX]³``. Unitless: 1 canonical unit is ``1 / global_scale`` mm of the anchor-aligned shape. A mesh in
  this frame is a :class:`CanonicalMesh` (``vertices_canonical``), never a world-mm ``Mesh``.
- **nisf** (NISF, spec "Coordinates"): ``(world - image box centre) / canonical.scale_mm`` (one scale for every
  subject), plus the frame's time in [0, 1) of the cycle as a fourth coordinate with ``canonical.with_time``
  (:func:`nisf_coordinates`, :func:`nisf_coordinates_of_world`).

Tensor axis order (the one place it is stated): a ROI image is stored as ``(Z, Y, X)`` = ``(D, H, W)``, so
``torch.nn.functional.grid_sample(image[None, None], points_unit[None, :, None, None])`` reads the image at
points given in ``(x, y, z)`` order — ``grid_sample`` takes its last coordinate as the first tensor axis.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from implicitseg.config import NisfConfig

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


# ----------------------------------------------------------------------------------------------------------
# ISMM's canonical frame
# ----------------------------------------------------------------------------------------------------------

CANONICAL_BOX = 1.0
"""The canonical box is [-1, 1]³: every training shape lies in the unit sphere (PICCT's global scale)."""


@dataclass(frozen=True)
class SimilarityTransform:
    """``x ↦ scale · R x + translation`` on points (N, 3): ``rotation`` (3, 3) proper, ``scale`` > 0."""

    scale: float
    rotation: np.ndarray
    translation: np.ndarray

    def apply(self, points: np.ndarray) -> np.ndarray:
        """The transformed points (N, 3) float64."""
        return self.scale * np.asarray(points, dtype=np.float64) @ self.rotation.T + self.translation

    def inverse(self) -> "SimilarityTransform":
        """The transform that undoes this one."""
        rotation = self.rotation.T
        return SimilarityTransform(1.0 / self.scale, rotation, -(rotation @ self.translation) / self.scale)

    def to_json(self) -> dict:
        return {"scale": float(self.scale), "rotation": self.rotation.tolist(),
                "translation": self.translation.tolist()}

    @classmethod
    def from_json(cls, data: dict) -> "SimilarityTransform":
        return cls(float(data["scale"]), np.array(data["rotation"], dtype=np.float64),
                   np.array(data["translation"], dtype=np.float64))


@dataclass(frozen=True)
class Picct:
    """One shape's physical-informed continuous coordinate transform: world LPS mm → anchor-aligned mm
    (``similarity``, e.g. :func:`~implicitseg.geometry.alignment.cpd_similarity` onto the anchor shape's points with
    their centroid subtracted, so the aligned shapes sit about the origin) → canonical (× ``global_scale``, the same
    for every shape of a dataset: :func:`~implicitseg.geometry.alignment.unit_sphere_scale`)."""

    similarity: SimilarityTransform
    global_scale: float

    def world_to_canonical(self, points_world_mm: np.ndarray) -> np.ndarray:
        """(N, 3) world LPS mm → (N, 3) canonical."""
        return self.global_scale * self.similarity.apply(points_world_mm)

    def canonical_to_world(self, points_canonical: np.ndarray) -> np.ndarray:
        """(N, 3) canonical → (N, 3) world LPS mm."""
        return self.similarity.inverse().apply(np.asarray(points_canonical, dtype=np.float64) / self.global_scale)

    def to_json(self) -> dict:
        return {"similarity": self.similarity.to_json(), "global_scale": float(self.global_scale)}

    @classmethod
    def from_json(cls, data: dict) -> "Picct":
        return cls(SimilarityTransform.from_json(data["similarity"]), float(data["global_scale"]))


def anchor_picct(anchor_center_world_mm: np.ndarray, global_scale: float) -> Picct:
    """The anchor shape's own PICCT: its centre (3,) world LPS mm moved to the origin, then × ``global_scale``."""
    return Picct(SimilarityTransform(1.0, np.eye(3), -np.asarray(anchor_center_world_mm, dtype=np.float64)),
                 float(global_scale))


def canonical_to_anchor_mm(points_canonical: np.ndarray, global_scale: float) -> np.ndarray:
    """(N, 3) canonical → (N, 3) anchor-aligned mm, the frame shapes are registered in (canonical / ``global_scale``;
    :class:`Picct`'s middle frame)."""
    return np.asarray(points_canonical, dtype=np.float64) / float(global_scale)


def triangle_arrays(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A triangle mesh's float64 (V, 3) vertices and int64 (F, 3) faces, in any frame; faces that index a vertex
    that does not exist raise ``ValueError``."""
    vertices = np.asarray(vertices, dtype=np.float64).reshape(-1, 3)
    faces = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    if len(faces) and (faces.min() < 0 or faces.max() >= len(vertices)):
        raise ValueError("mesh faces index vertices that do not exist")
    return vertices, faces


@dataclass
class CanonicalMesh:
    """A triangle mesh in ISMM's canonical frame (unitless, see the module docstring): ``vertices_canonical`` (V, 3)
    float64, ``faces`` (F, 3) int64. :meth:`Picct.canonical_to_world` maps its vertices to world LPS mm."""

    vertices_canonical: np.ndarray
    faces: np.ndarray

    def __post_init__(self) -> None:
        self.vertices_canonical, self.faces = triangle_arrays(self.vertices_canonical, self.faces)


# ----------------------------------------------------------------------------------------------------------
# NISF's coordinates
# ----------------------------------------------------------------------------------------------------------


def image_center_world_mm(shape: tuple[int, ...], affine_lps: np.ndarray) -> np.ndarray:
    """World LPS mm (3,) of the centre of the image's box (the mean of its corner voxels' centres)."""
    return index_to_world(((np.array(shape[-3:]) - 1) / 2.0)[None], affine_lps)[0]


def nisf_coordinates(index_ijk: np.ndarray, affine_lps: np.ndarray, center_world_mm: np.ndarray,
                          config: NisfConfig, time: float | np.ndarray | None = None) -> np.ndarray:
    """NISF's network coordinates (N, 3 or 4) float32 of voxel indices (N, 3) (any real values):
    ``(world - centre) / scale_mm``, then the time in [0, 1) when ``config.canonical.with_time`` (``time``: one
    value or (N,))."""
    world = index_to_world(np.asarray(index_ijk, dtype=np.float64), affine_lps)
    return nisf_coordinates_of_world(world, center_world_mm, config, time)


def nisf_coordinates_of_world(points_world_mm: np.ndarray, center_world_mm: np.ndarray, config: NisfConfig,
                              time: float | np.ndarray | None = None) -> np.ndarray:
    """NISF's network coordinates (N, 3 or 4) float32 of world LPS mm points (N, 3); see
    :func:`nisf_coordinates`."""
    spatial = (np.asarray(points_world_mm, dtype=np.float64) - center_world_mm) / float(config.canonical.scale_mm)
    if not config.canonical.with_time:
        return spatial.astype(np.float32)
    times = np.broadcast_to(np.asarray(0.0 if time is None else time, dtype=np.float64), (len(spatial),))
    return np.concatenate([spatial, times[:, None] % 1.0], axis=1).astype(np.float32)
