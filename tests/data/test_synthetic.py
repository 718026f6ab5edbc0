"""The synthetic LAA dataset: layout, determinism, geometry, and agreement of image, labelmap and mesh."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage as ndimage
from scipy.spatial import cKDTree

from implicitseg.data.synthetic import (
    SyntheticCase,
    case_rng,
    draw_image_direction,
    make_laa_case,
    write_synthetic_dataset,
)
from implicitseg.errors import InputError
from implicitseg.geometry.frames import index_to_world, world_to_index
from implicitseg.io.dataset import load_dataset
from implicitseg.io.images import read_image, read_labelmap
from implicitseg.io.meshes import Mesh, read_mesh


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Two training cases and one test case, seed 7, with the progress calls it made."""
    root = tmp_path_factory.mktemp("synthetic") / "laa"
    calls: list[tuple[int, int]] = []
    write_synthetic_dataset(root, kind="laa", n_cases=2, seed=7, n_test=1, progress=lambda d, t: calls.append((d, t)))
    return root, calls


@pytest.fixture(scope="module")
def case() -> SyntheticCase:
    return make_laa_case(case_rng(7, 0, 0), "laa_000")


def _edges(faces: np.ndarray) -> np.ndarray:
    """(3F, 2) directed edges of the faces."""
    return np.vstack([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])


def _boundary_edges(faces: np.ndarray) -> np.ndarray:
    undirected = np.sort(_edges(faces), axis=1)
    unique, counts = np.unique(undirected, axis=0, return_counts=True)
    return unique[counts == 1]


def _sample(volume_array: np.ndarray, affine: np.ndarray, points_world_mm: np.ndarray) -> np.ndarray:
    """Trilinear image values (N,) at world points."""
    index = world_to_index(points_world_mm, affine)
    return ndimage.map_coordinates(volume_array.astype(np.float64), index.T, order=1, mode="nearest")


def _vertex_normals(mesh: Mesh) -> np.ndarray:
    normals = np.zeros_like(mesh.vertices_world_mm)
    weighted = mesh.face_normals * mesh.face_areas_mm2[:, None]
    for corner in range(3):
        np.add.at(normals, mesh.faces[:, corner], weighted)
    return normals / np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)


def test_dataset_layout_loads(dataset):
    root, calls = dataset
    loaded = load_dataset(root)
    assert loaded.labels == {"0": "background", "1": "LAA"}
    assert loaded.mesh_space == "LPS" and loaded.modality == "CT"
    assert [c.case_id for c in loaded.training] == ["laa_000", "laa_001"]
    assert all(c.label is not None and c.mesh is not None for c in loaded.training)
    assert [p.name for p in loaded.test] == ["laa_002.nii.gz"]
    assert (root / "labelsTs" / "laa_002.nii.gz").is_file() and (root / "meshesTs" / "laa_002.vtk").is_file()
    assert calls == [(1, 3), (2, 3), (3, 3)]
    assert not list(root.rglob(".tmp-*"))


def test_same_seed_gives_identical_arrays_and_other_seed_differs(dataset, case):
    root, _ = dataset
    image = read_image(root / "imagesTr" / "laa_000.nii.gz")
    label = read_labelmap(root / "labelsTr" / "laa_000.nii.gz")
    mesh = read_mesh(root / "meshesTr" / "laa_000.vtk")
    assert np.array_equal(image.array, case.image.array.astype(np.float32))
    assert np.array_equal(label.array, case.labelmap.array)
    np.testing.assert_allclose(image.affine_lps, case.image.affine_lps, atol=1e-4)
    np.testing.assert_allclose(mesh.vertices_world_mm, case.mesh.vertices_world_mm, atol=1e-3)  # float32 on disk
    assert np.array_equal(mesh.faces, case.mesh.faces)
    other = make_laa_case(case_rng(8, 0, 0))
    assert other.image.shape != case.image.shape or not np.array_equal(other.image.array, case.image.array)
    assert not np.allclose(other.image.affine_lps, case.image.affine_lps)


def test_oblique_anisotropic_grid_with_margin_around_the_appendage(dataset):
    root, _ = dataset
    for path in sorted((root / "imagesTr").glob("*.nii.gz")):
        image = read_image(path)
        label = read_labelmap(root / "labelsTr" / path.name)
        mesh = read_mesh(root / "meshesTr" / path.name.replace(".nii.gz", ".vtk"))
        direction, spacing = image.direction, image.spacing
        assert np.max(np.abs(direction - np.diag(np.diag(direction)))) > 0.1, "direction must be oblique"
        assert spacing.max() / spacing.min() > 1.1, "spacing must be anisotropic"
        assert max(image.shape) <= 130
        np.testing.assert_array_equal(label.affine_lps, image.affine_lps)
        label_center = index_to_world(np.argwhere(label.array > 0).mean(axis=0)[None], image.affine_lps)[0]
        for center in (label_center, mesh.center_of_mass_world_mm()):
            index = world_to_index(center[None], image.affine_lps)[0]
            margin_mm = np.minimum(index, np.array(image.shape) - 1 - index) * spacing
            assert margin_mm.min() >= 40.0, f"{path.name}: margin {margin_mm} mm"
        vertex_index = world_to_index(mesh.vertices_world_mm, image.affine_lps)
        assert np.all(vertex_index > 0) and np.all(vertex_index < np.array(image.shape) - 1)


def test_image_directions_are_oblique_orthonormal_and_sometimes_flipped():
    directions = [draw_image_direction(np.random.default_rng(i)) for i in range(40)]
    for direction in directions:
        np.testing.assert_allclose(direction.T @ direction, np.eye(3), atol=1e-12)
        assert np.max(np.abs(direction - np.diag(np.diag(direction)))) > 0.1
    determinants = np.array([np.linalg.det(direction) for direction in directions])
    assert (determinants < 0).sum() >= 5 and (determinants > 0).sum() >= 5


def test_mesh_is_open_consistently_oriented_and_cut_at_the_ostium(case):
    mesh = case.mesh
    assert 2_000 <= len(mesh.faces) <= 40_000
    boundary = _boundary_edges(mesh.faces)
    assert len(boundary) > 20, "the LAA wall must be an open surface"
    directed = _edges(mesh.faces)
    _, counts = np.unique(directed, axis=0, return_counts=True)
    assert counts.max() == 1, "each directed edge appears once: faces are consistently oriented"
    # The open rim lies on the ostium plane; the whole wall is on the appendage side of it.
    heights = (mesh.vertices_world_mm - case.ostium_center_world_mm) @ case.ostium_normal_world
    np.testing.assert_allclose(heights[np.unique(boundary)], 0.0, atol=1e-6)
    assert heights.min() > -1e-6
    # Normals point out of the lumen: bright blood behind the wall, darker tissue in front of it.
    normals = _vertex_normals(mesh)
    inside = _sample(case.image.array, case.image.affine_lps, mesh.vertices_world_mm - 1.5 * normals)
    outside = _sample(case.image.array, case.image.affine_lps, mesh.vertices_world_mm + 1.5 * normals)
    assert inside.mean() > 250.0 and outside.mean() < 150.0


def test_mesh_lies_on_the_labelmap_boundary_and_the_blood_edge(case):
    label, image, mesh = case.labelmap, case.image, case.mesh
    boundary_voxels = (label.array > 0) & ~ndimage.binary_erosion(label.array > 0)
    boundary_world = index_to_world(np.argwhere(boundary_voxels).astype(np.float64), label.affine_lps)
    distance_mm, _ = cKDTree(boundary_world).query(mesh.vertices_world_mm)
    assert distance_mm.mean() < image.spacing.mean(), f"mean distance {distance_mm.mean():.2f} mm"
    # On the wall the image reads between myocardium (40-80 HU) and blood (300-450 HU).
    at_surface = _sample(image.array, image.affine_lps, mesh.vertices_world_mm).mean()
    assert 120.0 < at_surface < 330.0


def test_label_is_one_closed_region_beyond_the_ostium(case):
    lumen = case.labelmap.array > 0
    assert lumen.sum() > 1_000
    _, n_components = ndimage.label(lumen)
    assert n_components == 1
    heights = (case.labelmap.voxel_centers_world_mm(lumen) - case.ostium_center_world_mm) @ case.ostium_normal_world
    assert heights.min() > 0.0, "the labelmap is closed at the ostium plane"
    # The labelmap fills the space the mesh wraps: its centre lies near the wall's centre.
    label_center = case.labelmap.voxel_centers_world_mm(lumen).mean(axis=0)
    assert np.linalg.norm(label_center - case.mesh.center_of_mass_world_mm()) < 5.0
    assert case.gaps_mm and all(0.9 <= gap <= 3.2 for gap in case.gaps_mm)


def test_intensities_are_plausible_hounsfield_units(case):
    image, lumen = case.image.array.astype(np.float64), case.labelmap.array > 0
    assert image.min() >= -1024 and image.max() <= 1000
    core = ndimage.binary_erosion(lumen, iterations=2)
    assert 250.0 < np.median(image[core]) < 500.0
    assert -100.0 < np.median(image) < 100.0 or np.mean(image < -600) > 0.2  # soft tissue or lung dominates
    assert np.mean(image < -600) > 0.01, "some lung far from the heart"
    assert 15.0 < np.std(image[core]) < 50.0, "noise of 20-40 HU"


@pytest.mark.parametrize("kind", ["brain", "LAA", ""])
def test_unknown_kind_raises_input_error(tmp_path, kind):
    with pytest.raises(InputError, match="supported kinds: laa"):
        write_synthetic_dataset(tmp_path / "out", kind=kind, n_cases=1)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("arguments", [{"n_cases": 0}, {"n_cases": 2, "n_test": -1}])
def test_bad_case_counts_raise_input_error(tmp_path, arguments):
    with pytest.raises(InputError, match="number of"):
        write_synthetic_dataset(tmp_path / "out", **arguments)
