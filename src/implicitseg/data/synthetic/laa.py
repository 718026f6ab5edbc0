"""The left atrial appendage (LAA) phantom: CT-like cases with known ground truth.

A phantom is an implicit shape built in its own **phantom frame** (mm, the ostium centre at the origin, the
appendage leaving along +z): a bumpy ellipsoidal left atrium with a pulmonary vein, and a curved appendage
(a tube of varying radius along a Bézier centreline) with 1–3 lobes whose tips nearly touch each other or
the appendage body (gaps of 1–3 mm). Its field ``F`` is negative inside the blood pool and roughly a signed
distance in mm. A random rigid pose puts the phantom in world LPS mm; the image grid (oblique direction,
possibly a flipped axis, anisotropic spacing) is then laid around the appendage. Image, labelmap and mesh
are all evaluated from the same field, so they agree by construction:

- image: HU values from the field (blood, a thin myocardial wall, soft tissue, lung far from the heart),
  anti-aliased over one voxel, mildly blurred, with Gaussian noise;
- labelmap: voxel centres inside the appendage lumen on the appendage side of the ostium plane (closed at
  the ostium);
- mesh: the appendage wall, the zero level set of ``F`` on a fine grid, cut open at the ostium plane,
  normals pointing out of the lumen. Nothing in the image marks the ostium.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import scipy.ndimage as ndimage
import trimesh
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree
from skimage.measure import marching_cubes

from implicitseg.data.synthetic.common import (LowFrequencyField, axis_angle_rotation, draw_image_direction,
                                               random_rotation, unit_perpendicular)
from implicitseg.geometry.frames import affine_from_geometry, index_to_world
from implicitseg.io.images import Volume
from implicitseg.io.meshes import Mesh

LAA_LABELS = {"0": "background", "1": "LAA"}

_FAR_MM = 1.0e3
"""Field value standing in for "far from the appendage" outside the box where it is evaluated."""


# ----------------------------------------------------------------------------------------------------------
# Implicit primitives (all lengths in mm; points (N, 3) float64)
# ----------------------------------------------------------------------------------------------------------


def _smooth_min(a: np.ndarray, b: np.ndarray, k: np.ndarray | float) -> np.ndarray:
    """Polynomial smooth minimum of two fields; equals ``min(a, b)`` where ``|a - b| >= k`` (k ≥ 0, mm)."""
    k = np.maximum(k, 1e-9)
    h = np.clip(0.5 + 0.5 * (b - a) / k, 0.0, 1.0)
    return b + (a - b) * h - k * h * (1.0 - h)


def _smoothstep(x: np.ndarray) -> np.ndarray:
    """0 for x ≤ 0, 1 for x ≥ 1, cubic in between."""
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def _cone_sdf(points_mm: np.ndarray, start_mm: np.ndarray, end_mm: np.ndarray, radius_start_mm: float,
              radius_end_mm: float) -> np.ndarray:
    """(N,) approximate signed distance to a capsule whose radius varies linearly from start to end."""
    axis = end_mm - start_mm
    t = np.clip((points_mm - start_mm) @ axis / max(float(axis @ axis), 1e-12), 0.0, 1.0)
    closest = start_mm + t[:, None] * axis
    return np.linalg.norm(points_mm - closest, axis=1) - (radius_start_mm + t * (radius_end_mm - radius_start_mm))


def _polyline_tube_sdf(points_mm: np.ndarray, centre_mm: np.ndarray, radius_mm: np.ndarray,
                       tree: cKDTree | None = None) -> np.ndarray:
    """(N,) approximate signed distance to a tube swept along a dense polyline ``centre_mm`` (K, 3) with
    radii ``radius_mm`` (K,): the nearest polyline vertex is found with a KD-tree and the two segments
    beside it are tested (exact when the polyline is dense compared with its curvature)."""
    if len(points_mm) == 0:
        return np.zeros(0)
    if tree is None and len(points_mm) * len(centre_mm) <= 100_000:  # few points: test every segment
        start, axis = centre_mm[:-1], np.diff(centre_mm, axis=0)
        relative = points_mm[:, None, :] - start[None]
        t = np.clip(np.einsum("nkj,kj->nk", relative, axis) / np.maximum(np.einsum("kj,kj->k", axis, axis), 1e-12), 0.0, 1.0)
        distance = np.linalg.norm(relative - t[..., None] * axis[None], axis=2)
        return np.min(distance - (radius_mm[:-1] + t * np.diff(radius_mm)), axis=1)
    tree = tree if tree is not None else cKDTree(centre_mm)
    _, nearest = tree.query(points_mm, k=1)
    n_segments = len(centre_mm) - 1
    best = np.full(len(points_mm), np.inf)
    for offset in (-1, 0):
        first = np.clip(nearest + offset, 0, n_segments - 1)
        start, end = centre_mm[first], centre_mm[first + 1]
        axis = end - start
        t = np.clip(np.einsum("ij,ij->i", points_mm - start, axis) / np.maximum(np.einsum("ij,ij->i", axis, axis), 1e-12), 0.0, 1.0)
        distance = np.linalg.norm(points_mm - start - t[:, None] * axis, axis=1)
        radius = radius_mm[first] + t * (radius_mm[first + 1] - radius_mm[first])
        best = np.minimum(best, distance - radius)
    return best


def _atrium_body_sdf(points_mm: np.ndarray, center_mm: np.ndarray, axes: np.ndarray, semi_axes_mm: np.ndarray,
                     bump_directions: np.ndarray, bump_amplitudes_mm: np.ndarray, bump_phases: np.ndarray) -> np.ndarray:
    """(N,) field of a bumpy ellipsoid (mm, negative inside): an ellipsoid distance estimate (exact for a
    sphere) minus low-frequency bumps (≤ 2.5 mm) that depend on the direction from the centre."""
    local = (points_mm - center_mm) @ axes
    scaled = np.linalg.norm(local / semi_axes_mm, axis=1)
    scaled2 = np.linalg.norm(local / semi_axes_mm**2, axis=1)
    ratio = np.where(scaled2 > 1e-12, scaled / np.maximum(scaled2, 1e-12), semi_axes_mm.min())
    value = (scaled - 1.0) * ratio
    # The bumps fade out beyond 6-10 mm from the surface, where only a rough distance is needed.
    band = np.abs(value) < 10.0
    near = local[band]
    directions = near / np.maximum(np.linalg.norm(near, axis=1, keepdims=True), 1e-6)
    bumps = np.cos(directions @ bump_directions.T + bump_phases) @ bump_amplitudes_mm
    value[band] -= bumps * _smoothstep((10.0 - np.abs(value[band])) / 4.0)
    return value


@dataclass(frozen=True)
class _Lobe:
    """A bulge of the appendage: a capsule from ``attach_mm`` (on the centreline) to a round tip."""

    attach_mm: np.ndarray
    tip_mm: np.ndarray
    radius_attach_mm: float
    radius_tip_mm: float
    blend_sigma_mm: float

    def sdf(self, points_mm: np.ndarray) -> np.ndarray:
        return _cone_sdf(points_mm, self.attach_mm, self.tip_mm, self.radius_attach_mm, self.radius_tip_mm)

    def axis_samples(self, n: int = 6) -> tuple[np.ndarray, np.ndarray]:
        """Points (n, 3) along the outer part (the tip) of the lobe axis and the lobe radius (n,) there."""
        fractions = np.linspace(0.75, 1.0, n)
        points = self.attach_mm + fractions[:, None] * (self.tip_mm - self.attach_mm)
        return points, self.radius_attach_mm + fractions * (self.radius_tip_mm - self.radius_attach_mm)


# ----------------------------------------------------------------------------------------------------------
# The LAA phantom, in its own frame
# ----------------------------------------------------------------------------------------------------------


@dataclass
class LaaPhantom:
    """An implicit left atrium + appendage in the phantom frame (mm). The ostium plane passes through the
    origin with normal +z; ``plane_distance > 0`` is the appendage side."""

    atrium_center_mm: np.ndarray
    atrium_axes: np.ndarray  # (3, 3), columns = ellipsoid axes
    atrium_semi_axes_mm: np.ndarray  # (3,)
    bump_directions: np.ndarray  # (B, 3) angular frequencies of the bumps over unit directions
    bump_amplitudes_mm: np.ndarray  # (B,)
    bump_phases: np.ndarray  # (B,)
    vein_start_mm: np.ndarray
    vein_end_mm: np.ndarray
    vein_radius_mm: float
    junction_mm: np.ndarray  # where the appendage tube enters the atrium
    junction_blend_mm: float
    centreline_mm: np.ndarray  # (K, 3) appendage tube centreline, from inside the atrium to the tip
    centreline_s: np.ndarray  # (K,) arc-length fraction beyond the ostium (negative inside the atrium)
    radius_mm: np.ndarray  # (K,)
    lobes: list[_Lobe] = field(default_factory=list)
    gaps_mm: list[float] = field(default_factory=list)
    _tree: cKDTree | None = field(default=None, repr=False, compare=False)

    # -- fields ------------------------------------------------------------------------------------------

    def atrium_sdf(self, points_mm: np.ndarray) -> np.ndarray:
        """(N,) field of the atrium and its pulmonary vein (mm, negative inside)."""
        body = _atrium_body_sdf(points_mm, self.atrium_center_mm, self.atrium_axes, self.atrium_semi_axes_mm,
                                self.bump_directions, self.bump_amplitudes_mm, self.bump_phases)
        vein = _cone_sdf(points_mm, self.vein_start_mm, self.vein_end_mm, self.vein_radius_mm, 0.85 * self.vein_radius_mm)
        return _smooth_min(body, vein, 3.0)

    def appendage_sdf(self, points_mm: np.ndarray) -> np.ndarray:
        """(N,) field of the appendage tube and its lobes (mm, negative inside)."""
        if self._tree is None:
            self._tree = cKDTree(self.centreline_mm)
        value = _polyline_tube_sdf(points_mm, self.centreline_mm, self.radius_mm, self._tree)
        for lobe in self.lobes:
            blend = 1.5 * np.exp(-np.sum((points_mm - lobe.attach_mm) ** 2, axis=1) / (2.0 * lobe.blend_sigma_mm**2))
            value = _smooth_min(value, lobe.sdf(points_mm), blend)
        return value

    def combine(self, points_mm: np.ndarray, atrium: np.ndarray, appendage: np.ndarray) -> np.ndarray:
        """(N,) whole blood-pool field from the two part fields (blended only near the junction)."""
        blend = self.junction_blend_mm * np.exp(
            -np.sum((points_mm - self.junction_mm) ** 2, axis=1) / (2.0 * (self.radius_mm[0] + 2.0) ** 2))
        return _smooth_min(atrium, appendage, blend)

    @staticmethod
    def plane_distance(points_mm: np.ndarray) -> np.ndarray:
        """(N,) signed distance to the ostium plane, positive on the appendage side (mm)."""
        return points_mm[:, 2]

    def appendage_box_mm(self, margin_mm: float) -> tuple[np.ndarray, np.ndarray]:
        """Axis-aligned box (min (3,), max (3,)) holding the appendage beyond the junction, grown by margin."""
        keep = self.centreline_s >= -0.05
        lows = [self.centreline_mm[keep] - self.radius_mm[keep, None]]
        highs = [self.centreline_mm[keep] + self.radius_mm[keep, None]]
        for lobe in self.lobes:
            radius = max(lobe.radius_attach_mm, lobe.radius_tip_mm)
            lows.append(np.minimum(lobe.attach_mm, lobe.tip_mm)[None] - radius)
            highs.append(np.maximum(lobe.attach_mm, lobe.tip_mm)[None] + radius)
        return np.vstack(lows).min(axis=0) - margin_mm, np.vstack(highs).max(axis=0) + margin_mm

    def fields(self, points_mm: np.ndarray, *, box_margin_mm: float = 8.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(N,) fields ``(blood, atrium, appendage)`` in mm. The appendage is evaluated only inside its box
        grown by ``box_margin_mm`` (elsewhere it is ≥ that margin and reads as far away)."""
        atrium = self.atrium_sdf(points_mm)
        low, high = self.appendage_box_mm(box_margin_mm)
        inside = np.all((points_mm >= low) & (points_mm <= high), axis=1)
        appendage = np.full(len(points_mm), _FAR_MM)
        appendage[inside] = self.appendage_sdf(points_mm[inside])
        return self.combine(points_mm, atrium, appendage), atrium, appendage

    def appendage_lumen(self, points_mm: np.ndarray, blood: np.ndarray, atrium: np.ndarray,
                        appendage: np.ndarray) -> np.ndarray:
        """(N,) bool: inside the blood pool, beyond the ostium plane, and owned by the appendage."""
        return (blood < 0.0) & (self.plane_distance(points_mm) > 0.0) & (appendage <= atrium)

    def appendage_rough_distance_mm(self, points_mm: np.ndarray) -> np.ndarray:
        """(N,) a rough, cheap distance to the appendage (mm): to a few spheres along its centreline and at its
        lobe tips. Smooth and organic-looking; used only to keep lung away from the heart."""
        beyond = np.flatnonzero(self.centreline_s >= 0.0)
        picks = beyond[np.linspace(0, len(beyond) - 1, 5).round().astype(int)]
        centres = [self.centreline_mm[i] for i in picks] + [lobe.tip_mm for lobe in self.lobes]
        radii = [self.radius_mm[i] for i in picks] + [lobe.radius_tip_mm for lobe in self.lobes]
        distance = np.full(len(points_mm), np.inf)
        for centre, radius in zip(centres, radii):
            distance = np.minimum(distance, np.sqrt(np.sum((points_mm - centre) ** 2, axis=1)) - radius)
        return distance


def _bezier(control_mm: np.ndarray, t: np.ndarray) -> np.ndarray:
    """(T, 3) points of a cubic Bézier with control points (4, 3) at parameters t (T,)."""
    t = t[:, None]
    return ((1 - t) ** 3) * control_mm[0] + 3 * ((1 - t) ** 2) * t * control_mm[1] + 3 * (1 - t) * t**2 * control_mm[2] + t**3 * control_mm[3]


def _draw_atrium(rng: np.random.Generator) -> dict:
    """Shape parameters of the atrium, centred at the frame origin (placed later)."""
    n_bumps = 5
    directions = rng.normal(size=(n_bumps, 3))
    directions *= rng.uniform(1.5, 3.0, size=(n_bumps, 1)) / np.linalg.norm(directions, axis=1, keepdims=True)
    return dict(
        axes=random_rotation(rng),
        semi_axes_mm=rng.uniform(17.0, 23.0, size=3),
        bump_directions=directions,
        bump_amplitudes_mm=rng.uniform(0.2, 0.5, size=n_bumps),
        bump_phases=rng.uniform(0.0, 2.0 * np.pi, size=n_bumps),
    )


def _radius_profile(s: np.ndarray, neck_mm: float, body_mm: float, tip_mm: float, ripple_mm: float,
                    ripple_phase: float) -> np.ndarray:
    """(K,) tube radius along the arc-length fraction s ∈ [0, 1]: narrow neck, wide body, tapered tip."""
    rise = neck_mm + (body_mm - neck_mm) * _smoothstep(s / 0.35)
    radius = rise + (tip_mm - body_mm) * _smoothstep((s - 0.6) / 0.4)
    return radius + ripple_mm * np.sin(2.0 * np.pi * 1.5 * s + ripple_phase) * _smoothstep(s / 0.2)


def _draw_centreline(rng: np.random.Generator, inside_depth_mm: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Dense centreline (K, 3), arc-length fraction s (K,) and radius (K,), leaving the ostium along +z."""
    length_mm = rng.uniform(25.0, 40.0)
    tangent = np.array([0.0, 0.0, 1.0])
    first_bend = axis_angle_rotation(unit_perpendicular(tangent, rng), np.radians(rng.uniform(40.0, 90.0)))
    middle_direction = first_bend @ tangent
    second_axis = unit_perpendicular(middle_direction, rng)
    end_direction = axis_angle_rotation(second_axis, np.radians(rng.uniform(-30.0, 60.0))) @ middle_direction
    control = np.array([np.zeros(3), 0.33 * tangent, 0.33 * tangent + 0.33 * middle_direction,
                        0.33 * tangent + 0.33 * middle_direction + 0.33 * end_direction])
    dense = _bezier(control, np.linspace(0.0, 1.0, 2001))
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(dense, axis=0), axis=1))])
    dense *= length_mm / arc[-1]
    arc *= length_mm / arc[-1]
    n_samples = int(np.ceil(length_mm / 0.4)) + 1
    s = np.linspace(0.0, 1.0, n_samples)
    centre = np.stack([np.interp(s * length_mm, arc, dense[:, axis]) for axis in range(3)], axis=1)
    neck, body, tip = rng.uniform(4.0, 5.5), rng.uniform(6.5, 9.0), rng.uniform(4.0, 6.5)
    radius = _radius_profile(s, neck, body, tip, rng.uniform(0.0, 0.5), rng.uniform(0.0, 2.0 * np.pi))
    n_inside = int(np.ceil(inside_depth_mm / 0.4))
    depth = np.linspace(inside_depth_mm, 0.0, n_inside + 1)[:-1]
    inside = -depth[:, None] * tangent
    return (np.vstack([inside, centre]), np.concatenate([-depth / length_mm, s]),
            np.concatenate([np.full(n_inside, radius[0]), radius]))


def _place_lobes(phantom: LaaPhantom, rng: np.random.Generator, n_lobes: int) -> None:
    """Add up to ``n_lobes`` lobes to ``phantom``. Each lobe's tip is put 1–3 mm from the tip of the previous
    lobe or from a distant part of the appendage body (a thin gap), on the side facing the lobe's base;
    a candidate is kept when nothing else comes closer than that gap and the lobe stays beyond the ostium."""
    centre, s, radius = phantom.centreline_mm, phantom.centreline_s, phantom.radius_mm
    arc_mm = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(centre, axis=0), axis=1))])
    beyond = s >= 0.0

    def others(points_mm: np.ndarray, attach_index: int) -> np.ndarray:
        """Field of everything a lobe must keep a gap to: the atrium, earlier lobes and the appendage body
        except the stretch around the lobe's own base (within its parent radius + 6 mm of arc)."""
        value = phantom.atrium_sdf(points_mm)
        window = radius[attach_index] + 6.0
        for part in (beyond & (arc_mm < arc_mm[attach_index] - window), arc_mm > arc_mm[attach_index] + window):
            if part.sum() >= 2:
                value = np.minimum(value, _polyline_tube_sdf(points_mm, centre[part], radius[part]))
        for lobe in phantom.lobes:
            value = np.minimum(value, lobe.sdf(points_mm))
        return value

    def along_lobes(attach_mm: np.ndarray, tips_mm: np.ndarray, radius_attach_mm: float, radius_tip_mm: float,
                    fractions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Axis points (L, F, 3) at the given fractions of L lobes sharing a base, and the radii (F,) there."""
        points = attach_mm + fractions[None, :, None] * (tips_mm - attach_mm)[:, None, :]
        return points, radius_attach_mm + fractions * (radius_tip_mm - radius_attach_mm)

    def outer_clearance(attach_mm: np.ndarray, tips_mm: np.ndarray, radius_attach_mm: float, radius_tip_mm: float,
                        attach_index: int) -> np.ndarray:
        """(L,) smallest gap (mm) between the outer 60 % of each lobe and everything else."""
        points, radii = along_lobes(attach_mm, tips_mm, radius_attach_mm, radius_tip_mm, np.linspace(0.4, 1.0, 7))
        return (others(points.reshape(-1, 3), attach_index).reshape(points.shape[:2]) - radii).min(axis=1)

    def beyond_ostium(attach_mm: np.ndarray, tips_mm: np.ndarray, radius_attach_mm: float,
                      radius_tip_mm: float) -> np.ndarray:
        """(L,) bool: each lobe stays 0.75 mm beyond the ostium plane."""
        points, radii = along_lobes(attach_mm, tips_mm, radius_attach_mm, radius_tip_mm, np.linspace(0.3, 1.0, 8))
        return (points[..., 2] - radii).min(axis=1) >= 0.75

    for _ in range(n_lobes):
        fallback: _Lobe | None = None
        for attempt in range(60):
            attach_s = rng.uniform(0.25, 0.95)
            if any(abs(attach_s - used) < 0.18 for used in _lobe_positions(phantom)):
                continue
            index = int(np.argmin(np.abs(s - attach_s)))
            attach = centre[index]
            tangent = centre[min(index + 1, len(centre) - 1)] - centre[max(index - 1, 0)]
            tangent /= np.linalg.norm(tangent)
            radius_tip, gap = rng.uniform(3.5, 5.5), rng.uniform(1.0, 3.0)
            shortest, longest = radius[index] - radius_tip + 3.0, radius[index] + 16.0

            radius_attach = 0.6 * radius[index]
            shape_args = (radius_attach, radius_tip)
            if phantom.lobes and attempt < 40:
                # A twin of the previous lobe: tip put `gap` beside the previous tip, on the side of this base.
                previous = phantom.lobes[-1]
                previous_axis = (previous.tip_mm - previous.attach_mm) / np.linalg.norm(previous.tip_mm - previous.attach_mm)
                side = attach - previous.tip_mm
                side -= (side @ previous_axis) * previous_axis
                if np.linalg.norm(side) < 1e-6:
                    continue
                side /= np.linalg.norm(side)
                side = axis_angle_rotation(unit_perpendicular(side, rng), np.radians(rng.uniform(0.0, 30.0))) @ side
                tip = previous.tip_mm + (previous.radius_tip_mm + radius_tip + gap) * side
                if not shortest <= np.linalg.norm(tip - attach) <= longest:
                    continue
            else:
                # Grow the lobe sideways until its tip comes `gap` from something (or keep it free).
                direction = unit_perpendicular(tangent, rng) + rng.uniform(-0.4, 0.4) * tangent
                direction /= np.linalg.norm(direction)
                coarse = np.arange(shortest, longest, 0.25)
                tips = attach + coarse[:, None] * direction
                usable = np.cumprod(beyond_ostium(attach, tips, *shape_args)).astype(bool)  # up to the first miss
                if not usable[0]:
                    continue
                touching = np.flatnonzero(usable & (outer_clearance(attach, tips, *shape_args, index) <= gap))
                if len(touching) == 0:
                    if fallback is None:
                        fallback = _Lobe(attach, tips[int(rng.integers(0, int(usable.sum())))], radius_attach, radius_tip,
                                         radius_attach + 1.0)
                    continue
                if touching[0] == 0:
                    continue
                fine = np.linspace(coarse[touching[0] - 1], coarse[touching[0]], 11)
                tips = attach + fine[:, None] * direction
                last_clear = np.flatnonzero(outer_clearance(attach, tips, *shape_args, index) > gap)
                tip = tips[last_clear[-1] if len(last_clear) else 0]
            if not beyond_ostium(attach, tip[None], *shape_args)[0]:
                continue
            clearance = float(outer_clearance(attach, tip[None], *shape_args, index)[0])
            lobe = _Lobe(attach, tip, radius_attach, radius_tip, radius_attach + 1.0)
            if clearance < 0.9:
                continue
            if clearance > 3.2:
                fallback = fallback if fallback is not None else lobe
                continue
            phantom.gaps_mm.append(clearance)
            phantom.lobes.append(lobe)
            phantom._tree = None
            break
        else:
            if fallback is not None:
                phantom.lobes.append(fallback)
                phantom._tree = None


def _lobe_positions(phantom: LaaPhantom) -> list[float]:
    """Arc-length fractions where the existing lobes attach."""
    positions = []
    for lobe in phantom.lobes:
        index = int(np.argmin(np.linalg.norm(phantom.centreline_mm - lobe.attach_mm, axis=1)))
        positions.append(float(phantom.centreline_s[index]))
    return positions


def draw_laa_phantom(rng: np.random.Generator) -> LaaPhantom:
    """A random :class:`LaaPhantom` (deterministic given the generator's state)."""
    for _ in range(50):
        atrium = _draw_atrium(rng)
        neck_gap_mm = rng.uniform(2.5, 4.0)
        centreline, s, radius = _draw_centreline(rng, inside_depth_mm=neck_gap_mm + 5.0)
        # Put the atrium below the ostium plane: its surface along a slightly tilted direction u sits
        # neck_gap_mm below the ostium centre.
        tilt = axis_angle_rotation(unit_perpendicular(np.array([0.0, 0.0, 1.0]), rng), np.radians(rng.uniform(0.0, 15.0)))
        u = tilt @ np.array([0.0, 0.0, 1.0])
        ray = np.linspace(0.0, 40.0, 801)[:, None] * u
        outside = _atrium_body_sdf(ray, np.zeros(3), **atrium) > 0.0
        surface_mm = float(ray[np.argmax(outside)] @ u)
        centre = -(surface_mm * u + neck_gap_mm * np.array([0.0, 0.0, 1.0]))
        vein_direction = unit_perpendicular(u, rng) - rng.uniform(0.3, 0.8) * u
        vein_direction /= np.linalg.norm(vein_direction)
        vein_start = centre + 0.5 * surface_mm * vein_direction
        phantom = LaaPhantom(
            centre, atrium["axes"], atrium["semi_axes_mm"], atrium["bump_directions"], atrium["bump_amplitudes_mm"],
            atrium["bump_phases"], vein_start_mm=vein_start, vein_end_mm=vein_start + rng.uniform(35.0, 50.0) * vein_direction,
            vein_radius_mm=rng.uniform(5.0, 7.0), junction_mm=np.array([0.0, 0.0, -neck_gap_mm]),
            junction_blend_mm=2.5, centreline_mm=centreline, centreline_s=s, radius_mm=radius)
        if not _valid_without_lobes(phantom):
            continue
        n_lobes = int(rng.integers(1, 4))
        for _ in range(4):  # at least one lobe must nearly touch something (a thin gap)
            phantom.lobes, phantom.gaps_mm, phantom._tree = [], [], None
            _place_lobes(phantom, rng, n_lobes)
            if phantom.gaps_mm:
                return phantom
    raise RuntimeError("could not draw a valid LAA phantom in 50 tries")


def _valid_without_lobes(phantom: LaaPhantom) -> bool:
    """The ostium disk is clear of the atrium, and the appendage body stays away from atrium and vein."""
    angles = np.linspace(0.0, 2.0 * np.pi, 24, endpoint=False)
    rings = [r * np.stack([np.cos(angles), np.sin(angles), np.zeros_like(angles)], axis=1)
             for r in np.linspace(0.0, phantom.radius_mm[0] + 4.0, 6)]
    disk = np.vstack(rings)
    if np.min(phantom.atrium_sdf(disk)) < phantom.junction_blend_mm + 0.5:
        return False
    body = phantom.centreline_s > 0.2
    clearance = phantom.atrium_sdf(phantom.centreline_mm[body]) - phantom.radius_mm[body]
    heights = LaaPhantom.plane_distance(phantom.centreline_mm[body]) - phantom.radius_mm[body]
    return bool(np.min(clearance) > 3.0 and np.min(heights) > 0.75)


# ----------------------------------------------------------------------------------------------------------
# One case: phantom → world pose → image, labelmap and mesh
# ----------------------------------------------------------------------------------------------------------


@dataclass
class SyntheticCase:
    """One generated case. ``image`` (int16 HU) and ``labelmap`` (uint8, 1 = LAA lumen closed at the ostium)
    share one grid; ``mesh`` is the open LAA wall in world LPS mm. ``ostium_*`` give the cut plane in world
    LPS mm (normal pointing into the appendage); ``gaps_mm`` are the designed near-contact gaps of the lobes;
    ``phantom_to_world`` (4, 4) maps phantom-frame mm to world LPS mm."""

    case_id: str
    image: Volume
    labelmap: Volume
    mesh: Mesh
    ostium_center_world_mm: np.ndarray
    ostium_normal_world: np.ndarray
    gaps_mm: list[float]
    phantom_to_world: np.ndarray
    seconds: float = 0.0


_BASE_POSE = np.array([0.6, -0.7, 0.35])
"""World (LPS) direction the appendage leaves the atrium in before the random pose: left, anterior, up."""


def _grid_points(low_mm: np.ndarray, spacing_mm: float, shape: tuple[int, int, int]) -> np.ndarray:
    """(N, 3) points ``low + spacing * (i, j, k)`` of a regular grid in C (``ij``) order."""
    axes = [low_mm[a] + spacing_mm * np.arange(shape[a]) for a in range(3)]
    return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)


def _narrow_band_blood_field(phantom: LaaPhantom, low_mm: np.ndarray, high_mm: np.ndarray, spacing_mm: float,
                             *, block: int = 4, band_mm: float = 5.0) -> tuple[np.ndarray, float]:
    """The blood field on a fine grid from ``low_mm`` covering ``high_mm`` (shape ``block * m + 1`` per axis).

    The field is first evaluated on the corners of ``block``³-cell blocks; only blocks with a corner closer
    than ``band_mm`` to the surface (which contain every zero crossing, the field being ~1-Lipschitz and a
    block's diagonal < ``band_mm``) are evaluated at every fine node. Other nodes get ``±band_mm`` with the
    sign of the nearest corner, so marching cubes sees exactly the true surface. Returns (array, spacing)."""
    n_blocks = np.ceil((high_mm - low_mm) / (block * spacing_mm)).astype(int)
    coarse_shape = tuple(int(n) + 1 for n in n_blocks)
    coarse = phantom.fields(_grid_points(low_mm, block * spacing_mm, coarse_shape))[0].reshape(coarse_shape)
    near = np.abs(coarse) < band_mm
    active_blocks = np.zeros(tuple(n_blocks), dtype=bool)
    for di in (0, 1):
        for dj in (0, 1):
            for dk in (0, 1):
                active_blocks |= near[di:di + n_blocks[0], dj:dj + n_blocks[1], dk:dk + n_blocks[2]]
    fine_shape = tuple(int(block * n + 1) for n in n_blocks)
    # A fine node belongs to the block below it and, on a block face, also to the block before it.
    lower = [np.minimum(np.arange(n) // block, m - 1) for n, m in zip(fine_shape, n_blocks)]
    upper = [np.maximum((np.arange(n) - 1) // block, 0) for n in fine_shape]
    active = np.zeros(fine_shape, dtype=bool)
    for first in (lower[0], upper[0]):
        for second in (lower[1], upper[1]):
            for third in (lower[2], upper[2]):
                active |= active_blocks[np.ix_(first, second, third)]
    nearest = [np.rint(np.arange(n) / block).astype(int) for n in fine_shape]
    blood = np.where(coarse[np.ix_(*nearest)] < 0.0, -band_mm, band_mm)
    points = low_mm + spacing_mm * np.argwhere(active)
    blood[active] = phantom.fields(points)[0]
    return blood, spacing_mm


def _largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 6-connected component of a 3D bool mask (empty stays empty)."""
    labels, count = ndimage.label(mask)
    if count <= 1:
        return mask
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


def _largest_face_component(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Keep the largest vertex-connected face set; drop unused vertices."""
    n_vertices = len(vertices)
    rows = np.concatenate([faces[:, 0], faces[:, 1], faces[:, 2]])
    cols = np.concatenate([faces[:, 1], faces[:, 2], faces[:, 0]])
    graph = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(n_vertices, n_vertices))
    _, component = connected_components(graph, directed=False)
    face_component = component[faces[:, 0]]
    keep = face_component == np.argmax(np.bincount(face_component))
    faces = faces[keep]
    used = np.unique(faces)
    remap = np.full(n_vertices, -1)
    remap[used] = np.arange(len(used))
    return vertices[used], remap[faces]


def _appendage_wall_mesh(phantom: LaaPhantom, spacing_mm: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Open appendage wall in the phantom frame: (V, 3) vertices mm, (F, 3) faces with outward normals, and
    the centre of mass (3,) of the enclosed lumen (beyond the ostium)."""
    low, high = phantom.appendage_box_mm(2.0)
    # Lumen centre of mass on a 1 mm grid (accurate to a fraction of a mm).
    lumen_spacing_mm = 1.0
    lumen_shape = tuple(int(n) for n in np.ceil((high - low) / lumen_spacing_mm).astype(int) + 1)
    grid = _grid_points(low, lumen_spacing_mm, lumen_shape)  # type: ignore[arg-type]
    lumen = _largest_component(phantom.appendage_lumen(grid, *phantom.fields(grid)).reshape(lumen_shape))
    lumen_center = grid.reshape(*lumen_shape, 3)[lumen].mean(axis=0)
    blood, _ = _narrow_band_blood_field(phantom, low, high, spacing_mm)
    vertices, faces, _, _ = marching_cubes(blood, level=0.0, spacing=(spacing_mm,) * 3)
    vertices = vertices.astype(np.float64) + low
    faces = faces.astype(np.int64)
    vertices, faces = trimesh.intersections.slice_faces_plane(vertices, faces, np.array([0.0, 0.0, 1.0]), np.zeros(3))[:2]
    centroids = vertices[faces].mean(axis=1)
    owned = phantom.appendage_sdf(centroids) <= phantom.atrium_sdf(centroids)
    merged = trimesh.Trimesh(vertices, faces[owned], process=True, validate=False)
    vertices, faces = _largest_face_component(np.asarray(merged.vertices), np.asarray(merged.faces, dtype=np.int64))
    corners = vertices[faces]
    normals = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
    outside = phantom.fields(corners.mean(axis=1) + 0.3 * normals)[0]
    if np.mean(outside > 0.0) < 0.5:
        faces = faces[:, ::-1].copy()
    return vertices, faces, lumen_center


def make_laa_case(rng: np.random.Generator, case_id: str = "laa_000", *, mesh_spacing_mm: float = 0.5) -> SyntheticCase:
    """Generate one LAA case (image, labelmap, open wall mesh) from ``rng`` (deterministic given its state).

    The image spans ≥ 42 mm from the appendage's centre of mass (lumen or surface) along each image axis,
    with in-plane spacing 0.75–0.9 mm and slice spacing 1.0–1.5 mm (about 100–125 voxels per axis).
    """
    started = time.perf_counter()
    phantom = draw_laa_phantom(rng)
    vertices_phantom, faces, lumen_center_phantom = _appendage_wall_mesh(phantom, mesh_spacing_mm)

    # Pose: the appendage leaves the atrium roughly along _BASE_POSE, turned by up to 30 degrees.
    base = _BASE_POSE / np.linalg.norm(_BASE_POSE)
    align_axis = np.cross([0.0, 0.0, 1.0], base)
    align = axis_angle_rotation(align_axis, float(np.arccos(base[2])))
    spin = axis_angle_rotation(np.array([0.0, 0.0, 1.0]), rng.uniform(0.0, 2.0 * np.pi))
    wobble = axis_angle_rotation(rng.normal(size=3), np.radians(rng.uniform(0.0, 30.0)))
    rotation = wobble @ align @ spin
    surface_center_phantom = Mesh(vertices_phantom, faces).center_of_mass_world_mm()
    center_phantom = 0.5 * (surface_center_phantom + lumen_center_phantom)
    center_world = rng.uniform(-60.0, 60.0, size=3)
    translation = center_world - rotation @ center_phantom
    phantom_to_world = np.eye(4)
    phantom_to_world[:3, :3], phantom_to_world[:3, 3] = rotation, translation

    # Image grid: oblique direction (10-40 degrees off the axes, sometimes a flipped axis), anisotropic spacing.
    direction = draw_image_direction(rng)
    in_plane = rng.uniform(0.75, 0.9)
    spacing = np.array([in_plane, in_plane, rng.uniform(1.0, 1.5)])
    half_extent = 42.0 + 0.5 * np.linalg.norm(surface_center_phantom - lumen_center_phantom) + rng.uniform(1.0, 4.0)
    shape = np.ceil(2.0 * half_extent / spacing).astype(int) + 1
    offset_image = rng.uniform(-1.0, 1.0, size=3)  # mm along the image axes; kept inside the 1 mm slack above
    grid_center_world = center_world + direction @ offset_image
    origin = grid_center_world - direction @ (spacing * (shape - 1) / 2.0)
    affine = affine_from_geometry(origin, spacing, direction)

    # Voxel centres: world via the image affine (frames.index_to_world), then phantom = Rᵀ (world - t). Both
    # maps are affine, so the grid is the first voxel's position plus the images of the three index steps.
    corners_world = index_to_world(np.vstack([np.zeros(3), np.eye(3)]), affine)  # voxel (0,0,0) and unit steps
    corners_phantom = (corners_world - translation) @ rotation
    origin_phantom, steps_phantom = corners_phantom[0], corners_phantom[1:] - corners_phantom[0]  # (3,), (3, 3)
    points_phantom = (origin_phantom
                      + np.arange(shape[0])[:, None, None, None] * steps_phantom[0]
                      + np.arange(shape[1])[None, :, None, None] * steps_phantom[1]
                      + np.arange(shape[2])[None, None, :, None] * steps_phantom[2]).reshape(-1, 3)
    phantom_from_index = np.eye(4)
    phantom_from_index[:3, :3], phantom_from_index[:3, 3] = steps_phantom.T, origin_phantom
    blood, atrium, appendage = phantom.fields(points_phantom)
    label = phantom.appendage_lumen(points_phantom, blood, atrium, appendage).reshape(shape)
    label = _largest_component(label)
    if not label.any():
        raise RuntimeError(f"{case_id}: empty appendage labelmap (phantom generation bug)")
    hu = _render_ct(rng, points_phantom, blood, atrium, phantom, spacing, phantom_from_index, tuple(shape))
    hu = ndimage.gaussian_filter(hu, sigma=0.55 * float(spacing.min()) / spacing)
    hu += rng.normal(scale=rng.uniform(20.0, 40.0), size=hu.shape)
    image = Volume(np.clip(np.round(hu), -1024, 3071).astype(np.int16), affine)
    labelmap = Volume(label.astype(np.uint8), affine)

    vertices_world = vertices_phantom @ rotation.T + translation
    return SyntheticCase(
        case_id=case_id, image=image, labelmap=labelmap, mesh=Mesh(vertices_world, faces),
        ostium_center_world_mm=translation.copy(), ostium_normal_world=rotation[:, 2].copy(),
        gaps_mm=list(phantom.gaps_mm), phantom_to_world=phantom_to_world, seconds=time.perf_counter() - started)


def _render_ct(rng: np.random.Generator, points_phantom: np.ndarray, blood: np.ndarray, atrium: np.ndarray,
               phantom: LaaPhantom, spacing_mm: np.ndarray, phantom_from_index: np.ndarray,
               shape: tuple[int, int, int]) -> np.ndarray:
    """Noise-free HU on the image grid (``shape`` float32 array): blood, myocardial wall, soft tissue and lung,
    mixed by the fraction of each voxel they fill (a linear ramp of the field over one voxel).
    ``points_phantom`` (N, 3) and the fields (N,) are the voxel centres in C order."""
    voxel_mm = float(np.prod(spacing_mm) ** (1.0 / 3.0))
    wall_mm = rng.uniform(1.2, 2.0)

    def smooth_field(wavelength_mm: tuple[float, float]) -> np.ndarray:
        return LowFrequencyField.draw(rng, 3, wavelength_mm).on_grid(phantom_from_index, shape).ravel()

    blood_hu = rng.uniform(300.0, 450.0) + 20.0 * smooth_field((60.0, 120.0))
    wall_hu = rng.uniform(40.0, 80.0)
    tissue_hu = rng.uniform(10.0, 50.0) + 15.0 * smooth_field((20.0, 50.0))
    lung_hu = rng.uniform(-850.0, -700.0)
    lung_distance_mm = rng.uniform(12.0, 18.0)
    heart_distance = np.minimum(atrium, phantom.appendage_rough_distance_mm(points_phantom))
    lung = _smoothstep((heart_distance - lung_distance_mm) / 4.0) * _smoothstep((smooth_field((50.0, 90.0)) + 0.1) / 0.25)
    background = tissue_hu * (1.0 - lung) + lung_hu * lung
    in_blood = np.clip(0.5 - blood / voxel_mm, 0.0, 1.0)
    in_wall = np.clip(0.5 - (blood - wall_mm) / voxel_mm, 0.0, 1.0)
    hu = blood_hu * in_blood + wall_hu * (in_wall - in_blood) + background * (1.0 - in_wall)
    return hu.astype(np.float32).reshape(shape)
