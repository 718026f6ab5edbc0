"""Training samples for distance-field methods: surface points, shape diameter, near-surface and uniform sets.

Sides of a face (used everywhere in this module and in ``samples.npz``):

- **in** = the half-space *behind* the face, opposite its normal (``-normal``). For a closed surface with
  outward normals (what :func:`implicitseg.meshing.isosurface.labelmap_to_mesh` produces) this is the inside.
- **out** = the half-space the normal points into (``+normal``).

A side's **shape diameter** is measured by rays cast *into that side*, so it is the free room on that side:
``in`` = the local thickness of the object behind the face, ``out`` = the gap in front of it (to the next
surface). A near-surface sample pushed into a side is offset by ``|N(0, sigma_fraction · SD_side)|``, i.e.
with the SD of the side it lands in, so samples never overshoot a thin wall or a narrow gap by much. (The
reference NUDF code does the same: it computes the SDF with normals as given and pushes those samples along
``-normal``, the direction its rays went, and the same again with flipped normals.)

Lengths are in the unit of the vertices (world mm here); the unit-frame conversion is done by the caller
through :class:`~implicitseg.geometry.frames.Roi`.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import point_cloud_utils as pcu
from scipy.spatial import cKDTree

from implicitseg.geometry.distances import mesh_arrays, unsigned_distance
from implicitseg.geometry.frames import Roi

if TYPE_CHECKING:
    from implicitseg.config import SurfaceSamplingConfig


class SampleSet(enum.IntEnum):
    """Value of ``sample_set`` in ``samples.npz``."""

    IN = 0
    """Near the surface, behind the face (``-normal`` side)."""
    OUT = 1
    """Near the surface, in front of the face (``+normal`` side)."""
    UNIFORM = 2
    """Uniform in the ROI cube."""


SD_MAX_FACES = 100_000
"""Above this many faces the shape diameter is ray-cast on a random subset of this many faces and copied to
the others from the nearest cast face with a similar normal (keeps a 500k-face mesh at ~2 s per side)."""

_RAY_CHUNK_FACES = 32_768


# --------------------------------------------------------------------------------------------- mesh basics


def face_geometry(vertices_world_mm: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-face ``centroids`` (F, 3) mm, unit ``normals`` (F, 3) (right-hand rule) and ``areas`` (F,) mm²."""
    vertices, faces = mesh_arrays(vertices_world_mm, faces)
    corners = vertices[faces]
    cross = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    doubled_area = np.linalg.norm(cross, axis=1)
    normals = cross / np.maximum(doubled_area, 1e-300)[:, None]
    return corners.mean(axis=1), normals, 0.5 * doubled_area


def sample_on_faces(vertices_world_mm: np.ndarray, faces: np.ndarray, n_points: int, rng: np.random.Generator,
                    *, face_weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Random points on the surface: a face with probability ∝ ``face_weights`` (default: area), then uniform on it.

    Returns ``points_world_mm`` (n_points, 3) float64 and ``face_index`` (n_points,) int64.
    """
    vertices, faces = mesh_arrays(vertices_world_mm, faces)
    if face_weights is None:
        face_weights = face_geometry(vertices, faces)[2]
    face_weights = np.asarray(face_weights, dtype=np.float64)
    if face_weights.shape != (len(faces),) or not np.all(np.isfinite(face_weights)) or np.any(face_weights < 0):
        raise ValueError("face_weights must be (F,) finite and non-negative")
    total = face_weights.sum()
    if not total > 0:
        raise ValueError("the mesh has zero total area (or all face weights are 0)")
    cumulative = np.cumsum(face_weights / total)
    face_index = np.minimum(np.searchsorted(cumulative, rng.random(n_points), side="right"), len(faces) - 1)
    u, v = rng.random(n_points), rng.random(n_points)
    flip = u + v > 1.0  # reflect the far half of the unit square back into the triangle
    u[flip], v[flip] = 1.0 - u[flip], 1.0 - v[flip]
    corners = vertices[faces[face_index]]
    points = corners[:, 0] + u[:, None] * (corners[:, 1] - corners[:, 0]) + v[:, None] * (corners[:, 2] - corners[:, 0])
    return points, face_index.astype(np.int64)


def surface_samples(vertices: np.ndarray, faces: np.ndarray, n_points: int,
                    rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(n, 3) points area-uniform on the triangle mesh (V, 3), (F, 3) and their faces' outward unit normals (n, 3),
    in the mesh's frame."""
    points, sampled_faces = sample_on_faces(vertices, faces, n_points, rng)
    return points, face_geometry(vertices, faces)[1][sampled_faces]


def uniform_cube_samples_unit(n_points: int, rng: np.random.Generator) -> np.ndarray:
    """(n_points, 3) float64 points uniform in the unit cube ``[-1, 1]³`` (unit frame, x, y, z)."""
    return rng.uniform(-1.0, 1.0, size=(n_points, 3))


# ---------------------------------------------------------------------------------------- shape diameter


def cone_directions(n_rays: int, cone_degrees: float) -> np.ndarray:
    """(n_rays, 3) unit directions spread evenly (by solid angle) over a cone about +z.

    ``cone_degrees`` is the full aperture (45° → rays up to 22.5° off the axis). A sunflower spiral: ray
    ``k`` has ``cos θ_k = 1 - (1 - cos α)(k + ½)/n`` and azimuth ``k × golden angle``, so the directions are a
    deterministic, equal-area cover of the spherical cap and the plain mean over them is the cap average.
    """
    if n_rays < 1:
        raise ValueError(f"the shape diameter needs at least 1 ray, got {n_rays}")
    if not 0.0 <= cone_degrees < 180.0:
        raise ValueError(f"cone aperture must be in [0, 180) degrees, got {cone_degrees}")
    half_angle = np.radians(cone_degrees) / 2.0
    k = np.arange(n_rays) + 0.5
    cos_theta = 1.0 - (1.0 - np.cos(half_angle)) * k / n_rays
    sin_theta = np.sqrt(np.maximum(0.0, 1.0 - cos_theta**2))
    azimuth = k * np.pi * (3.0 - np.sqrt(5.0))
    return np.stack([sin_theta * np.cos(azimuth), sin_theta * np.sin(azimuth), cos_theta], axis=1)


def _frames_about(axes: np.ndarray) -> np.ndarray:
    """(F, 3, 3) rotations whose third column is ``axes`` (F, 3) unit vectors (an orthonormal basis per face)."""
    helper = np.where(np.abs(axes[:, [0]]) < 0.9, np.array([[1.0, 0.0, 0.0]]), np.array([[0.0, 1.0, 0.0]]))
    first = np.cross(axes, helper)
    first /= np.linalg.norm(first, axis=1, keepdims=True)
    second = np.cross(axes, first)
    return np.stack([first, second, axes], axis=2)


def robust_mean(distances: np.ndarray) -> np.ndarray:
    """Row-wise mean of (F, R) ray distances keeping only values within the row's median ± one std → (F,)."""
    median = np.median(distances, axis=1, keepdims=True)
    spread = distances.std(axis=1, keepdims=True)
    keep = np.abs(distances - median) <= spread + 1e-12 * np.maximum(1.0, np.abs(median))
    return (distances * keep).sum(axis=1) / np.maximum(keep.sum(axis=1), 1)


def _cast_shape_diameter(vertices: np.ndarray, faces: np.ndarray, origins: np.ndarray, axes: np.ndarray,
                         directions_local: np.ndarray, max_mm: float, offset_mm: float) -> np.ndarray:
    """Robust mean first-hit distance of a cone of rays about each ``axes`` row from ``origins`` → (len(axes),)."""
    result = np.empty(len(axes))
    n_rays = len(directions_local)
    for start in range(0, len(axes), _RAY_CHUNK_FACES):
        stop = min(start + _RAY_CHUNK_FACES, len(axes))
        rotation = _frames_about(axes[start:stop])
        directions = np.einsum("fij,rj->fri", rotation, directions_local).reshape(-1, 3)
        ray_origins = np.repeat(origins[start:stop] + offset_mm * axes[start:stop], n_rays, axis=0)
        _, _, t = pcu.ray_mesh_intersection(vertices, faces, np.ascontiguousarray(ray_origins),
                                            np.ascontiguousarray(directions), ray_far=float(max_mm))
        t = np.asarray(t, dtype=np.float64).reshape(stop - start, n_rays)
        # Back to lengths from the face itself (the origin sat offset_mm off its plane); a miss counts as max_mm.
        t = np.where(np.isfinite(t), t + offset_mm / directions_local[:, 2], max_mm)
        result[start:stop] = robust_mean(np.minimum(t, max_mm))
    return result


def shape_diameter_mm(vertices_world_mm: np.ndarray, faces: np.ndarray, *, side: SampleSet | str,
                      n_rays: int = 32, cone_degrees: float = 45.0, max_mm: float = 35.0,
                      max_faces: int | None = SD_MAX_FACES, rng: np.random.Generator | None = None) -> np.ndarray:
    """(F,) float64 shape diameter (mm) of every face on one ``side`` (``"in"``: behind the face, ``"out"``: in
    front of it; see the module docstring).

    A cone of ``n_rays`` rays (full aperture ``cone_degrees``) is cast from the face centroid, nudged off the
    face by a tiny offset, into that side; the first-hit distances, with misses and hits beyond ``max_mm``
    counted as ``max_mm``, are averaged robustly (:func:`robust_mean`). Meshes with more than ``max_faces``
    faces are cast on a random subset of faces (drawn with ``rng``) and the others copy the value of the
    nearest cast face whose normal points the same way.
    """
    vertices, faces = mesh_arrays(vertices_world_mm, faces)
    side_name = side.name.lower() if isinstance(side, SampleSet) else str(side).lower()
    if side_name not in ("in", "out"):
        raise ValueError(f"side must be 'in' or 'out', got {side!r}")
    if not max_mm > 0:
        raise ValueError(f"max_mm must be positive, got {max_mm}")
    # Rays are cast in single precision: centre the mesh on its bounding box so that world coordinates of
    # hundreds of mm do not swamp the tiny offset that keeps a ray from hitting its own face.
    vertices = vertices - 0.5 * (vertices.min(axis=0) + vertices.max(axis=0))
    centroids, normals, areas = face_geometry(vertices, faces)
    degenerate = areas <= 0.0  # no normal: given max_mm; they are never sampled (zero area)
    normals[degenerate] = (0.0, 0.0, 1.0)
    axes = -normals if side_name == "in" else normals
    directions_local = cone_directions(n_rays, cone_degrees)
    extent = float(np.linalg.norm(vertices.max(axis=0) - vertices.min(axis=0)))
    offset_mm = 1e-5 * max(extent, 1e-9)
    if max_faces is None or len(faces) <= max_faces:
        diameters = _cast_shape_diameter(vertices, faces, centroids, axes, directions_local, max_mm, offset_mm)
    else:
        rng = rng if rng is not None else np.random.default_rng(0)
        cast = np.sort(rng.choice(len(faces), size=max_faces, replace=False))
        cast_values = _cast_shape_diameter(vertices, faces, centroids[cast], axes[cast], directions_local, max_mm,
                                           offset_mm)
        diameters = _nearest_same_facing(centroids, normals, cast, cast_values)
    diameters[degenerate] = max_mm
    return diameters


def _nearest_same_facing(centroids: np.ndarray, normals: np.ndarray, cast: np.ndarray, cast_values: np.ndarray,
                         *, k: int = 8) -> np.ndarray:
    """Copy per-face values from the nearest of the ``cast`` faces whose normal agrees (dot > 0), else the nearest."""
    k = min(k, len(cast))
    _, neighbours = cKDTree(centroids[cast]).query(centroids, k=k)
    neighbours = neighbours.reshape(len(centroids), k)
    agrees = np.einsum("fd,fkd->fk", normals, normals[cast][neighbours]) > 0.0
    first = np.where(agrees.any(axis=1), agrees.argmax(axis=1), 0)
    values = cast_values[neighbours[np.arange(len(centroids)), first]]
    values[cast] = cast_values
    return values


@dataclass
class ShapeDiameters:
    """Per-face shape diameters (mm) on both sides: ``in_mm`` (F,) behind each face, ``out_mm`` (F,) in front."""

    in_mm: np.ndarray
    out_mm: np.ndarray

    def side(self, which: SampleSet) -> np.ndarray:
        """The (F,) array of ``which`` (``SampleSet.IN`` or ``SampleSet.OUT``)."""
        return self.in_mm if which == SampleSet.IN else self.out_mm


def shape_diameters_mm(vertices_world_mm: np.ndarray, faces: np.ndarray, config: SurfaceSamplingConfig,
                       rng: np.random.Generator | None = None, *,
                       max_faces: int | None = SD_MAX_FACES) -> ShapeDiameters:
    """Both sides' shape diameters (mm) with the ray settings of ``config`` (``sd_rays``, ``sd_cone_degrees``,
    ``sd_max_mm``)."""
    settings = dict(n_rays=config.sd_rays, cone_degrees=config.sd_cone_degrees, max_mm=config.sd_max_mm,
                    max_faces=max_faces, rng=rng)
    return ShapeDiameters(
        in_mm=shape_diameter_mm(vertices_world_mm, faces, side=SampleSet.IN, **settings),
        out_mm=shape_diameter_mm(vertices_world_mm, faces, side=SampleSet.OUT, **settings),
    )


# ------------------------------------------------------------------------------------------- sample sets


def near_surface_samples(vertices_world_mm: np.ndarray, faces: np.ndarray, diameters: ShapeDiameters,
                         n_points: int, rng: np.random.Generator, *, threshold_mm: float = 3.5,
                         density_factor: float = 500.0, sigma_fraction: float = 0.25) -> tuple[np.ndarray, np.ndarray]:
    """Points pushed off the surface into each side, ``n_points // 2`` ``in`` and the rest ``out``.

    Per side, faces are drawn with probability ∝ area × density (density = ``density_factor`` where that
    side's SD < ``threshold_mm``, else 1), a point uniform on the face is moved into the side along the face
    normal by ``|N(0, sigma_fraction × SD_side)|``. Returns ``points_world_mm`` (n_points, 3) float64 and
    ``sample_set`` (n_points,) uint8 (:class:`SampleSet` IN then OUT).
    """
    vertices, faces = mesh_arrays(vertices_world_mm, faces)
    _, normals, areas = face_geometry(vertices, faces)
    counts = {SampleSet.IN: n_points // 2, SampleSet.OUT: n_points - n_points // 2}
    points_per_side, labels = [], []
    for which, count in counts.items():
        diameter = diameters.side(which)
        if diameter.shape != (len(faces),):
            raise ValueError(f"shape diameters must be (F,) = ({len(faces)},), got {diameter.shape}")
        density = np.where(diameter < threshold_mm, density_factor, 1.0)
        on_surface, face_index = sample_on_faces(vertices, faces, count, rng, face_weights=areas * density)
        direction = (-normals if which == SampleSet.IN else normals)[face_index]
        offset = np.abs(rng.normal(0.0, 1.0, size=count)) * sigma_fraction * diameter[face_index]
        points_per_side.append(on_surface + offset[:, None] * direction)
        labels.append(np.full(count, int(which), dtype=np.uint8))
    return np.concatenate(points_per_side), np.concatenate(labels)


@dataclass
class TrainingSamples:
    """A case's samples in the unit frame of its ROI.

    ``points_unit`` (N, 3) float32 (x, y, z), ``distances_unit`` (N,) float32 exact unsigned distance to the
    ground-truth surface in unit lengths, ``sample_set`` (N,) uint8 (:class:`SampleSet`); ``timings_s`` the
    seconds spent per stage; ``diameters`` the per-face shape diameters (mm) used.
    """

    points_unit: np.ndarray
    distances_unit: np.ndarray
    sample_set: np.ndarray
    diameters: ShapeDiameters
    timings_s: dict[str, float] = field(default_factory=dict)


def training_samples(vertices_world_mm: np.ndarray, faces: np.ndarray, roi: Roi, config: SurfaceSamplingConfig,
                     rng: np.random.Generator, *, max_faces: int | None = SD_MAX_FACES) -> TrainingSamples:
    """NUDF training samples for a surface (world LPS mm) and its ROI: ``config.n_near_surface`` near-surface
    points (half per side, see :func:`near_surface_samples`) then ``config.n_uniform`` uniform in the cube,
    each with its exact unsigned distance to the surface, all in unit coordinates / unit lengths."""
    vertices, faces = mesh_arrays(vertices_world_mm, faces)
    timings: dict[str, float] = {}
    start = time.perf_counter()
    diameters = shape_diameters_mm(vertices, faces, config, rng, max_faces=max_faces)
    timings["shape_diameter_s"] = time.perf_counter() - start

    start = time.perf_counter()
    near_world_mm, near_set = near_surface_samples(
        vertices, faces, diameters, config.n_near_surface, rng, threshold_mm=config.sd_threshold_mm,
        density_factor=config.sd_density_factor, sigma_fraction=config.sd_sigma_fraction)
    uniform_world_mm = roi.unit_to_world(uniform_cube_samples_unit(config.n_uniform, rng))
    points_world_mm = np.concatenate([near_world_mm, uniform_world_mm])
    sample_set = np.concatenate([near_set, np.full(config.n_uniform, int(SampleSet.UNIFORM), dtype=np.uint8)])
    timings["sampling_s"] = time.perf_counter() - start

    start = time.perf_counter()
    distances_mm = unsigned_distance(points_world_mm, vertices, faces)
    timings["distance_s"] = time.perf_counter() - start
    return TrainingSamples(
        points_unit=roi.world_to_unit(points_world_mm).astype(np.float32),
        distances_unit=np.asarray(roi.mm_to_unit(distances_mm), dtype=np.float32),
        sample_set=sample_set,
        diameters=diameters,
        timings_s=timings,
    )
