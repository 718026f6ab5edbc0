"""An image and the files that go with it (DESIGN §3): a labelmap on the image's grid holding declared values only,
a ground-truth mesh inside the image.

Two grids are the same when their sizes are equal and their origins, spacings and directions agree within
:data:`GRID_ORIGIN_TOLERANCE_MM`, :data:`GRID_SPACING_TOLERANCE_MM` and :data:`GRID_DIRECTION_TOLERANCE_RAD`: the
float32 rounding of NIfTI headers (about 1e-5 mm) passes, a shifted, cropped or resampled labelmap does not.
"""

from __future__ import annotations

import os
from collections.abc import Collection

import numpy as np

from implicitseg.errors import InputError
from implicitseg.geometry.frames import geometry_from_affine, ras_to_lps, world_to_index
from implicitseg.io.images import Volume, VolumeSeries, resample_volume
from implicitseg.io.meshes import Mesh

GRID_ORIGIN_TOLERANCE_MM = 0.01
"""Largest distance (mm) between two grids' first voxel centres for them to be the same grid."""
GRID_SPACING_TOLERANCE_MM = 1e-4
"""Largest difference (mm) of two grids' voxel spacing along any axis (over 500 voxels: 0.05 mm)."""
GRID_DIRECTION_TOLERANCE_RAD = 1e-4
"""Largest angle (radians) between two grids' directions of the same axis (over 300 mm: 0.03 mm)."""
MIN_MESH_INSIDE_FRACTION = 0.95
"""A ground-truth mesh with a smaller share of its vertices inside its image's box is refused."""


def _numbers(values: np.ndarray) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"


def grid_differences(image: Volume | VolumeSeries, label: Volume | VolumeSeries) -> list[str]:
    """What differs between the grid of ``label`` and that of ``image`` (and their frame counts, for 3D+t) beyond
    the tolerances, e.g. ``"origin 5.00 mm apart: image (0, 0, 0), label (5, 0, 0) mm"``; empty when they are the
    same grid."""
    differences = []
    frames_image, frames_label = (len(v.frames) if isinstance(v, VolumeSeries) else 1 for v in (image, label))
    if frames_image != frames_label:
        differences.append(f"frames: image {frames_image}, label {frames_label}")
    image, label = (v.frame(0) if isinstance(v, VolumeSeries) else v for v in (image, label))
    if image.shape != label.shape:
        differences.append(f"size: image {'×'.join(map(str, image.shape))}, label {'×'.join(map(str, label.shape))}")
    origin_image, spacing_image, direction_image = geometry_from_affine(image.affine_lps)
    origin_label, spacing_label, direction_label = geometry_from_affine(label.affine_lps)
    distance_mm = float(np.linalg.norm(origin_image - origin_label))
    if distance_mm > GRID_ORIGIN_TOLERANCE_MM:
        differences.append(f"origin {distance_mm:.2f} mm apart: image {_numbers(origin_image)}, "
                           f"label {_numbers(origin_label)} mm")
    if np.abs(spacing_image - spacing_label).max() > GRID_SPACING_TOLERANCE_MM:
        differences.append(f"spacing: image {_numbers(spacing_image)}, label {_numbers(spacing_label)} mm")
    cosines = np.clip(np.sum(direction_image * direction_label, axis=0), -1.0, 1.0)  # per axis: columns
    angle_rad = float(np.arccos(cosines).max())
    if angle_rad > GRID_DIRECTION_TOLERANCE_RAD:
        differences.append(f"direction {np.degrees(angle_rad):.2f}° apart")
    return differences


def check_label_grid(label: Volume | VolumeSeries, label_path: str | os.PathLike, image: Volume | VolumeSeries,
                     image_path: str | os.PathLike) -> None:
    """Raise :class:`InputError` naming both files and what differs when ``label`` is not on ``image``'s grid."""
    differences = grid_differences(image, label)
    if differences:
        raise InputError(f"{label_path}: labelmap not on the grid of its image {image_path}: {'; '.join(differences)} "
                         f"(prepare --resample-labels resamples it onto the image's grid)")


def label_onto_grid(label: Volume, image: Volume) -> Volume:
    """``label`` resampled onto ``image``'s grid, nearest neighbour in world space (int16; 0 outside ``label``)."""
    resampled = resample_volume(label, image.shape, image.affine_lps, interpolation="nearest", default_value=0.0)
    return Volume(resampled.array.astype(np.int16), image.affine_lps)


def label_series_onto_grid(label: VolumeSeries, image: VolumeSeries) -> VolumeSeries:
    """Each frame of ``label`` resampled onto ``image``'s grid (:func:`label_onto_grid`); the frame counts must
    agree (a caller's check)."""
    if len(label.frames) != len(image.frames):
        raise ValueError(f"{len(label.frames)} label frames vs {len(image.frames)} image frames")
    frames = [label_onto_grid(label.frame(t), image.frame(0)).array for t in range(len(label.frames))]
    return VolumeSeries(np.stack(frames), image.affine_lps, image.time_step)


def undeclared_label_values(array: np.ndarray, declared: Collection[int]) -> list[int]:
    """The values of ``array`` that are not in ``declared``, sorted (one comparison pass per declared value)."""
    undeclared = np.ones(array.shape, dtype=bool)
    for value in declared:
        undeclared &= array != value
    return [int(v) for v in np.unique(array[undeclared])] if undeclared.any() else []


def check_label_values(label: np.ndarray, label_path: str | os.PathLike, declared: Collection[int]) -> None:
    """Raise :class:`InputError` naming the file and the values found when ``label`` holds values not in
    ``declared`` (``dataset.json``'s ``labels``)."""
    undeclared = undeclared_label_values(label, declared)
    if undeclared:
        raise InputError(f"{label_path}: label value(s) {', '.join(map(str, undeclared))} are not declared in "
                         f"dataset.json's labels ({', '.join(map(str, sorted(declared)))})")


def inside_fraction(points_world_mm: np.ndarray, image: Volume) -> float:
    """Share of the points (N, 3) world LPS mm that lie inside ``image``'s box (between the outer faces of its first
    and last voxels)."""
    index = world_to_index(np.asarray(points_world_mm, dtype=np.float64), image.affine_lps)
    inside = np.all((index >= -0.5) & (index <= np.array(image.shape) - 0.5), axis=1)
    return float(inside.mean()) if len(inside) else 0.0


def check_mesh_in_image(mesh: Mesh, mesh_path: str | os.PathLike, image: Volume,
                        image_path: str | os.PathLike) -> None:
    """Raise :class:`InputError` when less than :data:`MIN_MESH_INSIDE_FRACTION` of the mesh's vertices lie inside
    its image, with a hint when the other convention (x and y flipped: LPS ↔ RAS) would put it there."""
    fraction = inside_fraction(mesh.vertices_world_mm, image)
    if fraction >= MIN_MESH_INSIDE_FRACTION:
        return
    flipped = inside_fraction(ras_to_lps(mesh.vertices_world_mm), image)
    hint = (f"; in the other convention (LPS ↔ RAS) {flipped:.0%} would: set dataset.json's \"mesh_space\" (or a VTK "
            f"header's SPACE=) to the file's convention" if flipped >= MIN_MESH_INSIDE_FRACTION
            else "; does the mesh belong to this image?")
    raise InputError(f"{mesh_path}: only {fraction:.0%} of the mesh's vertices lie inside its image {image_path}{hint}")
