"""Isosurfaces of images (labelmaps, probability maps) as meshes in world LPS mm (skimage marching cubes).

Marching cubes runs in voxel-index space and the vertices are mapped through the image's index→world
affine, so oblique, anisotropic and flipped grids all land in the right place. The object is where the
values exceed ``level``; faces are wound so normals (right-hand rule) point out of it, also when the
affine flips handedness (det < 0). The grid is padded by one voxel of background, so an object touching
the border is closed there (half a voxel outside the last voxel centre).
"""

from __future__ import annotations

import numpy as np
from skimage.measure import marching_cubes

from implicitseg.errors import InputError
from implicitseg.geometry.frames import Roi, index_to_world
from implicitseg.io.images import Volume
from implicitseg.io.meshes import Mesh


def probability_to_mesh(values_ijk: np.ndarray, affine_lps: np.ndarray, *, level: float = 0.5,
                        what: str = "image") -> Mesh:
    """Isosurface at ``level`` of ``values_ijk`` (I, J, K), indexed like a :class:`Volume` array, whose 4×4
    index→world affine is ``affine_lps``. Returns a :class:`Mesh` in world LPS mm with outward normals.

    Raises :class:`InputError` (naming ``what``) when no voxel exceeds ``level`` or the values hold NaN.
    """
    values = np.asarray(values_ijk, dtype=np.float32)
    affine_lps = np.asarray(affine_lps, dtype=np.float64)
    if values.ndim != 3:
        raise ValueError(f"expected a 3D array, got shape {values.shape}")
    if affine_lps.shape != (4, 4) or abs(np.linalg.det(affine_lps[:3, :3])) < 1e-12:
        raise ValueError("affine_lps must be an invertible 4×4 index→world matrix")
    if not np.all(np.isfinite(values)):
        raise InputError(f"{what}: holds NaN or infinite values; cannot extract a surface")
    inside = values > level
    if not inside.any():
        raise InputError(f"{what}: no voxel above level {level}; there is no surface to extract")
    # Crop to the object's bounding box plus one voxel, then pad with background so borders close.
    nonzero = np.argwhere(inside)
    low = np.maximum(nonzero.min(axis=0) - 1, 0)
    high = np.minimum(nonzero.max(axis=0) + 2, values.shape)
    cropped = values[low[0]:high[0], low[1]:high[1], low[2]:high[2]]
    background = float(cropped.min()) if cropped.min() < level else level - 1.0
    padded = np.pad(cropped, 1, mode="constant", constant_values=background)
    vertices_padded, faces, _, _ = marching_cubes(padded, level=level, allow_degenerate=False)
    vertices_index = vertices_padded.astype(np.float64) - 1.0 + low
    # skimage winds faces so that the right-hand normal points towards higher values (into the object) in
    # index space; reverse them, unless the affine is a reflection, which reverses orientation itself.
    faces = faces.astype(np.int64)
    if np.linalg.det(affine_lps[:3, :3]) > 0:
        faces = faces[:, [0, 2, 1]]
    return Mesh(index_to_world(vertices_index, affine_lps), faces)


def labelmap_to_mesh(volume: Volume, *, label: int | None = None, level: float = 0.5) -> Mesh:
    """Surface of a labelmap in world LPS mm: marching cubes at ``level`` of the binary mask ``array == label``
    (``label=None``: every voxel > 0). Raises :class:`InputError` when that label is absent."""
    mask = volume.array > 0 if label is None else volume.array == label
    if not mask.any():
        name = "any foreground label" if label is None else f"label {label}"
        raise InputError(f"labelmap has no voxel with {name}")
    what = "labelmap" if label is None else f"labelmap label {label}"
    return probability_to_mesh(mask.astype(np.float32), volume.affine_lps, level=level, what=what)


def roi_probability_to_mesh(probability_zyx: np.ndarray, roi: Roi, *, level: float = 0.5) -> Mesh:
    """Isosurface of a ``(res, res, res)`` ROI map in ``(Z, Y, X)`` order (a network's output) in world LPS mm."""
    probability_zyx = np.asarray(probability_zyx)
    if probability_zyx.shape != (roi.res,) * 3:
        raise ValueError(f"expected a {(roi.res,) * 3} ROI array in (Z, Y, X) order, got {probability_zyx.shape}")
    return probability_to_mesh(probability_zyx.transpose(2, 1, 0), roi.index_affine_lps, level=level, what="ROI map")
