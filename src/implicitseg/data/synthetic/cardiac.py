"""A beating-heart cine MRI phantom acquired as a short-axis stack (NISF issue): its labels are known at ANY
world point and time, so segmentations can be scored between slices and in planes that were never imaged.

Anatomy in the heart's frame (``l`` along the long axis, 0 at the base plane, increasing towards the apex; ``a``,
``b`` across it, ``-a`` towards the septum and the right ventricle): the LV blood pool is the half-ellipsoid
``(a² + b²) / R² + (l / L)² < 1, l ≥ 0``; the LV myocardium the shell up to the epicardium (``R + w``,
``L + w_apex``); the RV blood pool a flatter half-ellipsoid beside the septum, outside the LV epicardium.
Over a cycle ``t ∈ [0, 1)`` (0 = end-diastole, 0.5 = end-systole) the cavities contract and the wall thickens.

The acquisition: a stack of short-axis slices (in-plane 1.6–2.0 mm, 8–10 mm apart, 8 mm thick: each slice
averages the anatomy across its thickness), oblique in the world as a real heart's axes are; bSSFP-like
contrast (blood bright, myocardium dark, lungs black, fat bright), Rician noise; ``frames`` time frames.
Labels: 0 background, 1 LV blood pool, 2 LV myocardium, 3 RV blood pool (UK Biobank order).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import numpy as np

from implicitseg.data.synthetic.common import LowFrequencyField, axis_angle_rotation, unit_perpendicular
from implicitseg.geometry.frames import affine_from_geometry, index_to_world

CARDIAC_LABELS = {"0": "background", "1": "LV blood pool", "2": "LV myocardium", "3": "RV blood pool"}
SLICE_SAMPLES = 5
"""Sub-slices averaged across a slice's thickness (partial volume along the through-plane axis)."""


@dataclass
class CardiacPhantom:
    """One heart: its frame (``center_mm`` on the long axis at the base plane, ``axes`` (3, 3) columns a, b, l
    in world LPS) and its shape at end-diastole, in mm; ``contraction`` scales the cavities at end-systole."""

    center_mm: tuple[float, float, float]
    axes: tuple[tuple[float, float, float], ...]
    lv_radius_mm: float
    lv_length_mm: float
    wall_mm: float
    rv_offset_mm: float
    rv_radii_mm: tuple[float, float]
    rv_length_mm: float
    contraction: float

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "CardiacPhantom":
        data = json.loads(text)
        return cls(**{key: tuple(map(tuple, value)) if key == "axes" else
                      tuple(value) if isinstance(value, list) else value for key, value in data.items()})

    def _local(self, points_world_mm: np.ndarray) -> np.ndarray:
        return (np.asarray(points_world_mm, dtype=np.float64) - np.array(self.center_mm)) @ np.array(self.axes)

    def labels_at(self, points_world_mm: np.ndarray, time: float) -> np.ndarray:
        """Labels (N,) uint8 of world points (N, 3) LPS mm at ``time`` (fraction of the cycle, any real)."""
        local = self._local(points_world_mm)
        a, b, l = local[:, 0], local[:, 1], local[:, 2]
        squeeze = 0.5 * (1.0 - np.cos(2.0 * np.pi * time))  # 0 at end-diastole, 1 at end-systole
        radius = self.lv_radius_mm * (1.0 - self.contraction * squeeze)
        length = self.lv_length_mm * (1.0 - 0.4 * self.contraction * squeeze)
        wall = self.wall_mm * (1.0 + 1.2 * self.contraction * squeeze)  # the wall thickens as the cavity empties
        below_base = l >= 0.0
        lv = below_base & ((a**2 + b**2) / radius**2 + (l / length) ** 2 < 1.0)
        epi = below_base & ((a**2 + b**2) / (radius + wall) ** 2 + (l / (length + 0.8 * wall)) ** 2 < 1.0)
        rv_scale = 1.0 - 0.8 * self.contraction * squeeze
        rv_a = (a + self.rv_offset_mm) / (self.rv_radii_mm[0] * rv_scale)
        rv_b = b / (self.rv_radii_mm[1] * rv_scale)
        rv = below_base & ~epi & (rv_a**2 + rv_b**2 + (l / (self.rv_length_mm * rv_scale)) ** 2 < 1.0)
        labels = np.zeros(len(local), dtype=np.uint8)
        labels[epi] = 2
        labels[lv] = 1
        labels[rv] = 3
        return labels


def draw_cardiac_phantom(rng: np.random.Generator) -> CardiacPhantom:
    """A heart of random size, shape and pose (long axis towards the patient's left, anterior and inferior)."""
    apex_direction = np.array([0.6, -0.45, -0.65]) + rng.normal(scale=0.12, size=3)
    apex_direction /= np.linalg.norm(apex_direction)
    septum = unit_perpendicular(apex_direction, rng)
    # turn the septal direction about the long axis towards the patient's right-anterior side
    right_anterior = np.array([-0.7, -0.7, 0.0]) - apex_direction * (apex_direction @ np.array([-0.7, -0.7, 0.0]))
    septum = right_anterior / np.linalg.norm(right_anterior)
    septum = axis_angle_rotation(apex_direction, rng.uniform(-0.3, 0.3)) @ septum
    a_axis = -septum
    b_axis = np.cross(apex_direction, a_axis)
    lv_radius = rng.uniform(22.0, 28.0)
    return CardiacPhantom(
        center_mm=tuple(float(c) for c in rng.uniform(-20.0, 20.0, size=3)),
        axes=tuple(tuple(float(v) for v in row) for row in np.stack([a_axis, b_axis, apex_direction], axis=1)),
        lv_radius_mm=float(lv_radius),
        lv_length_mm=float(rng.uniform(60.0, 75.0)),
        wall_mm=float(rng.uniform(7.0, 10.0)),
        rv_offset_mm=float(lv_radius + rng.uniform(8.0, 14.0)),
        rv_radii_mm=(float(rng.uniform(22.0, 28.0)), float(rng.uniform(32.0, 40.0))),
        rv_length_mm=float(rng.uniform(55.0, 70.0)),
        contraction=float(rng.uniform(0.25, 0.4)),
    )


@dataclass
class CardiacCase:
    """A generated case: ``image`` (T, I, J, K) int16 and ``labelmap`` (T, I, J, K) uint8 on one short-axis grid
    (``affine_lps`` index → world LPS mm), frame ``f`` at cycle time ``f / T``, and the phantom."""

    case_id: str
    image: np.ndarray
    labelmap: np.ndarray
    affine_lps: np.ndarray
    frame_times: np.ndarray
    phantom: CardiacPhantom


def short_axis_grid(phantom: CardiacPhantom, rng: np.random.Generator) -> tuple[tuple[int, int, int], np.ndarray]:
    """A short-axis stack covering the heart: slices perpendicular to the long axis (with a few degrees of
    error, as planned on a scanner), base to apex plus a margin, square field of view of 150–170 mm."""
    axes = np.array(phantom.axes)
    tilt = axis_angle_rotation(unit_perpendicular(axes[:, 2], rng), np.radians(rng.uniform(0.0, 6.0)))
    direction = tilt @ axes
    if rng.uniform() < 0.5:  # some scanners stack apex to base
        direction = direction @ np.diag([1.0, -1.0, -1.0])
    in_plane = rng.uniform(1.6, 2.0)
    slice_gap = rng.uniform(8.0, 10.0)
    spacing = np.array([in_plane, in_plane, slice_gap])
    extent_l = (-12.0, phantom.lv_length_mm + phantom.wall_mm + 10.0)
    n_in_plane = int(np.ceil(rng.uniform(150.0, 170.0) / in_plane))
    n_slices = int(np.ceil((extent_l[1] - extent_l[0]) / slice_gap)) + 1
    shape = (n_in_plane, n_in_plane, n_slices)
    mid_l = 0.5 * (extent_l[0] + extent_l[1])
    centre = np.array(phantom.center_mm) + axes[:, 2] * mid_l + axes[:, 0] * -12.0  # include the RV
    origin = centre - direction @ (spacing * (np.array(shape) - 1) / 2.0)
    return shape, affine_from_geometry(origin, spacing, direction)


def _render_frame(phantom: CardiacPhantom, affine: np.ndarray, shape: tuple[int, int, int], time: float,
                  texture: np.ndarray, lungs: np.ndarray, rng: np.random.Generator,
                  noise_sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """(image (I, J, K) float in ~[0, 1], labels at voxel centres (I, J, K)) of one frame."""
    index = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1).reshape(-1, 3)
    contrast = np.array([0.0, 0.85, 0.22, 0.8])  # background (texture added), LV, myocardium, RV
    intensity = np.zeros(len(index))
    for offset in np.linspace(-0.4, 0.4, SLICE_SAMPLES):  # 8 mm slab of a 10 mm slice gap, sampled
        labels = phantom.labels_at(index_to_world(index + np.array([0.0, 0.0, offset]), affine), time)
        intensity += np.where(labels == 0, texture.ravel(), contrast[labels])
    intensity /= SLICE_SAMPLES
    intensity = np.where(lungs.ravel(), 0.04, intensity)
    labels = phantom.labels_at(index_to_world(index, affine), time)
    noisy = np.hypot(intensity + rng.normal(scale=noise_sigma, size=len(index)),
                     rng.normal(scale=noise_sigma, size=len(index)))
    return noisy.reshape(shape), labels.reshape(shape)


def make_cardiac_case(rng: np.random.Generator, case_id: str = "cardiac_000", *, n_frames: int = 10) -> CardiacCase:
    """Generate one cine short-axis case with ``n_frames`` frames over one cycle."""
    phantom = draw_cardiac_phantom(rng)
    shape, affine = short_axis_grid(phantom, rng)
    index_world = index_to_world(np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1)
                                 .reshape(-1, 3), affine)
    fat = np.clip((LowFrequencyField.draw(rng, 4, (40.0, 90.0))(index_world) - 0.35) / 0.2, 0.0, 1.0)
    texture = (0.3 + 0.05 * LowFrequencyField.draw(rng, 3, (20.0, 50.0))(index_world)) * (1.0 - fat) + 0.75 * fat
    # lungs: two large regions either side of the heart, away from it
    lateral = (index_world - np.array(phantom.center_mm)) @ np.array(phantom.axes)[:, 1]
    lungs = (np.abs(lateral) > rng.uniform(55.0, 65.0)) & (fat < 0.5)
    noise_sigma = rng.uniform(0.02, 0.04)
    frame_times = np.arange(n_frames) / n_frames
    frames = [_render_frame(phantom, affine, shape, float(t), texture.reshape(shape), lungs.reshape(shape), rng,
                            noise_sigma) for t in frame_times]
    image = np.stack([np.round(1000.0 * f[0]) for f in frames]).astype(np.int16)
    labelmap = np.stack([f[1] for f in frames]).astype(np.uint8)
    return CardiacCase(case_id, image, labelmap, affine, frame_times, phantom)
