"""The prepare stage on tiny cases with oblique anisotropic images, meshes in LPS/RAS, and labels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import trimesh
from helpers import rotation_matrix, sphere_volume

from implicitseg.config import NudfConfig, RoiConfig, SurfaceSamplingConfig
from implicitseg.errors import InputError
from implicitseg.geometry.frames import Roi, affine_from_geometry, index_to_world, world_to_index
from implicitseg.io.dataset import Case, write_dataset_json
from implicitseg.io.images import Volume, write_image
from implicitseg.io.meshes import Mesh, write_mesh
from implicitseg.data.check import InputRules
from implicitseg.data.prepare import prepare_case, prepare_dataset, split_cases

SHAPE = (60, 56, 40)
AFFINE = affine_from_geometry([-30.0, 25.0, -80.0], [1.1, 1.0, 1.5], rotation_matrix((15, -20, 30)))
CENTER = index_to_world(np.array([[29.5, 27.5, 19.5]]), AFFINE)[0]
RADIUS = 8.0
ROI_MM = 40.0


def tiny_config() -> NudfConfig:
    return NudfConfig(roi=RoiConfig(size_mm=ROI_MM, res=16),
                      sampling=SurfaceSamplingConfig(n_uniform=500, n_near_surface=2_000, sd_rays=8))


def ramp_image() -> Volume:
    """HU = 20 × (x - CENTER_x): a ramp along world x (LPS), to check the (Z, Y, X) order of image.npy."""
    index = np.stack(np.meshgrid(*[np.arange(n) for n in SHAPE], indexing="ij"), axis=-1).reshape(-1, 3)
    world = index_to_world(index, AFFINE)
    return Volume((20.0 * (world[:, 0] - CENTER[0])).reshape(SHAPE).astype(np.float32), AFFINE)


def sphere_mesh(center: np.ndarray = CENTER) -> Mesh:
    sphere = trimesh.creation.icosphere(subdivisions=4, radius=RADIUS)
    return Mesh(np.asarray(sphere.vertices) + center, np.asarray(sphere.faces))


def write_case(root: Path, name: str, *, mesh: Mesh | None = None, label: bool = False, mesh_space: str = "LPS",
               mesh_suffix: str = ".vtk") -> dict[str, str]:
    entry = {"image": f"imagesTr/{name}.nii.gz"}
    write_image(root / entry["image"], ramp_image())
    if mesh is not None:
        entry["mesh"] = f"meshesTr/{name}{mesh_suffix}"
        write_mesh(root / entry["mesh"], mesh, space=mesh_space)
    if label:
        entry["label"] = f"labelsTr/{name}.nii.gz"
        write_image(root / entry["label"], Volume(sphere_volume(AFFINE, SHAPE, CENTER, RADIUS), AFFINE))
    return entry


def as_case(root: Path, name: str, entry: dict[str, str]) -> Case:
    return Case(name, root / entry["image"], root / entry["label"] if "label" in entry else None,
                root / entry["mesh"] if "mesh" in entry else None)


def test_prepare_case_writes_image_samples_and_roi(tmp_path: Path) -> None:
    entry = write_case(tmp_path / "data", "case_a", mesh=sphere_mesh())
    config = tiny_config()
    result = prepare_case(as_case(tmp_path / "data", "case_a", entry), tmp_path / "prep", config, InputRules())
    assert result["case"] == "case_a" and result["n_samples"] == 2_500
    case_dir = tmp_path / "prep" / "case_a"

    roi_json = json.loads((case_dir / "roi.json").read_text())
    roi = Roi.from_json(roi_json)
    np.testing.assert_allclose(roi.center_world_mm, CENTER, atol=1e-6)  # a sphere's area centroid is its centre
    assert roi_json["case"] == "case_a" and roi_json["mesh_space"] == "LPS" and roi_json["surface_source"] == "mesh"
    np.testing.assert_allclose(roi_json["surface_center_world_mm"], CENTER, atol=1e-6)

    image = np.load(case_dir / "image.npy")
    assert image.dtype == np.float32 and image.shape == (16, 16, 16)
    # (Z, Y, X): image[z, y, x] sits at ROI index (x, y, z); the world-x ramp / 1000 must be read back there.
    voxels_zyx = np.argwhere(np.ones(image.shape, dtype=bool))
    world = roi.roi_index_to_world(voxels_zyx[:, ::-1])
    index = world_to_index(world, AFFINE)
    in_image = np.all((index >= 0) & (index <= np.array(SHAPE) - 1), axis=1)
    assert in_image.mean() > 0.9
    expected = 20.0 * (world[:, 0] - CENTER[0]) / 1000.0
    np.testing.assert_allclose(image.ravel()[in_image], expected[in_image], atol=1e-4)

    with np.load(case_dir / "samples.npz") as samples:
        assert sorted(samples.files) == ["distances", "points", "sample_set"]
        points, distances, sample_set = samples["points"], samples["distances"], samples["sample_set"]
    assert points.dtype == np.float32 and points.shape == (2_500, 3)
    assert distances.dtype == np.float32 and distances.shape == (2_500,)
    assert sample_set.dtype == np.uint8 and np.bincount(sample_set).tolist() == [1_000, 1_000, 500]
    assert np.all(np.abs(points[sample_set == 2]) <= 1.0)
    assert np.all(np.abs(points) <= 2.0)
    world_points = roi.unit_to_world(points.astype(np.float64))
    exact_unit = np.abs(np.linalg.norm(world_points - CENTER, axis=1) - RADIUS) / (ROI_MM / 2)
    np.testing.assert_allclose(distances, exact_unit, atol=0.05 / (ROI_MM / 2))
    # "in" samples are inside the sphere (behind its outward normals), "out" samples outside.
    radial = np.linalg.norm(world_points - CENTER, axis=1)
    assert np.mean(radial[sample_set == 0] < RADIUS) > 0.99 and np.mean(radial[sample_set == 1] > RADIUS) > 0.99


def test_label_only_case_uses_the_labelmap_surface(tmp_path: Path) -> None:
    entry = write_case(tmp_path / "data", "case_l", label=True)
    prepare_case(as_case(tmp_path / "data", "case_l", entry), tmp_path / "prep", tiny_config(), InputRules())
    roi_json = json.loads((tmp_path / "prep" / "case_l" / "roi.json").read_text())
    assert roi_json["surface_source"] == "label"
    np.testing.assert_allclose(roi_json["center_world_mm"], CENTER, atol=0.3)
    roi = Roi.from_json(roi_json)
    with np.load(tmp_path / "prep" / "case_l" / "samples.npz") as samples:
        world = roi.unit_to_world(samples["points"].astype(np.float64))
        distances_mm = samples["distances"] * roi.half_size_mm
    # The labelmap surface lies within a voxel (≤ 1.5 mm) of the analytic sphere.
    exact = np.abs(np.linalg.norm(world - CENTER, axis=1) - RADIUS)
    assert np.abs(distances_mm - exact).max() < 1.5


def test_roi_outside_the_image_is_an_input_error(tmp_path: Path) -> None:
    # the sphere fits in a corner of the image, the 40 mm ROI around it mostly does not
    corner = index_to_world(np.array([[9.0, 9.0, 7.0]]), AFFINE)[0]
    entry = write_case(tmp_path / "data", "corner", mesh=sphere_mesh(corner))
    with pytest.raises(InputError, match="ROI outside the image"):
        prepare_case(as_case(tmp_path / "data", "corner", entry), tmp_path / "prep", tiny_config(), InputRules())
    assert not (tmp_path / "prep" / "corner").exists()


def test_mesh_outside_its_image_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    entry = write_case(tmp_path / "data", "far", mesh=sphere_mesh(CENTER + [0.0, 0.0, 300.0]))
    with pytest.raises(InputError, match="far.vtk: only 0% of the mesh's vertices lie inside its image .*far.nii.gz"):
        prepare_case(as_case(tmp_path / "data", "far", entry), tmp_path / "prep", tiny_config(), InputRules())
    assert not (tmp_path / "prep" / "far").exists()


def test_split_is_deterministic_with_at_least_one_val_case() -> None:
    ids = [f"c{i}" for i in range(10)]
    split = split_cases(ids, 0.2, seed=3)
    assert split == split_cases(list(reversed(ids)), 0.2, seed=3)
    assert len(split["val"]) == 2 and sorted(split["train"] + split["val"]) == ids
    assert split_cases(["a", "b"], 0.0, seed=0)["val"] in (["a"], ["b"])
    assert split_cases(["a"], 0.5, seed=0) == {"train": ["a"], "val": []}
    with pytest.raises(InputError, match="val_fraction"):
        split_cases(ids, 1.0, seed=0)


def build_dataset(root: Path, *, bad_case: bool = False) -> None:
    training = [
        write_case(root, "lps_mesh", mesh=sphere_mesh()),
        write_case(root, "ras_mesh", mesh=sphere_mesh(), mesh_space="RAS", mesh_suffix=".ply"),
        write_case(root, "label_only", label=True),
    ]
    if bad_case:
        training.append(write_case(root, "zz_far", mesh=sphere_mesh(CENTER + [300.0, 0.0, 0.0])))
    write_dataset_json(root, name="tiny", modality="CT", labels={"0": "background", "1": "sphere"},
                       training=training, test=[], mesh_space="RAS")


def test_prepare_dataset_writes_manifest_and_every_case_in_parallel(tmp_path: Path) -> None:
    # mesh_space = RAS for the dataset: the .ply mesh is read as RAS; the .vtk meshes carry SPACE=LPS.
    build_dataset(tmp_path / "data")
    calls: list[tuple[int, int]] = []
    manifest = prepare_dataset(tmp_path / "data", tmp_path / "prep", tiny_config(), workers=2, val_fraction=0.2,
                               seed=0, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 3), (2, 3), (3, 3)]
    on_disk = json.loads((tmp_path / "prep" / "manifest.json").read_text())
    assert on_disk == json.loads(json.dumps(manifest))
    assert on_disk["method"] == "nudf" and on_disk["preset"] == "nudf64"
    assert on_disk["res"] == 16 and on_disk["roi_mm"] == ROI_MM and on_disk["mesh_space"] == "RAS"
    assert on_disk["cases"] == ["lps_mesh", "ras_mesh", "label_only"]
    assert len(on_disk["splits"]["val"]) == 1 and len(on_disk["splits"]["train"]) == 2
    assert on_disk["config"]["sampling"]["n_near_surface"] == 2_000
    assert on_disk["versions"]["point-cloud-utils"] and on_disk["versions"]["implicitseg"]
    assert on_disk["sample_sets"] == {"0": "in", "1": "out", "2": "uniform"}
    assert (tmp_path / "prep" / "config.yaml").is_file()
    for case in on_disk["cases"]:
        roi = json.loads((tmp_path / "prep" / case / "roi.json").read_text())
        np.testing.assert_allclose(roi["center_world_mm"], CENTER, atol=0.3)  # RAS mesh converted back to LPS
    # Same seed → same samples, whatever the worker count.
    prepare_dataset(tmp_path / "data", tmp_path / "again", tiny_config(), workers=1, seed=0)
    for case in on_disk["cases"]:
        with np.load(tmp_path / "prep" / case / "samples.npz") as first:
            with np.load(tmp_path / "again" / case / "samples.npz") as second:
                np.testing.assert_array_equal(first["points"], second["points"])


def test_prepare_dataset_fails_naming_the_bad_case(tmp_path: Path) -> None:
    build_dataset(tmp_path / "data", bad_case=True)
    with pytest.raises(InputError, match=r"case 'zz_far'.*zz_far.vtk: only 0% of the mesh's vertices lie inside"):
        prepare_dataset(tmp_path / "data", tmp_path / "prep", tiny_config(), workers=2)
    assert not (tmp_path / "prep" / "manifest.json").exists()
