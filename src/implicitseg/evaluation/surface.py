"""Surface metrics between a predicted and a ground-truth mesh (NUDF spec, "Evaluation").

Pure functions on :class:`~implicitseg.io.meshes.Mesh` objects held in world LPS mm: millimetres in,
millimetres out (fractions are unitless, 0..1). Point-to-mesh distances are exact (point to nearest
triangle, point-cloud-utils' AABB tree), never point-to-point approximations.

Sampled metrics use area-uniform samples: ``n_samples`` on the prediction drawn with ``seed`` and
``n_samples`` on the ground truth drawn with ``seed + 1``. Percentiles use NumPy's default linear
interpolation.
"""

from __future__ import annotations

import math

import numpy as np
import point_cloud_utils as pcu

from implicitseg.errors import InputError
from implicitseg.io.meshes import Mesh


def _threshold_name(threshold_mm: float) -> str:
    return f"at_{threshold_mm:g}mm"


def surface_metric_names(completion_mm: float = 2.0) -> tuple[str, ...]:
    """The keys :func:`compute_surface_metrics` returns, in order (threshold names follow ``completion_mm``).

    Names carry their unit: ``_mm`` for distances in mm, ``_at_<t>mm`` for a fraction (0..1) within or beyond a
    threshold of ``t`` mm — the scheme of the volume and shape metrics too."""
    suffix = _threshold_name(completion_mm)
    return (
        "chamfer_pred_to_gt_mm",
        "chamfer_symmetric_mm",
        "accuracy_90_mm",
        f"completion_{suffix}",
        "hd95_mm",
        f"far_area_fraction_{suffix}",
    )


def missing_surface_metrics(completion_mm: float = 2.0) -> dict[str, float]:
    """The metrics of a case with no predicted surface: completion 0 (none of the GT is found), every distance and
    the far-area fraction NaN (there is no predicted surface to measure from)."""
    return {name: (0.0 if name.startswith("completion_") else math.nan)
            for name in surface_metric_names(completion_mm)}


def check_mesh(mesh: Mesh, what: str) -> None:
    """Raise :class:`InputError` naming ``what`` when ``mesh`` has no faces or no surface area to sample."""
    if len(mesh.faces) == 0:
        raise InputError(f"{what} mesh has no faces")
    if not mesh.face_areas_mm2.sum() > 0:
        raise InputError(f"{what} mesh has zero surface area")


def sample_surface(mesh: Mesh, n: int, seed: int) -> np.ndarray:
    """(n, 3) points uniform over the surface area of ``mesh`` (world LPS mm), reproducible for a ``seed``.

    A face is drawn with probability ∝ its area, then a point uniform in it: barycentric ``(u, v)`` uniform
    in the unit square, reflected into the triangle when ``u + v > 1`` (an exact, area-preserving map).
    """
    check_mesh(mesh, "sampled")
    if n < 1:
        raise InputError(f"number of surface samples must be ≥ 1, got {n}")
    rng = np.random.default_rng(seed)
    areas = mesh.face_areas_mm2
    faces = rng.choice(len(areas), size=n, p=areas / areas.sum())
    u, v = rng.random(n), rng.random(n)
    outside = u + v > 1
    u[outside], v[outside] = 1 - u[outside], 1 - v[outside]
    a, b, c = (mesh.vertices_world_mm[mesh.faces[faces, corner]] for corner in range(3))
    return a + u[:, None] * (b - a) + v[:, None] * (c - a)


def point_to_mesh_distance_mm(points_world_mm: np.ndarray, mesh: Mesh) -> np.ndarray:
    """(N,) exact Euclidean distance (mm) from each of (N, 3) points (world LPS mm) to the nearest triangle."""
    check_mesh(mesh, "target")
    points = np.ascontiguousarray(np.asarray(points_world_mm, dtype=np.float64).reshape(-1, 3))
    if len(points) == 0:
        return np.zeros(0)
    vertices = np.ascontiguousarray(mesh.vertices_world_mm, dtype=np.float64)
    faces = np.ascontiguousarray(mesh.faces, dtype=np.int64)
    distances, _, _ = pcu.closest_points_on_mesh(points, vertices, faces)
    return np.asarray(distances, dtype=np.float64)


def compute_surface_metrics(pred: Mesh, gt: Mesh, *, n_samples: int = 100_000, completion_mm: float = 2.0,
                            seed: int = 0) -> dict[str, float]:
    """Surface metrics of ``pred`` against ``gt`` (both world LPS mm); keys from :func:`surface_metric_names`.

    - ``chamfer_pred_to_gt_mm``: mean distance from the predicted mesh's vertices (those used by a face)
      to the GT surface — the paper's "Chamfer", one-sided and weighted by vertex, not by area.
    - ``chamfer_symmetric_mm``: ½ (mean pred-sample → GT + mean GT-sample → pred distance).
    - ``accuracy_90_mm``: 90th percentile of the pred-sample → GT distances. Computed on area-uniform
      samples rather than vertices so that a finely meshed region does not weigh more than its area.
    - ``completion_at_<t>mm`` (fraction): GT samples within ``completion_mm`` (≤) of the prediction.
    - ``hd95_mm``: the larger of the two one-sided 95th percentiles (pred → GT, GT → pred).
    - ``far_area_fraction_at_<t>mm`` (fraction): pred samples farther than ``completion_mm`` from GT, i.e. a
      Monte Carlo estimate of the predicted area lying that far (standard error ≤ 0.5 / √n_samples).

    Raises :class:`InputError` when a mesh has no faces or no area.
    """
    check_mesh(pred, "predicted")
    check_mesh(gt, "ground-truth")
    if n_samples < 1:
        raise InputError(f"n_samples must be ≥ 1, got {n_samples}")
    if not completion_mm > 0:
        raise InputError(f"completion_mm must be > 0, got {completion_mm}")
    used_vertices_mm = pred.vertices_world_mm[np.unique(pred.faces)]
    vertex_to_gt_mm = point_to_mesh_distance_mm(used_vertices_mm, gt)
    pred_to_gt_mm = point_to_mesh_distance_mm(sample_surface(pred, n_samples, seed), gt)
    gt_to_pred_mm = point_to_mesh_distance_mm(sample_surface(gt, n_samples, seed + 1), pred)
    names = surface_metric_names(completion_mm)
    values = (
        vertex_to_gt_mm.mean(),
        0.5 * (pred_to_gt_mm.mean() + gt_to_pred_mm.mean()),
        np.percentile(pred_to_gt_mm, 90),
        np.mean(gt_to_pred_mm <= completion_mm),
        max(np.percentile(pred_to_gt_mm, 95), np.percentile(gt_to_pred_mm, 95)),
        np.mean(pred_to_gt_mm > completion_mm),
    )
    return {name: float(value) for name, value in zip(names, values)}
