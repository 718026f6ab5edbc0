"""Open surfaces straight from an unsigned distance field's narrow band (MeshUDF, Guillard et al., ECCV 2022).

An unsigned distance ``f`` has no sign to march on, but its gradient flips across the surface: two grid corners
whose gradients point opposite ways lie on opposite sides of it. Here

1. every corner of the band gets a **pseudo-sign**: over the graph of the band cells' edges, a minimum spanning tree
   with Hoppe's weight ``1 - |cos(∇f_a, ∇f_b)|`` (confident edges first) carries one sign from a root to every
   corner, flipping it across each edge whose gradients disagree (``∇f_a · ∇f_b < 0``). One sign per corner makes
   neighbouring cells agree, so the marched surface has no cracks between them;
2. marching cubes (scikit-image's Lewiner tables) runs on ``pseudo-sign · f`` over the band's cells only;
3. faces are removed where no surface is: those with a vertex on an edge whose corners' gradients agree (the
   pseudo-sign changed there without crossing a surface: the seam that runs off an open boundary), and those whose
   vertices or edge midpoints are farther than ``max_face_distance`` from the surface (they bridge a gap where the
   gradient flips without a surface: between two walls, on the medial axis). Open boundaries stay open; no Poisson.

Everything here is in the frame of the band's grid (the ROI's unit frame for NUDF: ``[-1, 1]³``, distances in unit
lengths); the caller maps vertices to world mm.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import breadth_first_order, connected_components, minimum_spanning_tree
from skimage.measure import marching_cubes

from implicitseg.meshing.components import compact
from implicitseg.meshing.poisson import HOPPE_WEIGHT_FLOOR

CORNER_OFFSETS = np.array([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)], dtype=np.int64)
"""(8, 3) offsets of a cell's corners from its lower corner, in grid steps (x, y, z)."""

CELL_EDGES = np.array([[a, b] for a in range(8) for b in range(a + 1, 8)
                       if np.abs(CORNER_OFFSETS[a] - CORNER_OFFSETS[b]).sum() == 1], dtype=np.int64)
"""(12, 2) pairs of :data:`CORNER_OFFSETS` rows joined by a cell edge."""

BLOCK_CELLS = 64
"""Marching cubes runs on dense blocks of at most this many cells per side (memory stays small at fine cells)."""

SEAM_MIN_SLOPE = 0.5
"""A seam needs both corners' gradients at least this steep (an exact distance field's is 1): in the flat trough of a
learned field's zero level the gradients' directions are noise, and agreeing ones there are no sign of a seam."""

VERTEX_MERGE_CELLS = 1e-4
"""Vertices from neighbouring blocks closer than this (in cells) are one vertex."""


@dataclass
class DistanceBand:
    """The cells of a regular grid near a distance field's zero level, with the field at their corners.

    The grid has ``cells_per_side`` cells along each axis over ``[lower, lower + cells_per_side · cell_size]³`` in
    the field's frame; corner ``(i, j, k)`` lies at ``lower + (i, j, k) · cell_size``, axes in (x, y, z) order.
    """

    cells_per_side: int
    cell_size: float
    lower: float
    cells_ijk: np.ndarray
    """(C, 3) int64 lower-corner indices of the band's cells."""
    corners_ijk: np.ndarray
    """(K, 3) int64 indices of every corner of those cells, each once."""
    distances: np.ndarray
    """(K,) float the field at ``corners_ijk`` (≥ 0)."""
    gradients: np.ndarray
    """(K, 3) float the field's gradient at ``corners_ijk``."""

    def corner_points(self) -> np.ndarray:
        """(K, 3) float64 positions of the corners in the field's frame."""
        return self.lower + self.corners_ijk.astype(np.float64) * self.cell_size

    def corner_rows(self, corners_ijk: np.ndarray) -> np.ndarray:
        """Rows of :attr:`corners_ijk` holding the corners ``(..., 3)`` (every one must be a band corner)."""
        keys = corner_keys(self.corners_ijk, self.cells_per_side)
        order = np.argsort(keys)
        return order[np.searchsorted(keys, corner_keys(corners_ijk, self.cells_per_side), sorter=order)]


def corner_keys(corners_ijk: np.ndarray, cells_per_side: int) -> np.ndarray:
    """(...,) int64 linear index of corners ``(..., 3)`` on a grid of ``cells_per_side`` cells (+1 corners) per side."""
    side = np.int64(cells_per_side + 1)
    return (corners_ijk[..., 0] * side + corners_ijk[..., 1]) * side + corners_ijk[..., 2]


def unique_sorted(keys: np.ndarray) -> np.ndarray:
    """Sorted unique values of a 1-D integer array (``np.unique`` without return values takes a hash path in NumPy 2.4
    that is ~80× slower on a million random int64 keys)."""
    ordered = np.sort(keys)
    return ordered[np.concatenate([[True], ordered[1:] != ordered[:-1]])] if len(ordered) else ordered


def pseudo_signs(band: DistanceBand) -> tuple[np.ndarray, int]:
    """(K,) ±1 pseudo-sign of every band corner and the number of connected parts of the band (each signed alone).

    See the module docstring, step 1. Corners with a zero gradient join by the floor weight and keep their parent's
    sign.
    """
    cell_corners = band.corner_rows(band.cells_ijk[:, None, :] + CORNER_OFFSETS[None])  # (C, 8)
    n_corners = len(band.corners_ijk)
    pairs = np.sort(cell_corners[:, CELL_EDGES].reshape(-1, 2), axis=1)
    edge_keys = unique_sorted(pairs[:, 0] * np.int64(n_corners) + pairs[:, 1])  # each edge once
    edges = np.stack([edge_keys // n_corners, edge_keys % n_corners], axis=1)
    unit = band.gradients / np.maximum(np.linalg.norm(band.gradients, axis=1, keepdims=True), 1e-12)
    cosine = np.einsum("ij,ij->i", unit[edges[:, 0]], unit[edges[:, 1]])
    weights = 1.0 - np.abs(cosine) + HOPPE_WEIGHT_FLOOR
    graph = coo_matrix((weights, (edges[:, 0], edges[:, 1])), shape=(n_corners, n_corners)).tocsr()
    tree = minimum_spanning_tree(graph).tocoo()
    n_parts, part_of = connected_components(tree, directed=False)
    # one breadth-first pass from a virtual node joined to the first corner of every part
    first_of_part = np.unique(part_of, return_index=True)[1]
    rows = np.concatenate([tree.row, np.full(n_parts, n_corners)])
    cols = np.concatenate([tree.col, first_of_part])
    forest = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(n_corners + 1, n_corners + 1)).tocsr()
    _, predecessors = breadth_first_order(forest, n_corners, directed=False, return_predecessors=True)
    parent = predecessors[:n_corners].copy()
    roots = parent == n_corners
    parent[roots] = np.flatnonzero(roots)
    to_parent = np.where(np.einsum("ij,ij->i", unit, unit[parent]) < 0, -1, 1).astype(np.int8)
    to_parent[roots] = 1
    return _path_products(to_parent, parent), int(n_parts)


def _path_products(to_parent: np.ndarray, parent: np.ndarray) -> np.ndarray:
    """(K,) product of ``to_parent`` along each node's path to its root (``parent[root] == root``, ``to_parent`` of a
    root is 1), by pointer jumping: after round r every node holds the product over its first 2^r ancestors."""
    signs = to_parent.astype(np.int8).copy()
    ancestor = parent.copy()
    while True:
        step = ancestor[ancestor]
        if np.array_equal(step, ancestor):
            return signs
        signs = signs * signs[ancestor]
        ancestor = step


def extract_open_surface(band: DistanceBand, distance_at: Callable[[np.ndarray], np.ndarray],
                         max_face_distance: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """Triangle mesh of the field's zero level from its narrow band (module docstring, steps 1–3).

    ``distance_at``: (P, 3) points in the band's frame → (P,) field distances (the removal test of step 3 asks it at
    the vertices and edge midpoints). ``max_face_distance`` in the field's units. Returns vertices (V, 3) float64 in
    the band's frame, faces (F, 3) int64, the field at the vertices (V,), and plain-number stats: ``*_s`` timings,
    ``n_band_parts``, ``n_marched_faces``, ``n_seam_faces``, ``n_removed_faces`` (seams included),
    ``n_field_queries``. No faces → empty arrays.
    """
    stats: dict = {}
    tic = time.perf_counter()
    signs, stats["n_band_parts"] = pseudo_signs(band)
    stats["pseudo_sign_s"] = time.perf_counter() - tic

    tic = time.perf_counter()
    vertices_cells, faces = _march_band(band, signs.astype(np.float64) * band.distances)
    stats["marching_cubes_s"] = time.perf_counter() - tic
    stats["n_marched_faces"] = len(faces)
    if len(faces) == 0:
        stats.update(n_seam_faces=0, n_removed_faces=0, n_field_queries=0, face_test_s=0.0)
        return np.zeros((0, 3)), np.zeros((0, 3), np.int64), np.zeros(0), stats

    tic = time.perf_counter()
    seam = _seam_vertices(band, vertices_cells)[faces].any(axis=1)
    stats["n_seam_faces"] = int(seam.sum())
    vertices = band.lower + vertices_cells * band.cell_size
    edges, face_edges = _face_edges(faces)
    queries = np.concatenate([vertices, vertices[edges].mean(axis=1)])
    distances = np.asarray(distance_at(queries), dtype=np.float64)
    stats["n_field_queries"] = len(queries)
    vertex_distance, edge_distance = distances[: len(vertices)], distances[len(vertices):]
    worst = np.maximum(vertex_distance[faces].max(axis=1), edge_distance[face_edges].max(axis=1))
    keep = (worst <= max_face_distance) & ~seam
    stats["n_removed_faces"] = int((~keep).sum())
    stats["face_test_s"] = time.perf_counter() - tic
    used = np.zeros(len(vertices), dtype=bool)
    used[faces[keep].reshape(-1)] = True
    vertices_kept, faces_kept = compact(vertices, faces[keep])
    return vertices_kept, faces_kept, vertex_distance[used], stats


def snap_to_minimum(vertices: np.ndarray, faces: np.ndarray, distance_at: Callable[[np.ndarray], np.ndarray],
                    reach: float, samples: int) -> tuple[np.ndarray, np.ndarray]:
    """Each vertex moved along its normal to where the field is smallest within ``reach`` either side.

    Marching cubes places a vertex where the linear interpolation of ``±f`` between two corners crosses zero; where a
    learned field's zero level is a soft trough that interpolation is pulled toward the edge's middle. Here the field
    is sampled at ``samples`` points evenly spaced on the vertex's normal (area-weighted face normals) from ``-reach``
    to ``+reach``, and the vertex goes to the vertex of the parabola through the smallest sample and its neighbours
    (at the smallest sample where it lies at an end). ``vertices`` (V, 3) and ``reach`` in the band's frame;
    ``distance_at`` (P, 3) → (P,). Returns the moved vertices (V, 3) and the field there (V,); a vertex without a
    normal (on degenerate faces only) stays."""
    corners = vertices[faces]
    face_normals = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    normals = np.zeros_like(vertices)
    np.add.at(normals, faces.reshape(-1), np.repeat(face_normals, 3, axis=0))
    length = np.linalg.norm(normals, axis=1, keepdims=True)
    normals = np.where(length > 0, normals / np.maximum(length, 1e-300), 0.0)
    offsets = np.linspace(-reach, reach, samples)
    probes = vertices[:, None, :] + offsets[None, :, None] * normals[:, None, :]
    field = np.asarray(distance_at(probes.reshape(-1, 3)), dtype=np.float64).reshape(len(vertices), samples)
    best = field.argmin(axis=1)
    inner = np.clip(best, 1, samples - 2)  # the parabola's three samples; an end's minimum stays on its sample
    rows = np.arange(len(vertices))
    left, centre, right = field[rows, inner - 1], field[rows, inner], field[rows, inner + 1]
    curvature = left - 2 * centre + right
    fit = (best == inner) & (curvature > 0)
    shift = np.where(fit, 0.5 * (left - right) / np.where(fit, curvature, 1.0), 0.0)
    offset = offsets[best] + np.clip(shift, -1.0, 1.0) * (offsets[1] - offsets[0])
    moved = vertices + offset[:, None] * normals
    return moved, np.asarray(distance_at(moved), dtype=np.float64)


def _march_band(band: DistanceBand, pseudo_signed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Marching cubes of ``pseudo_signed`` (K,) at 0 over the band's cells, in dense blocks of at most
    :data:`BLOCK_CELLS` cells per side; vertices (V, 3) in grid steps from the grid's lower corner, faces (F, 3)."""
    block_of = band.cells_ijk // BLOCK_CELLS
    blocks, cell_block = np.unique(block_of, axis=0, return_inverse=True)
    cell_block = cell_block.reshape(-1)
    all_vertices, all_faces, n_vertices = [], [], 0
    for index, block in enumerate(blocks):
        origin = block * BLOCK_CELLS
        cells = band.cells_ijk[cell_block == index] - origin
        size = np.minimum(BLOCK_CELLS, band.cells_per_side - origin) + 1
        in_block = np.all((band.corners_ijk >= origin) & (band.corners_ijk < origin + size), axis=1)
        volume = np.ones(tuple(size), dtype=np.float64)
        local = band.corners_ijk[in_block] - origin
        volume[local[:, 0], local[:, 1], local[:, 2]] = pseudo_signed[in_block]
        # scikit-image marches cell [c, c + 1] where mask[c + 1] holds (tests/meshing/test_udf_mc.py pins this)
        mask = np.zeros(tuple(size), dtype=bool)
        mask[cells[:, 0] + 1, cells[:, 1] + 1, cells[:, 2] + 1] = True
        if volume.min() >= 0.0:  # every corner on one side (non-band corners hold +1)
            continue
        try:
            vertices, faces, _, _ = marching_cubes(volume, level=0.0, mask=mask, allow_degenerate=False)
        except RuntimeError:  # no sign change inside the masked cells
            continue
        all_vertices.append(vertices.astype(np.float64) + origin)
        all_faces.append(faces.astype(np.int64) + n_vertices)
        n_vertices += len(vertices)
    if not all_faces:
        return np.zeros((0, 3)), np.zeros((0, 3), np.int64)
    vertices = np.concatenate(all_vertices)
    faces = np.concatenate(all_faces)
    if len(blocks) > 1:  # blocks share the corners on their common faces: one vertex per position
        _, first, inverse = np.unique(np.round(vertices / VERTEX_MERGE_CELLS).astype(np.int64), axis=0,
                                      return_index=True, return_inverse=True)
        vertices, faces = vertices[first], inverse.reshape(-1)[faces]
        faces = faces[(faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 0] != faces[:, 2])]
    return vertices, faces


def _seam_vertices(band: DistanceBand, vertices_cells: np.ndarray) -> np.ndarray:
    """(V,) True where a marched vertex sits on a grid edge whose corners' gradients agree (``∇f_a · ∇f_b > 0``)
    and are steep (:data:`SEAM_MIN_SLOPE`): the pseudo-sign changed there without the field crossing a surface (the seam
    that runs off an open boundary).
    Vertices on a corner are never seams. ``vertices_cells``: (V, 3) in grid steps from the grid's lower corner."""
    offset = vertices_cells - np.round(vertices_cells)
    axis = np.argmax(np.abs(offset), axis=1)
    on_edge = np.abs(offset[np.arange(len(offset)), axis]) > 1e-6
    lower = np.round(vertices_cells).astype(np.int64)
    rows = np.arange(len(lower))
    lower[rows, axis] = np.floor(vertices_cells[rows, axis]).astype(np.int64)
    upper = lower.copy()
    upper[rows, axis] += 1
    gradient_lower, gradient_upper = band.gradients[band.corner_rows(lower)], band.gradients[band.corner_rows(upper)]
    agree = np.einsum("ij,ij->i", gradient_lower, gradient_upper) > 0
    steep = np.minimum(np.linalg.norm(gradient_lower, axis=1), np.linalg.norm(gradient_upper, axis=1)) > SEAM_MIN_SLOPE
    return on_edge & agree & steep


def _face_edges(faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unique edges (E, 2) of ``faces`` (F, 3) and, per face, the rows of its three edges (F, 3)."""
    pairs = np.sort(np.stack([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]], axis=1).reshape(-1, 2), axis=1)
    edges, inverse = np.unique(pairs, axis=0, return_inverse=True)
    return edges, inverse.reshape(-1, 3)
