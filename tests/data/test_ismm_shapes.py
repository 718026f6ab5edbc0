"""ISMM prepare: PICCT puts the same anatomy, posed and scaled differently on oblique / flipped / anisotropic grids,
onto one canonical shape inside the unit sphere; samples carry exact signed distances and outward normals."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from helpers import AFFINE_CASES, posed_ellipsoid_labelmap, rotation_matrix
from implicitseg.config import ShapesConfig
from implicitseg.data.ismm import ShapeSampleDataset, choose_anchor, prepare_shapes, shape_surface
from implicitseg.errors import InputError
from implicitseg.geometry.frames import Picct
from implicitseg.io.dataset import write_dataset_json
from implicitseg.io.images import Volume, write_image
from implicitseg.io.meshes import Mesh, write_mesh
from implicitseg.methods import ismm
from implicitseg.methods.base import copy_preset

SEMI_AXES_MM = np.array([22.0, 15.0, 10.0])
POSES = {  # grid, rotation (degrees), scale of the anatomy
    "shape_a": ("oblique", (0, 0, 0), 1.0),
    "shape_b": ("flipped_oblique", (30, -20, 60), 1.15),
    "shape_c": ("anisotropic", (-45, 10, 20), 0.9),
    "shape_d": ("axis_aligned", (10, 70, -30), 1.05),
}


def posed_labelmap(affine_name: str, rotation_degrees, scale: float) -> tuple[Volume, np.ndarray, np.ndarray]:
    """The anatomy (an ellipsoid × ``scale``), rotated, at the centre of a grid 64 mm wide along every axis."""
    rotation = rotation_matrix(rotation_degrees)
    labelmap, center = posed_ellipsoid_labelmap(AFFINE_CASES[affine_name], SEMI_AXES_MM, rotation, scale)
    return labelmap, center, rotation


def inside_posed(points_world_mm: np.ndarray, center: np.ndarray, rotation: np.ndarray, scale: float) -> np.ndarray:
    local = (points_world_mm - center) @ rotation / scale
    return np.linalg.norm(local / SEMI_AXES_MM, axis=1) < 1.0


@pytest.fixture(scope="module")
def shape_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    poses = {}
    for name, (affine_name, rotation_degrees, scale) in POSES.items():
        labelmap, center, rotation = posed_labelmap(affine_name, rotation_degrees, scale)
        write_image(root / "labelsTr" / f"{name}.nii.gz", labelmap)
        write_image(root / "imagesTr" / f"{name}.nii.gz", Volume(labelmap.array.astype(np.float32), labelmap.affine_lps))
        poses[name] = (center, rotation, scale)
    write_dataset_json(root, name="shapes", modality="CT", labels={"0": "background", "1": "organ"}, test=[],
                       training=[{"image": f"imagesTr/{n}.nii.gz", "label": f"labelsTr/{n}.nii.gz"} for n in POSES])
    config = copy_preset(ismm.PRESETS, "ismm-demo")
    config.shapes = ShapesConfig(cpd_points=400, surface_points=4000, free_space_points=3000)
    manifest = prepare_shapes(root, root / "prep", config, seed=0)
    return root, manifest, poses


def test_picct_brings_every_pose_onto_one_canonical_shape_in_the_unit_sphere(shape_dataset):
    root, manifest, _ = shape_dataset
    shapes = manifest["config"]["shapes"]
    assert shapes["n_shapes"] == 4 and shapes["anchor_case"] in POSES and shapes["global_scale"] > 0
    canonical = {}
    for name in POSES:
        with np.load(root / "prep" / name / "samples.npz") as samples:
            canonical[name] = samples["surface_points"]
        assert np.linalg.norm(canonical[name], axis=1).max() <= shapes["unit_sphere_margin"] + 1e-3
    anchor = canonical[shapes["anchor_case"]]
    from scipy.spatial import cKDTree
    tree = cKDTree(anchor)
    for name, points in canonical.items():
        # the aligned shapes coincide up to sampling (~0.02) and the voxel surface (1 mm ≈ 0.03)
        assert np.median(tree.query(points)[0]) < 0.03, name


def test_samples_have_exact_signs_and_outward_normals_in_world_space(shape_dataset):
    root, _, poses = shape_dataset
    for name, (center, rotation, scale) in poses.items():
        picct = Picct.from_json(json.loads((root / "prep" / name / "shape.json").read_text())["picct"])
        with np.load(root / "prep" / name / "samples.npz") as samples:
            free_world = picct.canonical_to_world(samples["free_points"])
            inside = samples["free_sdf"] < 0
            far = np.abs(samples["free_sdf"]) > 0.05  # away from the voxel surface's tolerance
            surface_world = picct.canonical_to_world(samples["surface_points"])
            normals_world = samples["surface_normals"] @ picct.similarity.rotation  # canonical → world directions
        assert np.mean(inside[far] == inside_posed(free_world[far], center, rotation, scale)) > 0.999
        outward = np.sum(normals_world * (surface_world - center), axis=1) > 0
        assert outward.mean() > 0.99


def test_dataset_serves_training_and_held_out_points_of_every_shape(shape_dataset):
    root, _, _ = shape_dataset
    config = copy_preset(ismm.PRESETS, "ismm-demo")
    from implicitseg.config import config_from_dict
    from implicitseg.data.datasets import read_manifest
    config.shapes = config_from_dict(ShapesConfig, read_manifest(root / "prep").config["shapes"])
    train = ShapeSampleDataset.from_config(root / "prep", "train", config)
    val = ShapeSampleDataset.from_config(root / "prep", "val", config)
    assert len(train) == len(val) == 4
    item = train[1]
    assert item["row"] == 1 and item["surface_points"].shape == (config.train.surface_per_shape, 3)
    assert item["free_sdf"].shape == (config.train.free_per_shape,)
    assert float(item["uniform_points"].abs().max()) <= 1.0
    train_points = {tuple(p) for p in train._arrays(item["case_id"])["surface_points"].tolist()}
    assert not any(tuple(p) in train_points for p in val[1]["surface_points"].tolist())
    first_draw, second_draw = val[2], val[2]
    assert torch.equal(first_draw["free_points"], second_draw["free_points"])  # validation draws are fixed


def test_anchor_is_the_shape_closest_to_the_mean_or_the_one_asked_for():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(500, 3)) * np.array([3.0, 2.0, 1.0])
    clouds = {"small": base * 0.5, "middle": base * 1.0, "large": base * 1.6}
    assert choose_anchor(clouds) == "middle"
    assert choose_anchor(clouds, "large") == "large"
    with pytest.raises(InputError, match="not a training case"):
        choose_anchor(clouds, "missing")


def test_open_meshes_and_empty_labels_are_refused(tmp_path):
    mesh = Mesh(np.array([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]]), np.array([[0, 1, 2], [0, 2, 3]]))
    write_mesh(tmp_path / "open.vtk", mesh)
    with pytest.raises(InputError, match="open"):
        shape_surface(tmp_path / "open.vtk", ShapesConfig())
    write_image(tmp_path / "empty.nii.gz", Volume(np.zeros((5, 5, 5), np.uint8), np.eye(4)))
    with pytest.raises(InputError):
        shape_surface(tmp_path / "empty.nii.gz", ShapesConfig())
