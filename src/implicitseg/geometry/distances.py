"""Exact distances from points to a triangle mesh (point-cloud-utils, AABB tree in C++).

All functions take the mesh as plain arrays, ``vertices_world_mm`` (V, 3) and ``faces`` (F, 3), so this
layer does not depend on ``io``. Distances come back in the unit of the vertices: world mm when the
points and vertices are world LPS mm (divide by ``Roi.half_size_mm`` for unit lengths).
"""

from __future__ import annotations

import numpy as np
import point_cloud_utils as pcu

from implicitseg.geometry.frames import triangle_arrays


def mesh_arrays(vertices_world_mm: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Contiguous float64 (V, 3) vertices and int64 (F, 3) faces; a mesh without faces or with bad indices raises."""
    vertices, faces = triangle_arrays(vertices_world_mm, faces)
    if len(faces) == 0:
        raise ValueError("distance to a mesh with no faces is undefined")
    return np.ascontiguousarray(vertices), np.ascontiguousarray(faces)


def _points_array(points_world_mm: np.ndarray) -> np.ndarray:
    points = np.ascontiguousarray(points_world_mm, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"points must have shape (N, 3), got {points.shape}")
    if not np.all(np.isfinite(points)):
        raise ValueError("points hold NaN or infinite coordinates")
    return points


def _spatial_order(points: np.ndarray, bits: int = 10) -> np.ndarray:
    """Permutation (N,) putting points in Morton (Z-curve) order: neighbouring queries then walk the same AABB
    branches, which makes the C++ queries ~1.5× faster (measured: 110k samples, 19k faces, 1.1 → 0.7 s CPU)."""
    extent = max(float(np.ptp(points, axis=0).max()), 1e-12)
    cells = np.floor((points - points.min(axis=0)) / extent * (2**bits - 1)).astype(np.uint64)
    code = np.zeros(len(points), dtype=np.uint64)
    for bit in range(bits):
        for axis in range(3):
            code |= ((cells[:, axis] >> np.uint64(bit)) & np.uint64(1)) << np.uint64(3 * bit + axis)
    return np.argsort(code, kind="stable")


def closest_points_on_mesh(points_world_mm: np.ndarray, vertices_world_mm: np.ndarray,
                           faces: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact closest point on the mesh for every query point (point-to-triangle, not point-to-vertex).

    ``points_world_mm``: (N, 3) world LPS mm. Returns ``distance_mm`` (N,) float64, ``closest_world_mm``
    (N, 3) float64 world LPS mm, ``face_index`` (N,) int64 (the face holding the closest point).
    """
    vertices, faces = mesh_arrays(vertices_world_mm, faces)
    points = _points_array(points_world_mm)
    if len(points) == 0:
        return np.zeros(0), np.zeros((0, 3)), np.zeros(0, dtype=np.int64)
    order = _spatial_order(points)
    distance_mm = np.empty(len(points))
    face_index = np.empty(len(points), dtype=np.int64)
    barycentric = np.empty((len(points), 3))
    distance_mm[order], face_index[order], barycentric[order] = pcu.closest_points_on_mesh(
        np.ascontiguousarray(points[order]), vertices, faces)
    closest_world_mm = np.einsum("nk,nkd->nd", barycentric, vertices[faces[face_index]])
    return distance_mm, closest_world_mm, face_index


def unsigned_distance(points: np.ndarray, vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(N,) float64 exact unsigned distance from (N, 3) points to the mesh surface, points and mesh in one frame
    (world LPS mm, or ISMM's canonical frame) and the distance in its unit.

    Works for open and non-manifold meshes (it is a distance to the union of the triangles).
    """
    return closest_points_on_mesh(points, vertices, faces)[0]


def signed_distance(points: np.ndarray, vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(N,) float64 signed distance, negative inside, positive outside, magnitude exact; points and mesh in one
    frame (world LPS mm, or ISMM's canonical frame) and the distance in its unit.

    Inside/outside comes from the generalised winding number (fast winding numbers), so it is robust to
    small holes and open meshes; for a closed mesh with outward normals it matches the usual convention.
    """
    vertices, faces = mesh_arrays(vertices, faces)
    points = _points_array(points)
    if len(points) == 0:
        return np.zeros(0)
    order = _spatial_order(points)
    signed = np.empty(len(points))
    signed[order] = pcu.signed_distance_to_mesh(np.ascontiguousarray(points[order]), vertices, faces)[0]
    return signed
