"""Triangle meshes and point clouds in world LPS mm: VTK legacy, PLY, STL, OBJ.

A :class:`Mesh` is always held in world **LPS** mm. The space of a file is converted once, here: files
written in RAS (``mesh_space="RAS"`` in ``dataset.json`` or ``--mesh-space RAS``) have x and y flipped on
read and write. VTK legacy files carry the space in their header comment (``SPACE=LPS``), as 3D Slicer
writes them, and a ``SPACE=`` found there overrides the caller's default.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import trimesh

from implicitseg.errors import InputError
from implicitseg.geometry.frames import ras_to_lps, triangle_arrays
from implicitseg.io.atomic import atomic_path

MESH_SUFFIXES = (".vtk", ".ply", ".stl", ".obj")
SPACES = ("LPS", "RAS")


@dataclass
class Mesh:
    """A triangle mesh: ``vertices_world_mm`` (V, 3) float64 in world LPS mm, ``faces`` (F, 3) int64."""

    vertices_world_mm: np.ndarray
    faces: np.ndarray

    def __post_init__(self) -> None:
        self.vertices_world_mm, self.faces = triangle_arrays(self.vertices_world_mm, self.faces)

    @property
    def face_normals(self) -> np.ndarray:
        """(F, 3) unit normals (right-hand rule over each face's vertex order)."""
        corners = self.vertices_world_mm[self.faces]
        normals = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
        return normals / np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-20)

    @property
    def face_areas_mm2(self) -> np.ndarray:
        """(F,) triangle areas in mm²."""
        corners = self.vertices_world_mm[self.faces]
        return 0.5 * np.linalg.norm(np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]), axis=1)

    def center_of_mass_world_mm(self) -> np.ndarray:
        """Area-weighted centroid of the surface (3,), world LPS mm."""
        areas = self.face_areas_mm2
        centroids = self.vertices_world_mm[self.faces].mean(axis=1)
        return (centroids * areas[:, None]).sum(axis=0) / max(areas.sum(), 1e-20)


def _check_space(space: str) -> str:
    space = space.upper()
    if space not in SPACES:
        raise InputError(f"mesh space must be one of {SPACES}, got {space!r}")
    return space


def _read_vtk_legacy(path: Path) -> tuple[np.ndarray, np.ndarray, str | None]:
    """Vertices, triangle faces and the header's SPACE (or None) of an ASCII or binary legacy POLYDATA file."""
    data = path.read_bytes()
    lines = data.split(b"\n", 3)
    if len(lines) < 4 or not lines[0].startswith(b"# vtk DataFile"):
        raise InputError(f"{path}: not a VTK legacy file")
    header = lines[1].decode("latin-1")
    match = re.search(r"SPACE=(\w+)", header)
    space = match.group(1).upper() if match else None
    is_binary = lines[2].strip().upper() == b"BINARY"
    body = lines[3]
    points_match = re.search(rb"POINTS\s+(\d+)\s+(\w+)\s*\n", body)
    if not re.search(rb"DATASET\s+POLYDATA", body) or not points_match:
        raise InputError(f"{path}: only VTK legacy POLYDATA with POINTS is supported")
    n_points = int(points_match.group(1))
    type_name = points_match.group(2).decode().lower()
    position = points_match.end()
    if is_binary:
        dtype = {"float": ">f4", "double": ">f8"}.get(type_name)
        if dtype is None:
            raise InputError(f"{path}: unsupported VTK point type {type_name}")
        size = np.dtype(dtype).itemsize * 3 * n_points
        if len(body) < position + size:
            raise InputError(f"{path}: truncated file: its header declares {n_points} points, the file ends before")
        vertices = np.frombuffer(body[position : position + size], dtype=dtype).reshape(-1, 3).astype(np.float64)
        position += size
    else:
        tokens_needed = 3 * n_points
        values: list[bytes] = []
        while len(values) < tokens_needed:
            if position > len(body):
                raise InputError(f"{path}: truncated file: its header declares {n_points} points, the file ends before")
            end = body.find(b"\n", position)
            end = len(body) if end < 0 else end
            values.extend(body[position:end].split())
            position = end + 1
        vertices = np.array(values[:tokens_needed], dtype=np.float64).reshape(-1, 3)
    polygons_match = re.compile(rb"(POLYGONS|TRIANGLE_STRIPS)\s+(\d+)\s+(\d+)\s*\n").search(body, position)
    faces = np.zeros((0, 3), dtype=np.int64)
    if polygons_match:
        kind, n_cells, n_ints = polygons_match.group(1), int(polygons_match.group(2)), int(polygons_match.group(3))
        start = polygons_match.end()
        if b"OFFSETS" in body[start : start + 64]:
            raise InputError(f"{path}: VTK legacy 5.x OFFSETS/CONNECTIVITY layout is not supported; save as 4.2")
        if is_binary:
            cell_bytes = body[start : start + 4 * n_ints]
            ints = np.frombuffer(cell_bytes[: len(cell_bytes) // 4 * 4], dtype=">i4").astype(np.int64)
        else:
            ints = np.array(body[start:].split()[:n_ints], dtype=np.int64)
        if len(ints) < n_ints:
            raise InputError(f"{path}: truncated file: its header declares {n_cells} cells, the file ends before")
        faces = _cells_to_triangles(ints, n_cells, strips=(kind == b"TRIANGLE_STRIPS"))
    return vertices, faces, space


def _cells_to_triangles(ints: np.ndarray, n_cells: int, *, strips: bool) -> np.ndarray:
    triangles: list[list[int]] = []
    position = 0
    for _ in range(n_cells):
        count = int(ints[position])
        cell = ints[position + 1 : position + 1 + count]
        position += count + 1
        for t in range(count - 2):
            if strips:
                triangles.append([cell[t], cell[t + 1], cell[t + 2]] if t % 2 == 0 else [cell[t + 1], cell[t], cell[t + 2]])
            else:
                triangles.append([cell[0], cell[t + 1], cell[t + 2]])
    return np.array(triangles, dtype=np.int64).reshape(-1, 3)


def _write_vtk_legacy(path: Path, vertices: np.ndarray, faces: np.ndarray, space: str) -> None:
    with open(path, "wb") as handle:
        handle.write(f"# vtk DataFile Version 4.2\nvtk output SPACE={space}\nBINARY\nDATASET POLYDATA\n".encode())
        handle.write(f"POINTS {len(vertices)} float\n".encode())
        handle.write(np.asarray(vertices, dtype=">f4").tobytes())
        handle.write(f"\nPOLYGONS {len(faces)} {4 * len(faces)}\n".encode())
        cells = np.hstack([np.full((len(faces), 1), 3), faces]).astype(">i4")
        handle.write(cells.tobytes())
        handle.write(b"\n")


def read_mesh(path: str | os.PathLike, *, space: str = "LPS") -> Mesh:
    """Read a triangle mesh and return it in world LPS mm.

    ``space`` is the convention of the file's coordinates (``"LPS"`` or ``"RAS"``); a VTK header's
    ``SPACE=`` wins over it. Raises :class:`InputError` for a missing, unreadable or truncated file, a mesh with no
    faces, faces that index vertices the file does not hold, and NaN or infinite coordinates.
    """
    path = Path(path)
    space = _check_space(space)
    if not path.is_file():
        raise InputError(f"{path}: mesh file not found")
    suffix = path.suffix.lower()
    if suffix not in MESH_SUFFIXES:
        raise InputError(f"{path}: unsupported mesh format {suffix!r}; expected one of {MESH_SUFFIXES}")
    try:
        if suffix == ".vtk":
            vertices, faces, header_space = _read_vtk_legacy(path)
            space = header_space if header_space in SPACES else space
        else:
            loaded = trimesh.load(str(path), force="mesh", process=False)
            vertices, faces = np.asarray(loaded.vertices), np.asarray(loaded.faces)
    except InputError:
        raise
    except Exception as error:  # trimesh raises many types for broken files
        raise InputError(f"{path}: cannot read mesh ({type(error).__name__}: {str(error)[:150]})") from None
    if len(faces) == 0:
        raise InputError(f"{path}: mesh has no faces")
    if not np.all(np.isfinite(vertices)):
        raise InputError(f"{path}: mesh has NaN or infinite vertex coordinates")
    faces = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    if faces.min() < 0 or faces.max() >= len(vertices):
        bad = int(faces.max() if faces.max() >= len(vertices) else faces.min())
        raise InputError(f"{path}: mesh faces index vertex {bad}, but the file holds vertices 0..{len(vertices) - 1} "
                         f"(a truncated or damaged file?)")
    if space == "RAS":
        vertices = ras_to_lps(vertices)
    return Mesh(vertices, faces)


def write_mesh(path: str | os.PathLike, mesh: Mesh, *, space: str = "LPS") -> None:
    """Write ``mesh`` atomically in the format of the suffix, with coordinates in ``space`` (LPS or RAS)."""
    path = Path(path)
    space = _check_space(space)
    if len(mesh.faces) == 0:
        raise InputError(f"{path}: refusing to write a mesh with no faces")
    vertices = ras_to_lps(mesh.vertices_world_mm) if space == "RAS" else mesh.vertices_world_mm
    suffix = path.suffix.lower()
    if suffix not in MESH_SUFFIXES:
        raise InputError(f"{path}: unsupported mesh format {suffix!r}; expected one of {MESH_SUFFIXES}")
    with atomic_path(path) as temporary:
        if suffix == ".vtk":
            _write_vtk_legacy(temporary, vertices, mesh.faces, space)
        else:
            trimesh.Trimesh(vertices, mesh.faces, process=False).export(str(temporary), file_type=suffix[1:])


def write_point_cloud(path: str | os.PathLike, points_world_mm: np.ndarray, *, space: str = "LPS") -> None:
    """Write an (N, 3) point cloud in world LPS mm as binary PLY (coordinates in ``space``), atomically."""
    space = _check_space(space)
    points = np.asarray(points_world_mm, dtype=np.float64).reshape(-1, 3)
    if space == "RAS":
        points = ras_to_lps(points)
    with atomic_path(path) as temporary:
        with open(temporary, "wb") as handle:
            handle.write(
                f"ply\nformat binary_little_endian 1.0\ncomment SPACE={space}\nelement vertex {len(points)}\n"
                "property float x\nproperty float y\nproperty float z\nend_header\n".encode()
            )
            handle.write(points.astype("<f4").tobytes())


def read_point_cloud(path: str | os.PathLike, *, space: str = "LPS") -> np.ndarray:
    """Read the vertices of a PLY point cloud as (N, 3) world LPS mm (a ``comment SPACE=`` line wins)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: point cloud file not found")
    head = path.read_bytes()[:512].decode("latin-1")
    match = re.search(r"comment SPACE=(\w+)", head)
    space = _check_space(match.group(1) if match else space)
    loaded = trimesh.load(str(path), process=False)
    points = np.asarray(loaded.vertices, dtype=np.float64)
    return ras_to_lps(points) if space == "RAS" else points
