"""Connected parts of a triangle mesh, and which of them a prediction keeps.

Faces are connected through shared vertices. NUDF claims disjoint open surfaces, so the default rule keeps every
part the distance field supports, not only the largest one: a fragment must never win over the surface the field
found (:func:`select_components`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from implicitseg.config import ComponentConfig
from implicitseg.config.nudf import COMPONENT_RULES
from implicitseg.errors import InputError



@dataclass
class ComponentSelection:
    """What :func:`select_components` kept and dropped (areas in mm² of the mesh's frame)."""

    rule: str
    n_kept: int
    area_kept_mm2: float
    n_dropped: int
    area_dropped_mm2: float

    def to_json(self) -> dict:
        """Plain numbers for prediction.json."""
        return asdict(self)


def compact(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drop vertices no face uses; returns (V', 3) vertices and re-indexed (F, 3) faces."""
    used = np.zeros(len(vertices), dtype=bool)
    used[faces.reshape(-1)] = True
    new_index = np.cumsum(used) - 1
    return vertices[used], new_index[faces].reshape(-1, 3)


def vertex_components(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(V,) connected-component label of each vertex (faces linked through shared vertices)."""
    n_vertices = len(vertices)
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]]])
    graph = coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n_vertices, n_vertices))
    return connected_components(graph, directed=False)[1]


def face_areas(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(F,) area of each triangle, in the square of the vertices' unit."""
    corners = vertices[faces]
    return 0.5 * np.linalg.norm(np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]), axis=1)


def largest_component(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Keep the connected component (faces linked through shared vertices) with the most faces."""
    if len(faces) == 0:
        return vertices[:0], faces
    face_label = vertex_components(vertices, faces)[faces[:, 0]]
    biggest = np.argmax(np.bincount(face_label))
    return compact(vertices, faces[face_label == biggest])


def supported_component(vertices: np.ndarray, faces: np.ndarray,
                        support_points: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Keep the connected component that the most ``support_points`` (K, 3), in the vertices' frame, lie nearest to
    (by nearest vertex): the surface the data is on, not a larger spurious one elsewhere. With no support points
    (None or K = 0), the largest component."""
    if len(faces) == 0 or support_points is None or len(support_points) == 0:
        return largest_component(vertices, faces)
    vertex_label = vertex_components(vertices, faces)
    used = np.unique(faces.reshape(-1))
    nearest = used[cKDTree(vertices[used]).query(np.asarray(support_points, dtype=np.float64))[1]]
    chosen = np.argmax(np.bincount(vertex_label[nearest]))
    return compact(vertices, faces[vertex_label[faces[:, 0]] == chosen])


def select_components(vertices_mm: np.ndarray, faces: np.ndarray, config: ComponentConfig,
                      vertex_distance_mm: np.ndarray | None = None,
                      ) -> tuple[np.ndarray, np.ndarray, ComponentSelection]:
    """Keep the components ``config.rule`` asks for (see :class:`~implicitseg.config.ComponentConfig`).

    ``vertices_mm`` (V, 3), ``faces`` (F, 3); ``vertex_distance_mm`` (V,): the field's distance at each vertex, or
    None when there is no field (every face then counts as supported). A face is supported when the mean distance
    at its vertices is ≤ ``config.max_mean_distance_mm``. Returns the kept vertices and faces (re-indexed; empty
    when nothing qualifies) and what was kept and dropped.
    """
    if config.rule not in COMPONENT_RULES:
        raise InputError(f"meshing.components.rule must be one of {list(COMPONENT_RULES)}, got {config.rule!r}")
    if len(faces) == 0:
        return vertices_mm[:0], faces, ComponentSelection(config.rule, 0, 0.0, 0, 0.0)
    face_label = vertex_components(vertices_mm, faces)[faces[:, 0]]
    labels, face_label = np.unique(face_label, return_inverse=True)
    area = face_areas(vertices_mm, faces)
    area_of = np.bincount(face_label, weights=area, minlength=len(labels))
    if config.rule == "all":
        keep = np.ones(len(labels), dtype=bool)
    elif config.rule == "largest":
        keep = np.zeros(len(labels), dtype=bool)
        keep[np.argmax(np.bincount(face_label, minlength=len(labels)))] = True
    else:
        supported = np.ones(len(faces), dtype=bool) if vertex_distance_mm is None else (
            np.asarray(vertex_distance_mm)[faces].mean(axis=1) <= config.max_mean_distance_mm)
        support_of = np.bincount(face_label, weights=area * supported, minlength=len(labels))
        needed = max(config.min_area_mm2, config.min_area_fraction * float(support_of.max()))
        keep = (support_of >= needed) & (support_of > 0)
    kept_faces = keep[face_label]
    selection = ComponentSelection(config.rule, int(keep.sum()), float(area_of[keep].sum()),
                                   int((~keep).sum()), float(area_of[~keep].sum()))
    if not kept_faces.any():
        return vertices_mm[:0], faces[:0], selection
    vertices_kept, faces_kept = compact(vertices_mm, faces[kept_faces])
    return vertices_kept, faces_kept, selection


def boundary_edges(faces: np.ndarray) -> np.ndarray:
    """(B, 2) sorted vertex pairs of edges used by exactly one face (empty for a closed surface)."""
    edges = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1)
    unique, counts = np.unique(edges, axis=0, return_counts=True)
    return unique[counts == 1]


def _boundary_loop_labels(faces: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Boundary edges (B, 2), the loop of each (B,), and the number of loops (connected parts of their graph)."""
    edges = boundary_edges(faces)
    if len(edges) == 0:
        return edges, np.zeros(0, dtype=np.int64), 0
    vertices, inverse = np.unique(edges.reshape(-1), return_inverse=True)
    pairs = inverse.reshape(-1, 2)
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(len(vertices), len(vertices)))
    n_loops, vertex_loop = connected_components(graph, directed=False)
    return edges, vertex_loop[pairs[:, 0]], int(n_loops)


def boundary_loops(faces: np.ndarray) -> int:
    """Number of boundary loops: connected parts of the graph of boundary edges (0 for a closed surface)."""
    return _boundary_loop_labels(faces)[2]


def boundary_loop_lengths(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(L,) length of each boundary loop (in the vertices' unit, e.g. mm), longest first; empty if closed."""
    edges, edge_loop, n_loops = _boundary_loop_labels(faces)
    lengths = np.linalg.norm(vertices[edges[:, 0]] - vertices[edges[:, 1]], axis=1)
    return np.sort(np.bincount(edge_loop, weights=lengths, minlength=n_loops))[::-1]
