"""Small builders shared by tests: oblique/flipped/anisotropic affines and analytic shapes."""

from __future__ import annotations

import numpy as np
import torch

from implicitseg.geometry.frames import affine_from_geometry


def rotation_matrix(angles_degrees: tuple[float, float, float]) -> np.ndarray:
    """(3, 3) rotation from Euler angles about x, then y, then z (degrees)."""
    ax, ay, az = np.radians(angles_degrees)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


AFFINE_CASES = {
    "axis_aligned": affine_from_geometry([0.0, 0.0, 0.0], [1.0, 1.0, 1.0], np.eye(3)),
    "anisotropic": affine_from_geometry([-20.0, 13.0, 7.5], [0.6, 0.8, 1.7], np.eye(3)),
    "oblique": affine_from_geometry([5.0, -30.0, 12.0], [0.7, 0.7, 1.3], rotation_matrix((20, -35, 50))),
    "flipped_oblique": affine_from_geometry(
        [40.0, 2.0, -60.0], [0.9, 0.5, 1.1], rotation_matrix((-10, 25, 130)) @ np.diag([1.0, -1.0, 1.0])
    ),
}
"""Index→world LPS affines covering oblique directions, a flipped axis (det < 0) and anisotropic spacing."""


def sphere_volume(affine_lps: np.ndarray, shape: tuple[int, int, int], center_world_mm: np.ndarray,
                  radius_mm: float, *, inside: float = 1.0, outside: float = 0.0) -> np.ndarray:
    """Array on the given grid: ``inside`` where the voxel centre lies in the sphere, else ``outside``."""
    from implicitseg.geometry.frames import index_to_world

    index = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1).reshape(-1, 3)
    world = index_to_world(index, affine_lps)
    distance = np.linalg.norm(world - np.asarray(center_world_mm), axis=1).reshape(shape)
    return np.where(distance <= radius_mm, inside, outside).astype(np.float32)


def blurred_sphere_hu(affine_lps: np.ndarray, shape: tuple[int, int, int], center_world_mm: np.ndarray,
                      radius_mm: float) -> np.ndarray:
    """A CT-like sphere: 1000 HU inside, 0 HU outside, blurred (partial volume) over a few mm; 500 HU on the sphere."""
    from implicitseg.geometry.frames import index_to_world

    index = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1).reshape(-1, 3)
    distance = np.linalg.norm(index_to_world(index, affine_lps) - center_world_mm, axis=1) - radius_mm
    blood = 1.0 / (1.0 + np.exp(distance / 1.5))
    return (blood * 1000.0).reshape(shape).astype(np.float32)


class BrightIsForeground(torch.nn.Module):
    """A segmentation 'network' (logits (B, 2, D, H, W)) whose foreground logit rises steeply where the normalised
    image exceeds 0.5: it segments a bright object exactly, so tests can follow its output through the frames."""

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.zeros_like(image), (image - 0.5) * 20.0], dim=1)


class ImageLevelSetModel(torch.nn.Module):
    """A NUDF-like network (``encode`` / ``decode``) whose distance-like field is 0.5·|I(p) − 0.5| of the ROI image I
    itself: zero on the object's boundary, ≥ 0.1 farther than about 1 mm from it (so far seeds are filtered out as
    with a trained UDF). Through predict it meshes the bright object of the image exactly."""

    def encode(self, image):
        return [image]

    def decode(self, features, points_unit):
        sampled = torch.nn.functional.grid_sample(features[0], points_unit[:, :, None, None], mode="bilinear",
                                                  padding_mode="border", align_corners=True)
        return (sampled[:, 0, :, 0, 0] - 0.5).abs() * 0.5


def fake_runs(monkeypatch, *runs) -> None:
    """Make the table of methods hold only the methods of ``runs`` ``(method name, model, config)``, each loading
    that model and config from any run folder (so a run needs only its ``config.yaml``)."""
    import dataclasses

    from implicitseg import methods

    table = {name: dataclasses.replace(methods.get_method(name),
                                       load=lambda run, which, device, model=model, config=config: (model, config))
             for name, model, config in runs}
    monkeypatch.setattr(methods, "_table", lambda: table)


def posed_ellipsoid_labelmap(affine_lps: np.ndarray, semi_axes_mm: np.ndarray, rotation: np.ndarray,
                             scale: float = 1.0, extent_mm: float = 64.0):
    """A labelmap (:class:`Volume`, uint8) of an ellipsoid of ``semi_axes_mm`` × ``scale``, turned by ``rotation``
    (3, 3), at the centre of a grid ``extent_mm`` wide along each of its axes; and that centre (3,) world LPS mm."""
    from implicitseg.geometry.frames import index_to_world
    from implicitseg.io.images import Volume

    shape = tuple(int(n) for n in np.ceil(extent_mm / np.linalg.norm(affine_lps[:3, :3], axis=0)))
    center = index_to_world(np.array(shape)[None] / 2.0, affine_lps)[0]
    index = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1).reshape(-1, 3)
    local = (index_to_world(index, affine_lps) - center) @ rotation / scale
    inside = np.linalg.norm(local / np.asarray(semi_axes_mm), axis=1) <= 1.0
    return Volume(inside.reshape(shape).astype(np.uint8), affine_lps), center


SMALL_DATASET_AFFINE = affine_from_geometry([40.0, 60.0, -20.0], [1.1, 1.0, 1.5], np.eye(3))
"""Index → world LPS of :func:`write_small_dataset`'s images: far from the z axis, so a mesh read in the wrong
LPS/RAS convention lands far outside them."""
SMALL_DATASET_SHAPE = (40, 44, 30)


def write_small_dataset(root, *, n_cases: int = 2, mesh_suffix: str = ".vtk"):
    """A valid dataset of ``n_cases`` training cases ``c0``, ``c1``, ... (a CT-like sphere, its labelmap and its
    mesh in LPS) and one test image ``t0``, labels 0 and 1; returns the sphere's centre (3,) world LPS mm."""
    import json
    from pathlib import Path

    import trimesh

    from implicitseg.geometry.frames import index_to_world
    from implicitseg.io.images import Volume, write_image
    from implicitseg.io.meshes import Mesh, write_mesh

    root = Path(root)
    center = index_to_world((np.array(SMALL_DATASET_SHAPE)[None] - 1) / 2.0, SMALL_DATASET_AFFINE)[0]
    image = Volume(blurred_sphere_hu(SMALL_DATASET_AFFINE, SMALL_DATASET_SHAPE, center, 10.0), SMALL_DATASET_AFFINE)
    label = Volume(sphere_volume(SMALL_DATASET_AFFINE, SMALL_DATASET_SHAPE, center, 10.0).astype(np.int16),
                   SMALL_DATASET_AFFINE)
    sphere = trimesh.creation.icosphere(subdivisions=3, radius=10.0)
    training = []
    for index in range(n_cases):
        name = f"c{index}"
        entry = {"image": f"imagesTr/{name}.nii.gz", "label": f"labelsTr/{name}.nii.gz",
                 "mesh": f"meshesTr/{name}{mesh_suffix}"}
        write_image(root / entry["image"], image)
        write_image(root / entry["label"], label)
        write_mesh(root / entry["mesh"], Mesh(np.asarray(sphere.vertices) + center, np.asarray(sphere.faces)))
        training.append(entry)
    write_image(root / "imagesTs" / "t0.nii.gz", image)
    (root / "dataset.json").write_text(json.dumps({
        "name": "small", "modality": "CT", "labels": {"0": "background", "1": "sphere"}, "mesh_space": "LPS",
        "training": training, "test": ["imagesTs/t0.nii.gz"]}))
    return center


def damage_small_dataset(root, damage: str, case: str = "c1") -> None:
    """Damage one case of :func:`write_small_dataset` as users' data get damaged: ``truncated image`` (its first
    3,000 bytes), ``label origin 5 mm off``, ``label cropped 10 voxels`` (along k), ``undeclared label value`` (the
    foreground labelled 3 in a 0/1 dataset)."""
    from pathlib import Path

    from implicitseg.geometry.frames import geometry_from_affine
    from implicitseg.io.images import Volume, read_image, write_image

    root = Path(root)
    if damage == "truncated image":
        path = root / "imagesTr" / f"{case}.nii.gz"
        path.write_bytes(path.read_bytes()[:3000])
        return
    path = root / "labelsTr" / f"{case}.nii.gz"
    label = read_image(path, dtype=np.int16)
    if damage == "label origin 5 mm off":
        origin, spacing, direction = geometry_from_affine(label.affine_lps)
        label = Volume(label.array, affine_from_geometry(origin + [5.0, 0.0, 0.0], spacing, direction))
    elif damage == "label cropped 10 voxels":
        label = Volume(label.array[:, :, :-10], label.affine_lps)
    elif damage == "undeclared label value":
        label.array[label.array > 0] = 3
    else:
        raise ValueError(f"unknown damage {damage!r}")
    write_image(path, label)
