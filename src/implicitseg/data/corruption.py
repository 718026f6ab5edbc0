"""Damage a labelmap the way CNNs do (ISMM issue, item 4), to test and benchmark shape-prior refinement.

Each corruption works in world mm on the labelmap's own grid (any spacing, any orientation) and returns a new
labelmap; :func:`corrupt_labelmap` applies several and records what it did.

- ``holes``: balls of background punched inside the object (radius a fraction of its size);
- ``blobs``: spurious balls of foreground near the object, not touching it;
- ``missing_part``: everything beyond a random plane through the object's outer part removed (a missed lobe);
- ``staircase``: the object at a coarse resolution along the image's slice axis (×``factor`` spacing), back on
  the original grid with nearest interpolation: the steps a coarse network output shows.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from implicitseg.errors import InputError
from implicitseg.geometry.frames import index_to_world
from implicitseg.io.images import Volume, grid_at_spacing, resample_volume

KINDS = ("holes", "blobs", "missing_part", "staircase")


@dataclass
class Corruption:
    """A corrupted labelmap and, per kind applied, its parameters (world LPS mm)."""

    labelmap: Volume
    applied: dict[str, dict] = field(default_factory=dict)


def _object_geometry(labelmap: Volume) -> tuple[np.ndarray, np.ndarray, float]:
    mask = labelmap.array > 0
    if not mask.any():
        raise InputError("cannot corrupt an empty labelmap")
    points = labelmap.voxel_centers_world_mm(mask)
    center = points.mean(axis=0)
    radius = float(np.percentile(np.linalg.norm(points - center, axis=1), 90))
    return points, center, radius


def _world_of_grid(labelmap: Volume) -> np.ndarray:
    index = np.indices(labelmap.shape).reshape(3, -1).T.astype(np.float64)
    return index_to_world(index, labelmap.affine_lps).reshape(*labelmap.shape, 3)


def punch_holes(labelmap: Volume, rng: np.random.Generator, *, n_holes: int = 3,
                radius_fraction: float = 0.3) -> tuple[Volume, dict]:
    """Background balls of ``radius_fraction`` × the object's size, centred at random voxels of its inner part
    (so the holes are inside, as a CNN's are)."""
    points, center, size = _object_geometry(labelmap)
    world = _world_of_grid(labelmap)
    array = labelmap.array.copy()
    radius = radius_fraction * size
    inner = points[np.linalg.norm(points - center, axis=1) < max(size - radius, 0.5 * size)]
    centers = inner[rng.choice(len(inner), min(n_holes, len(inner)), replace=False)]
    for center in centers:
        array[np.linalg.norm(world - center, axis=-1) < radius] = 0
    return Volume(array, labelmap.affine_lps), {"centers_mm": centers.tolist(), "radius_mm": radius}


def add_blobs(labelmap: Volume, rng: np.random.Generator, *, n_blobs: int = 2,
              radius_fraction: float = 0.15) -> tuple[Volume, dict]:
    """Foreground balls (the object's most common label) in random directions just outside the object."""
    _, center, size = _object_geometry(labelmap)
    world = _world_of_grid(labelmap)
    array = labelmap.array.copy()
    label = int(np.bincount(array[array > 0].ravel()).argmax())
    radius = radius_fraction * size
    centers = []
    for _ in range(n_blobs):
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        blob_center = center + direction * (size + 2.5 * radius)  # outside, clear of the object
        array[(np.linalg.norm(world - blob_center, axis=-1) < radius) & (array == 0)] = label
        centers.append(blob_center.tolist())
    return Volume(array, labelmap.affine_lps), {"centers_mm": centers, "radius_mm": radius}


def remove_part(labelmap: Volume, rng: np.random.Generator, *, depth_fraction: float = 0.5) -> tuple[Volume, dict]:
    """Everything beyond a plane of random normal, ``depth_fraction`` × the object's size from its centre."""
    _, center, size = _object_geometry(labelmap)
    world = _world_of_grid(labelmap)
    normal = rng.normal(size=3)
    normal /= np.linalg.norm(normal)
    offset = depth_fraction * size  # the plane cuts off the part beyond this distance from the centre
    array = labelmap.array.copy()
    array[((world - center) @ normal) > offset] = 0
    return Volume(array, labelmap.affine_lps), {"normal": normal.tolist(), "offset_mm": offset}


def staircase(labelmap: Volume, *, factor: float = 4.0) -> tuple[Volume, dict]:
    """The labelmap through a grid ``factor`` × coarser along its slice (largest-spacing) axis, nearest both ways."""
    spacing = labelmap.spacing.copy()
    slice_axis = int(np.argmax(spacing))
    coarse_spacing = spacing.copy()
    coarse_spacing[slice_axis] *= factor
    shape, affine = grid_at_spacing(labelmap, coarse_spacing)
    coarse = resample_volume(labelmap, shape, affine, interpolation="nearest")
    back = resample_volume(coarse, labelmap.shape, labelmap.affine_lps, interpolation="nearest")
    return Volume(np.round(back.array).astype(labelmap.array.dtype), labelmap.affine_lps), \
        {"axis": slice_axis, "coarse_spacing_mm": coarse_spacing.tolist()}


def corrupt_labelmap(labelmap: Volume, rng: np.random.Generator, kinds: tuple[str, ...] = KINDS) -> Corruption:
    """Apply ``kinds`` in the order of :data:`KINDS` (each once) to a copy of ``labelmap``."""
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown:
        raise InputError(f"unknown corruption(s) {unknown}; known: {', '.join(KINDS)}")
    result = Corruption(Volume(labelmap.array.copy(), labelmap.affine_lps))
    for kind in KINDS:
        if kind not in kinds:
            continue
        if kind == "holes":
            result.labelmap, result.applied[kind] = punch_holes(result.labelmap, rng)
        elif kind == "blobs":
            result.labelmap, result.applied[kind] = add_blobs(result.labelmap, rng)
        elif kind == "missing_part":
            result.labelmap, result.applied[kind] = remove_part(result.labelmap, rng)
        else:
            result.labelmap, result.applied[kind] = staircase(result.labelmap)
    return result
