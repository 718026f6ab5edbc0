"""A multi-label abdominal phantom: an organ with a lesion inside it, in a CT-like volume (Implicit U-Net issue).

Per case: an organ (a rotated ellipsoid, semi-axes 18–38 mm, its surface bent by a smooth random field of a few
mm), one lesion (a ball of radius 4–10 mm lying wholly inside the organ, hypo- or hyper-dense by 25–60 HU), in
soft tissue with patches of fat; partial volume at every boundary, blur and noise; an oblique, sometimes
flipped, anisotropic grid (in-plane 0.8–1.0 mm, slices 1.5–2.5 mm). Labelmap: 0 background, 1 organ (outside the
lesion), 2 lesion. Deterministic given the generator's state.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from implicitseg.data.synthetic.common import LowFrequencyField, draw_image_direction, random_rotation
from implicitseg.geometry.frames import affine_from_geometry, index_to_world
from implicitseg.io.images import Volume

ORGAN_LABELS = {"0": "background", "1": "organ", "2": "lesion"}


@dataclass
class OrganCase:
    """One generated case: ``image`` (int16 HU) and ``labelmap`` (uint8, :data:`ORGAN_LABELS`) on one grid, the
    lesion's centre (3,) world LPS mm and radius (mm) and its contrast to the organ (HU)."""

    case_id: str
    image: Volume
    labelmap: Volume
    lesion_center_world_mm: np.ndarray
    lesion_radius_mm: float
    lesion_contrast_hu: float


def _organ_distance_mm(points_mm: np.ndarray, center_mm: np.ndarray, rotation: np.ndarray, semi_axes_mm: np.ndarray,
                       bend: LowFrequencyField, bend_mm: float) -> np.ndarray:
    """Approximate signed distance (mm, < 0 inside) to the bent ellipsoid."""
    local = (points_mm - center_mm) @ rotation
    radius_scale = np.linalg.norm(local / semi_axes_mm, axis=1)
    return (radius_scale - 1.0) * float(semi_axes_mm.min()) + bend_mm * bend(points_mm)


def make_organ_case(rng: np.random.Generator, case_id: str = "organ_000") -> OrganCase:
    """Generate one organ + lesion case from ``rng``."""
    center_world = rng.uniform(-60.0, 60.0, size=3)
    semi_axes = np.sort(rng.uniform(18.0, 38.0, size=3))[::-1]
    rotation = random_rotation(rng)
    bend = LowFrequencyField.draw(rng, 4, (40.0, 90.0))
    bend_mm = rng.uniform(1.5, 4.0)

    direction = draw_image_direction(rng)
    in_plane = rng.uniform(0.8, 1.0)
    spacing = np.array([in_plane, in_plane, rng.uniform(1.5, 2.5)])
    half_extent = float(semi_axes.max()) + bend_mm + rng.uniform(8.0, 14.0)
    shape = tuple(int(n) for n in np.ceil(2.0 * half_extent / spacing).astype(int) + 1)
    origin = center_world + direction @ rng.uniform(-3.0, 3.0, size=3) - direction @ (spacing * (np.array(shape) - 1) / 2)
    affine = affine_from_geometry(origin, spacing, direction)
    index = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1).reshape(-1, 3)
    points_world = index_to_world(index, affine)
    organ = _organ_distance_mm(points_world, center_world, rotation, semi_axes, bend, bend_mm)

    # The lesion: a ball wholly inside the organ (at least 2 mm of organ around it).
    lesion_radius = rng.uniform(4.0, 10.0)
    inside = np.flatnonzero(organ < -(lesion_radius + 2.0))
    if len(inside) == 0:
        lesion_radius = 4.0
        inside = np.flatnonzero(organ < -(lesion_radius + 2.0))
    lesion_center = points_world[rng.choice(inside)]
    lesion = np.linalg.norm(points_world - lesion_center, axis=1) - lesion_radius

    voxel_mm = float(np.prod(spacing) ** (1.0 / 3.0))
    in_organ = np.clip(0.5 - organ / voxel_mm, 0.0, 1.0)
    in_lesion = np.clip(0.5 - lesion / voxel_mm, 0.0, 1.0)
    organ_hu = rng.uniform(90.0, 150.0) + 8.0 * LowFrequencyField.draw(rng, 3, (30.0, 60.0))(points_world)
    contrast = rng.choice([-1.0, 1.0]) * rng.uniform(25.0, 60.0)
    tissue = LowFrequencyField.draw(rng, 3, (25.0, 60.0))(points_world)
    fat = np.clip((tissue - 0.2) / 0.2, 0.0, 1.0)
    background_hu = rng.uniform(30.0, 55.0) * (1.0 - fat) + rng.uniform(-120.0, -80.0) * fat
    hu = background_hu * (1.0 - in_organ) + organ_hu * (in_organ - in_lesion) + (organ_hu + contrast) * in_lesion
    hu = ndimage.gaussian_filter(hu.reshape(shape), sigma=0.55 * float(spacing.min()) / spacing)
    hu += rng.normal(scale=rng.uniform(10.0, 25.0), size=shape)

    label = np.where(lesion < 0.0, 2, np.where(organ < 0.0, 1, 0)).astype(np.uint8).reshape(shape)
    image = Volume(np.clip(np.round(hu), -1024, 3071).astype(np.int16), affine)
    return OrganCase(case_id, image, Volume(label, affine), lesion_center, float(lesion_radius), float(contrast))
