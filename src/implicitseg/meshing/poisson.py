"""Dense point cloud → triangle mesh (NUDF spec, "Meshing"), in world LPS mm throughout.

Steps (each parameter is a :class:`~implicitseg.config.MeshingConfig` value):

1. Poisson-disk subsample to about ``n_subsample`` points (seeded, see :func:`poisson_disk_subsample`).
2. Normals from ``normal_neighbours`` neighbours (MeshLab's PCA normals), then **consistently oriented**:
   a minimum spanning tree over the symmetric kNN graph with Hoppe's weight ``1 - |n_i · n_j|`` carries one
   orientation from a root to every point, passing first through pairs whose normals are near parallel.
   "Outward": an open surface has no inside, so each connected part of the cloud is flipped as a whole so
   that its normals point away from the cloud's centroid on average (``Σ n_i · (p_i - centroid) ≥ 0``). For
   a closed surface that is the usual outward normal; for a cup-like open surface (the LAA cut at its
   ostium) it is the convex side. Only face orientation depends on this choice, not the geometry.
3. Screened Poisson reconstruction at octree depth ``poisson_depth``. MeshLab works in the cloud's own
   coordinates; world mm can sit hundreds of mm from the origin, so the cloud is centred first (float
   precision) and moved back afterwards. The octree cube is 1.1 × the cloud's bounding cube (MeshLab's
   ``scale``), so depth ``d`` gives cells of about ``1.1 · largest extent / 2^d`` mm, whatever the units.
4. Keep the connected components that ``components`` selects (faces connect through shared vertices;
   :func:`~implicitseg.meshing.components.select_components`): ``largest`` is the paper's largest component,
   ``supported`` every part whose faces the field supports (given ``distance_mm_at``, the field's distance at
   the vertices; without it every face counts), so a fragment cannot win over the surface the field found.
5. Delete every triangle with fewer than ``trim_min_points`` points of the FULL dense cloud within
   ``trim_support_mm`` of its centroid: this re-opens the surface where Poisson closed it. Components are
   selected again right after trimming, so step 6 does not fill the outlines of fragments that its final
   selection would drop anyway.
6. Close holes smaller than ``close_holes_mm``, then select components again. MeshLab measures a
   hole by the number of edges on its boundary, so the spec's "size" is read as the hole's diameter and a
   hole of diameter ``d`` mm is taken to have a perimeter of ``π d`` mm:
   ``max_hole_edges = ceil(π · close_holes_mm / mean_edge_length_mm)``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np
import point_cloud_utils as pcu
import pymeshlab
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import breadth_first_order, connected_components, minimum_spanning_tree
from scipy.spatial import cKDTree

from implicitseg.config import MeshingConfig
from implicitseg.errors import InputError
from implicitseg.io.meshes import Mesh
from implicitseg.meshing.components import boundary_edges, compact, select_components

MIN_POINTS = 100
"""Fewer dense points than this (or than ``normal_neighbours + 1``) cannot define a surface: InputError."""

SUBSAMPLE_POOL_FACTOR = 20
"""Poisson-disk sampling picks its samples from a uniform random pool of ``20 · n_subsample`` dense points
(all of them when the cloud is smaller): 20 candidates per sample keeps the spacing even, and a pool of
200k instead of a 1M cloud is ~5× faster."""

SUBSAMPLE_COUNT_TOLERANCE = 0.05
"""When the first Poisson-disk pass misses ``n_subsample`` by more than this fraction, a second pass runs
with the radius rescaled by ``sqrt(count / target)`` (sample count ∝ radius⁻² on a surface)."""

SPACING_PROBE_POINTS = 20_000
"""Pool points whose nearest-neighbour spacing estimates the surface area for the first radius."""

POISSON_DISK_YIELD = 1.6
"""Measured ``area / (count · r²)`` of point-cloud-utils' Poisson-disk elimination on dense sphere clouds."""

HOPPE_WEIGHT_FLOOR = 1e-3
"""Added to the MST edge weights ``1 - |n_i · n_j|`` so parallel normals still count as an edge (SciPy's
sparse arithmetic drops zero entries, and its graph routines read a missing entry as no edge)."""


def mesh_from_point_cloud(points_world_mm: np.ndarray, config: MeshingConfig, *, seed: int = 0, threads: int = 1,
                          distance_mm_at: Callable[[np.ndarray], np.ndarray] | None = None) -> tuple[Mesh, dict]:
    """Reconstruct a (possibly open) surface from a dense point cloud.

    ``points_world_mm``: (N, 3) float, world LPS mm. Returns the mesh in world LPS mm and a dict of plain
    numbers: ``*_s`` timings per step and ``total_s`` (seconds), ``n_dense``, ``n_subsample``,
    ``n_poisson_faces``, ``n_trimmed_faces`` (deleted by step 5), ``max_hole_edges``, ``n_vertices``, ``n_faces``,
    ``n_boundary_edges``, and ``components_{after_poisson,after_trim,final}`` (what each selection kept and
    dropped). ``distance_mm_at``: (P, 3) world mm → (P,) the field's distance in mm, for step 4's support. ``seed``
    fixes step 1 (pool and sampler). ``threads`` is screened Poisson's thread count: with 1, the same cloud, config
    and seed give a bit-identical mesh; more threads are faster on idle cores but change the last float bits and
    slow down badly on busy ones (OpenMP). Raises :class:`InputError` for a bad cloud or configuration, or when no
    surface remains.
    """
    _check_config(config)
    points = _check_points(points_world_mm, config)
    info: dict = {"n_dense": len(points)}
    start = time.perf_counter()
    centre_world_mm = points.mean(axis=0)
    points_centred_mm = points - centre_world_mm

    def keep_components(vertices_mm: np.ndarray, faces: np.ndarray, step: str) -> tuple[np.ndarray, np.ndarray]:
        distance_mm = (None if distance_mm_at is None or len(faces) == 0
                       else distance_mm_at(vertices_mm + centre_world_mm))
        vertices_mm, faces, selection = select_components(vertices_mm, faces, config.components, distance_mm)
        info[f"components_{step}"] = selection.to_json()
        return vertices_mm, faces

    tic = time.perf_counter()
    subsample_mm = poisson_disk_subsample(points_centred_mm, config.n_subsample, seed=seed)
    info["subsample_s"] = time.perf_counter() - tic
    info["n_subsample"] = len(subsample_mm)
    if len(subsample_mm) <= config.normal_neighbours:
        raise InputError(f"meshing produced no surface: Poisson-disk subsampling kept only {len(subsample_mm)} points")

    tic = time.perf_counter()
    normals = estimate_normals(subsample_mm, config.normal_neighbours)
    info["normals_s"] = time.perf_counter() - tic
    tic = time.perf_counter()
    normals = orient_normals(subsample_mm, normals, config.normal_neighbours)
    info["orient_s"] = time.perf_counter() - tic

    tic = time.perf_counter()
    vertices_mm, faces = screened_poisson(subsample_mm, normals, config.poisson_depth, threads=threads)
    info["poisson_s"] = time.perf_counter() - tic
    info["n_poisson_faces"] = len(faces)
    vertices_mm, faces = keep_components(vertices_mm, faces, "after_poisson")
    if len(faces) == 0:
        raise InputError("meshing produced no surface: screened Poisson returned no triangles the field supports")

    tic = time.perf_counter()
    tree = cKDTree(points_centred_mm, balanced_tree=False, compact_nodes=False)  # ~40 % faster to build
    keep = face_support(vertices_mm, faces, tree, config.trim_support_mm) >= config.trim_min_points
    info["n_trimmed_faces"] = int((~keep).sum())
    vertices_mm, faces = keep_components(*compact(vertices_mm, faces[keep]), "after_trim")
    info["trim_s"] = time.perf_counter() - tic
    if len(faces) == 0:
        raise InputError(
            f"meshing produced no surface: no triangle has {config.trim_min_points} dense points within "
            f"{config.trim_support_mm} mm of its centroid (is the cloud too sparse for trim_support_mm?)"
        )

    tic = time.perf_counter()
    info["max_hole_edges"] = max_hole_edges(vertices_mm, faces, config.close_holes_mm)
    vertices_mm, faces = close_small_holes(vertices_mm, faces, info["max_hole_edges"])
    vertices_mm, faces = keep_components(vertices_mm, faces, "final")
    info["close_holes_s"] = time.perf_counter() - tic

    mesh = Mesh(vertices_mm + centre_world_mm, faces)
    info["n_vertices"] = len(mesh.vertices_world_mm)
    info["n_faces"] = len(mesh.faces)
    info["n_boundary_edges"] = len(boundary_edges(mesh.faces))
    info["total_s"] = time.perf_counter() - start
    return mesh, info


def _check_config(config: MeshingConfig) -> None:
    checks = [
        ("n_subsample", config.n_subsample >= 1),
        ("normal_neighbours", config.normal_neighbours >= 3),
        ("poisson_depth", 1 <= config.poisson_depth <= 14),
        ("trim_support_mm", config.trim_support_mm > 0),
        ("trim_min_points", config.trim_min_points >= 0),
        ("close_holes_mm", config.close_holes_mm >= 0),
    ]
    for name, ok in checks:
        if not ok:
            raise InputError(f"meshing config: invalid {name}={getattr(config, name)!r}")


def _check_points(points_world_mm: np.ndarray, config: MeshingConfig) -> np.ndarray:
    points = np.asarray(points_world_mm, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 3:
        raise InputError(f"point cloud must have shape (N, 3), got {points.shape}")
    n_bad = int((~np.all(np.isfinite(points), axis=1)).sum())
    if n_bad:
        raise InputError(f"point cloud has {n_bad} points with NaN or infinite coordinates")
    needed = max(MIN_POINTS, config.normal_neighbours + 1)
    if len(points) < needed:
        raise InputError(f"point cloud has {len(points)} points; meshing needs at least {needed}")
    if np.ptp(points, axis=0).max() <= 0:
        raise InputError("point cloud has zero extent (all points coincide)")
    return points


def poisson_disk_subsample(points_mm: np.ndarray, n_target: int, *, seed: int = 0) -> np.ndarray:
    """(M, 3) evenly spaced subset of ``points_mm`` (N, 3), M ≈ ``n_target`` (usually within 5 %), same frame.

    Poisson-disk elimination with point-cloud-utils (no two kept points closer than a radius r), seeded, so
    the same cloud and ``seed`` give the same subset. (MeshLab's sampler also works on a vertex-only mesh,
    but its random state is not exposed: repeated calls give different subsets.) Samples come from a random
    pool of :data:`SUBSAMPLE_POOL_FACTOR` · ``n_target`` points. The first radius comes from the surface
    area estimated from nearest-neighbour spacing (for a uniform density ρ per mm², the mean spacing is
    1 / (2√ρ)) and the empirical yield ``count ≈ area / (1.6 r²)``; a second pass rescales it by
    ``sqrt(count / n_target)`` when the count misses by more than :data:`SUBSAMPLE_COUNT_TOLERANCE`.
    Returns every point when N ≤ ``n_target``.
    """
    if len(points_mm) <= n_target:
        return points_mm.copy()
    rng = np.random.default_rng(seed)
    pool_size = min(len(points_mm), SUBSAMPLE_POOL_FACTOR * n_target)
    pool = points_mm[rng.choice(len(points_mm), pool_size, replace=False)]
    probe = pool[: min(pool_size, SPACING_PROBE_POINTS)]  # the pool is already in random order
    spacing_mm, _ = cKDTree(probe).query(probe, k=2)
    area_mm2 = len(probe) * 4.0 * float(np.mean(spacing_mm[:, 1])) ** 2
    radius_mm = math.sqrt(area_mm2 / (POISSON_DISK_YIELD * n_target))
    if not radius_mm > 0:
        raise InputError("point cloud has duplicate points only; cannot subsample it")
    kept = _poisson_disk_indices(pool, radius_mm, seed)
    if abs(len(kept) - n_target) > SUBSAMPLE_COUNT_TOLERANCE * n_target:
        kept = _poisson_disk_indices(pool, radius_mm * math.sqrt(len(kept) / n_target), seed)
    return pool[kept]


def _poisson_disk_indices(points_mm: np.ndarray, radius_mm: float, seed: int) -> np.ndarray:
    # pcu reads random_seed=0 as "seed from the clock": shift by one to stay reproducible.
    points = np.ascontiguousarray(points_mm, dtype=np.float64)
    return np.asarray(pcu.downsample_point_cloud_poisson_disk(points, radius_mm, random_seed=seed + 1))


def estimate_normals(points_mm: np.ndarray, k: int) -> np.ndarray:
    """(N, 3) unit normals of the plane fitted to each point's ``k`` nearest neighbours (MeshLab), signs arbitrary."""
    meshes = pymeshlab.MeshSet()
    meshes.add_mesh(pymeshlab.Mesh(vertex_matrix=points_mm))
    meshes.compute_normal_for_point_clouds(k=k, smoothiter=0)
    normals = np.asarray(meshes.current_mesh().vertex_normal_matrix(), dtype=np.float64)
    return normals / np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)


def orient_normals(points_mm: np.ndarray, normals: np.ndarray, k: int) -> np.ndarray:
    """Flip normals (N, 3) into one consistent orientation; see the module docstring for "outward".

    Minimum spanning tree over the symmetric ``k``-nearest-neighbour graph, weights ``1 - |n_i · n_j|``
    (Hoppe et al. 1992), traversed breadth-first from each part's point farthest from the centroid; a child
    is flipped when it disagrees with its (already oriented) parent. Returns a new (N, 3) array.
    """
    n_points = len(points_mm)
    k = min(k, n_points - 1)
    _, neighbours = cKDTree(points_mm).query(points_mm, k=k + 1)
    rows = np.repeat(np.arange(n_points), k)
    cols = neighbours[:, 1:].reshape(-1)
    weights = 1.0 - np.abs(np.einsum("ij,ij->i", normals[rows], normals[cols])) + HOPPE_WEIGHT_FLOOR
    graph = coo_matrix((weights, (rows, cols)), shape=(n_points, n_points)).tocsr()
    graph = graph.maximum(graph.T)
    tree = minimum_spanning_tree(graph)
    n_parts, part_of = connected_components(tree, directed=False)
    oriented = normals.copy()
    centroid_mm = points_mm.mean(axis=0)
    radial_mm = points_mm - centroid_mm
    for part in range(n_parts):
        members = np.flatnonzero(part_of == part)
        root = int(members[np.argmax(np.einsum("ij,ij->i", radial_mm[members], radial_mm[members]))])
        order, parents = breadth_first_order(tree, root, directed=False, return_predecessors=True)
        order_list = order[1:].tolist()
        parent_list = parents[order[1:]].tolist()
        for child, parent in zip(order_list, parent_list):
            if oriented[child] @ oriented[parent] < 0:
                oriented[child] = -oriented[child]
        if np.einsum("ij,ij->", oriented[members], radial_mm[members]) < 0:
            oriented[members] = -oriented[members]
    return oriented


def screened_poisson(points_mm: np.ndarray, normals: np.ndarray, depth: int, *,
                     threads: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Screened Poisson surface (MeshLab) of oriented points: vertices (V, 3) in the points' frame, faces (F, 3)."""
    meshes = pymeshlab.MeshSet()
    meshes.add_mesh(pymeshlab.Mesh(vertex_matrix=points_mm, v_normals_matrix=normals))
    meshes.generate_surface_reconstruction_screened_poisson(depth=depth, threads=max(1, threads))
    result = meshes.current_mesh()
    vertices = np.asarray(result.vertex_matrix(), dtype=np.float64)
    return compact(vertices, np.asarray(result.face_matrix(), dtype=np.int64))


def face_support(vertices_mm: np.ndarray, faces: np.ndarray, tree: cKDTree, radius_mm: float) -> np.ndarray:
    """(F,) number of the tree's points within ``radius_mm`` of each face centroid."""
    centroids_mm = vertices_mm[faces].mean(axis=1)
    return np.asarray(tree.query_ball_point(centroids_mm, r=radius_mm, return_length=True, workers=-1))


def max_hole_edges(vertices_mm: np.ndarray, faces: np.ndarray, hole_diameter_mm: float) -> int:
    """Boundary edges of a hole of diameter ``hole_diameter_mm``: ``ceil(π d / mean edge length)``."""
    if hole_diameter_mm <= 0:
        return 0
    corners = vertices_mm[faces]
    lengths = np.linalg.norm(corners - np.roll(corners, 1, axis=1), axis=2)
    return int(math.ceil(math.pi * hole_diameter_mm / max(float(lengths.mean()), 1e-12)))


def close_small_holes(vertices_mm: np.ndarray, faces: np.ndarray, max_edges: int) -> tuple[np.ndarray, np.ndarray]:
    """Fill every hole whose boundary has fewer than ``max_edges`` edges (MeshLab); returns vertices, faces.

    Non-manifold vertices left by trimming are split first (MeshLab's hole filler needs a 2-manifold);
    splitting duplicates a vertex in place, the surface does not move.
    """
    if max_edges < 3 or len(boundary_edges(faces)) == 0:
        return vertices_mm, faces
    meshes = pymeshlab.MeshSet()
    meshes.add_mesh(pymeshlab.Mesh(vertex_matrix=vertices_mm, face_matrix=faces))
    meshes.meshing_repair_non_manifold_edges()
    meshes.meshing_repair_non_manifold_vertices()
    meshes.meshing_close_holes(maxholesize=max_edges)
    meshes.meshing_remove_unreferenced_vertices()
    result = meshes.current_mesh()
    return np.asarray(result.vertex_matrix(), dtype=np.float64), np.asarray(result.face_matrix(), dtype=np.int64)
