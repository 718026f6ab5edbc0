"""Shape metrics between a predicted and a ground-truth surface: the ISMM paper's Chamfer distance and Earth
Mover's Distance (ISMM spec, "Metrics").

Both metrics compare point clouds drawn area-uniformly from the two meshes (world LPS mm, see
:func:`~implicitseg.evaluation.surface.sample_surface`), and are reported twice: on clouds normalised to the
ground truth's unit sphere (unitless, the paper's tables) and in millimetres. See :data:`SHAPE_SAMPLING`.

- Chamfer distance: ½ (mean nearest-neighbour distance pred → GT + mean GT → pred), Euclidean, not squared.
- Earth Mover's Distance: the mean matched distance of the exact optimal one-to-one matching between two clouds
  of equal size (Hungarian algorithm; O(n³) time, an n × n cost matrix in memory).

Both are estimates from finite samples and carry a sampling floor: two independent clouds drawn from the *same*
surface are not at distance 0. For Chamfer the floor is about half the sample spacing, ½ √(area / n); for EMD
it is larger, about the sample spacing √(area / n) at a few hundred to a thousand points (e.g. ≈ 0.11 on a
unit sphere with n = 1,000), and it shrinks slowly with n. Compare values only at equal point counts.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.spatial import cKDTree
from scipy.spatial.distance import cdist

from implicitseg.errors import InputError
from implicitseg.evaluation.surface import check_mesh, sample_surface
from implicitseg.io.meshes import Mesh

N_CHAMFER = 30_000
"""Points sampled on each surface for the Chamfer distance (the paper's 30k)."""

N_EMD = 1_000
"""Points sampled on each surface for the Earth Mover's Distance (the paper's 1k)."""

NORMALISATION = ("both clouds translated by the GT Chamfer cloud's centroid and divided by its largest distance "
                 "from that centroid (GT in the unit sphere); *_mm values are the normalised values times that "
                 "radius")
"""How the clouds are normalised before the unitless metrics are taken (also written to evaluation summaries)."""

SHAPE_SAMPLING = {"n_chamfer": N_CHAMFER, "n_emd": N_EMD, "normalisation": NORMALISATION}
"""The paper's protocol: Chamfer on 30,000 area-uniform points per surface, EMD on 1,000 (drawn separately),
both on clouds normalised so that the ground truth lies in the unit sphere (:func:`normalise_clouds`)."""

SHAPE_METRIC_NAMES = ("chamfer_normalised", "emd_normalised", "chamfer_mm", "emd_mm")
"""The keys :func:`compute_shape_metrics` returns, in order."""


def _cloud(points: np.ndarray, what: str) -> np.ndarray:
    cloud = np.asarray(points, dtype=np.float64)
    if cloud.ndim != 2 or cloud.shape[1] != 3:
        raise InputError(f"{what} cloud must be an (N, 3) array, got shape {cloud.shape}")
    if len(cloud) == 0:
        raise InputError(f"{what} cloud is empty")
    if not np.all(np.isfinite(cloud)):
        raise InputError(f"{what} cloud holds NaN or infinite coordinates")
    return cloud


def normalise_clouds(pred_points: np.ndarray,
                     gt_points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Both (N, 3) clouds (world LPS mm) in the ground truth's unit sphere: ``(pred, gt, center, radius)``.

    ``center`` (3,), world LPS mm, is the centroid of ``gt_points`` and ``radius`` (mm) the largest distance of a
    GT point from it; both clouds are translated by ``-center`` and divided by ``radius`` (unitless outputs), so
    the GT cloud lies in the unit ball and touches its sphere. A point ``q`` of the outputs is ``center +
    radius * q`` in world LPS mm. Raises :class:`InputError` for an empty, non-finite or single-point GT cloud.
    """
    pred = _cloud(pred_points, "predicted")
    gt = _cloud(gt_points, "ground-truth")
    center = gt.mean(axis=0)
    radius = float(np.linalg.norm(gt - center, axis=1).max())
    if not radius > 0:
        raise InputError("ground-truth cloud has no extent (all its points coincide); cannot normalise")
    return (pred - center) / radius, (gt - center) / radius, center, radius


def chamfer_distance(pred_points: np.ndarray, gt_points: np.ndarray) -> float:
    """Symmetric Chamfer distance between (N, 3) and (M, 3) clouds, in the clouds' unit (mm for world LPS mm).

    ½ (mean over pred of the Euclidean distance to the nearest GT point + mean over GT of the distance to the
    nearest pred point); distances are not squared. Sizes may differ. Raises :class:`InputError` for an empty
    or non-finite cloud.
    """
    pred = _cloud(pred_points, "predicted")
    gt = _cloud(gt_points, "ground-truth")
    pred_to_gt, _ = cKDTree(gt).query(pred, k=1, workers=-1)
    gt_to_pred, _ = cKDTree(pred).query(gt, k=1, workers=-1)
    return float(0.5 * (np.mean(pred_to_gt) + np.mean(gt_to_pred)))


def earth_movers_distance(pred_points: np.ndarray, gt_points: np.ndarray) -> float:
    """Earth Mover's Distance between two (N, 3) clouds of equal size, in the clouds' unit (mm for world LPS mm).

    The mean Euclidean distance over the exact optimal bijection pred ↔ GT (the one minimising the summed
    distance; Hungarian algorithm on the N × N distance matrix, so O(N³) time and N² floats of memory). Raises
    :class:`InputError` for clouds of different sizes, an empty or a non-finite cloud.
    """
    pred = _cloud(pred_points, "predicted")
    gt = _cloud(gt_points, "ground-truth")
    if len(pred) != len(gt):
        raise InputError(f"Earth Mover's Distance needs clouds of equal size, got {len(pred)} and {len(gt)} points")
    cost = cdist(pred, gt)
    rows, cols = linear_sum_assignment(cost)
    return float(cost[rows, cols].mean())


def compute_shape_metrics(pred: Mesh, gt: Mesh, *, n_chamfer: int = N_CHAMFER, n_emd: int = N_EMD,
                          seed: int = 0) -> dict[str, float]:
    """Chamfer distance and EMD of ``pred`` against ``gt`` (both world LPS mm); keys :data:`SHAPE_METRIC_NAMES`.

    Clouds: ``n_chamfer`` area-uniform points on ``pred`` (``seed``) and on ``gt`` (``seed + 1``) for the Chamfer
    distance; ``n_emd`` more on ``pred`` (``seed + 2``) and ``gt`` (``seed + 3``) for the EMD. All four are
    normalised with the center and radius that :func:`normalise_clouds` finds for the Chamfer pair (one
    normalisation per case, from the denser GT cloud).

    - ``chamfer_normalised`` / ``emd_normalised`` (unitless): :func:`chamfer_distance` /
      :func:`earth_movers_distance` of the normalised clouds (the paper's CD and EMD).
    - ``chamfer_mm`` / ``emd_mm`` (mm): the same values times the normalisation radius, i.e. the metrics of
      the clouds in world mm.

    Raises :class:`InputError` when a mesh has no faces or no area, or a point count is < 1.
    """
    check_mesh(pred, "predicted")
    check_mesh(gt, "ground-truth")
    for name, count in (("n_chamfer", n_chamfer), ("n_emd", n_emd)):
        if count < 1:
            raise InputError(f"{name} must be ≥ 1, got {count}")
    pred_cd, gt_cd, center, radius = normalise_clouds(sample_surface(pred, n_chamfer, seed),
                                                      sample_surface(gt, n_chamfer, seed + 1))
    pred_emd = (sample_surface(pred, n_emd, seed + 2) - center) / radius
    gt_emd = (sample_surface(gt, n_emd, seed + 3) - center) / radius
    chamfer = chamfer_distance(pred_cd, gt_cd)
    emd = earth_movers_distance(pred_emd, gt_emd)
    values = (chamfer, emd, chamfer * radius, emd * radius)
    return {name: float(value) for name, value in zip(SHAPE_METRIC_NAMES, values)}
