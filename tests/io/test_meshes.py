import numpy as np
import pytest

from implicitseg.errors import InputError
from implicitseg.io.meshes import Mesh, read_mesh, read_point_cloud, write_mesh, write_point_cloud


def _tetrahedron() -> Mesh:
    vertices = np.array([[10.0, 20.0, 30.0], [15.5, 20.0, 30.0], [10.0, 26.25, 30.0], [10.0, 20.0, 37.125]])
    faces = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
    return Mesh(vertices, faces)


@pytest.mark.parametrize("suffix", [".vtk", ".ply", ".stl", ".obj"])
@pytest.mark.parametrize("space", ["LPS", "RAS"])
def test_mesh_round_trip_in_each_format_and_space(tmp_path, suffix, space):
    mesh = _tetrahedron()
    path = tmp_path / f"mesh{suffix}"
    write_mesh(path, mesh, space=space)
    back = read_mesh(path, space=space)
    # STL stores unindexed triangles: compare the sets of oriented triangles
    assert np.allclose(_triangles(back), _triangles(mesh), atol=1e-5)


def _triangles(mesh: Mesh) -> np.ndarray:
    """(F, 9) corner coordinates of each face, each face rotated to start at its lexicographically smallest
    corner (orientation kept), faces in lexicographic order: equal for two meshes with the same oriented faces,
    whatever their vertex and face order."""
    corners = np.round(mesh.vertices_world_mm[mesh.faces], 4)  # (F, 3, 3)
    first = np.array([min(range(3), key=lambda k: tuple(face[k])) for face in corners])
    rotated = np.stack([np.roll(face, -k, axis=0) for face, k in zip(corners, first)]).reshape(-1, 9)
    return rotated[np.lexsort(rotated.T[::-1])]


def test_triangle_comparison_tells_faces_apart():
    mesh = _tetrahedron()
    shuffled = Mesh(mesh.vertices_world_mm[::-1], (3 - mesh.faces)[::-1][:, [1, 2, 0]])  # same faces, renumbered
    assert np.allclose(_triangles(shuffled), _triangles(mesh))
    flipped = Mesh(mesh.vertices_world_mm, mesh.faces[:, ::-1])  # every face reversed: same corners, other faces
    assert not np.allclose(_triangles(flipped), _triangles(mesh))
    # the second corners of two faces swapped: other triangles, yet each coordinate column holds the same values,
    # so sorting the columns one by one (the comparison this replaces) could not tell
    swapped = mesh.faces.copy()
    swapped[[0, 1], 1] = swapped[[1, 0], 1]
    mixed = Mesh(mesh.vertices_world_mm, swapped)
    columns = (np.sort(m.vertices_world_mm[m.faces].reshape(-1, 9), axis=0) for m in (mixed, mesh))
    assert np.allclose(*columns)
    assert not np.allclose(_triangles(mixed), _triangles(mesh))


def test_ras_file_holds_flipped_coordinates_and_vtk_header_names_the_space(tmp_path):
    mesh = _tetrahedron()
    write_mesh(tmp_path / "ras.ply", mesh, space="RAS")
    as_if_lps = read_mesh(tmp_path / "ras.ply", space="LPS")
    assert np.allclose(as_if_lps.vertices_world_mm[:, :2], -mesh.vertices_world_mm[:, :2], atol=1e-5)
    write_mesh(tmp_path / "ras.vtk", mesh, space="RAS")
    assert b"SPACE=RAS" in (tmp_path / "ras.vtk").read_bytes()[:80]
    # the header wins over the caller's default
    assert np.allclose(read_mesh(tmp_path / "ras.vtk", space="LPS").vertices_world_mm, mesh.vertices_world_mm, atol=1e-5)


def test_ascii_vtk_written_by_another_tool_reads(tmp_path):
    path = tmp_path / "ascii.vtk"
    path.write_text(
        "# vtk DataFile Version 3.0\nvtk output\nASCII\nDATASET POLYDATA\nPOINTS 4 float\n"
        "0 0 0 1 0 0\n1 1 0 0 1 0\nPOLYGONS 1 5\n4 0 1 2 3\n"
    )
    mesh = read_mesh(path)
    assert mesh.faces.shape == (2, 3)
    assert mesh.face_areas_mm2.sum() == pytest.approx(1.0)


def test_point_cloud_round_trip(tmp_path):
    points = np.random.default_rng(0).normal(size=(100, 3)) * 30
    write_point_cloud(tmp_path / "points.ply", points, space="RAS")
    assert np.allclose(read_point_cloud(tmp_path / "points.ply"), points, atol=1e-4)


def test_bad_meshes_give_input_errors(tmp_path):
    with pytest.raises(InputError, match="not found"):
        read_mesh(tmp_path / "missing.vtk")
    no_faces = tmp_path / "points_only.vtk"
    no_faces.write_text("# vtk DataFile Version 3.0\nvtk output\nASCII\nDATASET POLYDATA\nPOINTS 1 float\n0 0 0\n")
    with pytest.raises(InputError, match="no faces"):
        read_mesh(no_faces)
    garbage = tmp_path / "garbage.ply"
    garbage.write_bytes(b"\x00\x01garbage")
    with pytest.raises(InputError, match="garbage.ply"):
        read_mesh(garbage)
    with pytest.raises(InputError, match="no faces"):
        write_mesh(tmp_path / "out.vtk", Mesh(np.zeros((3, 3)), np.zeros((0, 3))))
    assert not (tmp_path / "out.vtk").exists()


PLY_HEADER = ("ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nproperty float y\nproperty float z\n"
              "element face 2\nproperty list uchar int vertex_indices\nend_header\n")


@pytest.mark.parametrize("name, text", [
    ("faces.ply", PLY_HEADER + "0 0 0\n1 0 0\n0 1 0\n3 0 1 2\n3 0 1 7\n"),
    ("faces.vtk", "# vtk DataFile Version 3.0\nvtk output\nASCII\nDATASET POLYDATA\nPOINTS 3 float\n"
                  "0 0 0 1 0 0 0 1 0\nPOLYGONS 2 8\n3 0 1 2\n3 0 1 5\n"),
    ("faces.obj", "v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\nf 1 2 9\n"),
])
def test_faces_that_index_missing_vertices_are_named_input_errors(tmp_path, name, text):
    (tmp_path / name).write_text(text)
    with pytest.raises(InputError, match=rf"{name}: .*(vertex|index)"):
        read_mesh(tmp_path / name)


@pytest.mark.parametrize("name, text", [
    ("nan.vtk", "# vtk DataFile Version 3.0\nvtk output\nASCII\nDATASET POLYDATA\nPOINTS 3 float\n"
                "0 0 0 nan 0 0 0 1 0\nPOLYGONS 1 4\n3 0 1 2\n"),
    ("inf.obj", "v 0 0 0\nv inf 0 0\nv 0 1 0\nf 1 2 3\n"),
])
def test_nan_or_infinite_coordinates_are_named_input_errors(tmp_path, name, text):
    (tmp_path / name).write_text(text)
    with pytest.raises(InputError, match=rf"{name}: mesh has NaN or infinite vertex coordinates"):
        read_mesh(tmp_path / name)


def test_truncated_binary_vtk_is_named(tmp_path):
    write_mesh(tmp_path / "mesh.vtk", _tetrahedron())
    data = (tmp_path / "mesh.vtk").read_bytes()
    for keep in (len(data) - 30, 150):
        (tmp_path / "cut.vtk").write_bytes(data[:keep])
        with pytest.raises(InputError, match="cut.vtk: truncated file"):
            read_mesh(tmp_path / "cut.vtk")
